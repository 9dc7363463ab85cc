use cqrs_core::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Debug, Default, Serialize, Deserialize, Indexed)]
pub struct DoorRow {
    pub name: String,
}

fn main() {}
