use cqrs_core::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, Deadline)]
pub struct Generic<T> {
    pub value: T,
}

fn main() {}
