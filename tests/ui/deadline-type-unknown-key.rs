use cqrs_core::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, Deadline)]
#[deadline_type(nam = "hold.expires")]
pub struct Expires;

fn main() {}
