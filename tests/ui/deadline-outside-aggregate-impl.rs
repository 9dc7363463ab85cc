use cqrs_core::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, Deadline)]
pub struct Expires;

pub struct Hold;

impl Hold {
    #[deadline]
    fn expires(&self, _: Expires) -> Result<(), std::io::Error> {
        Ok(())
    }
}

fn main() {}
