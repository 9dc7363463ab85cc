use cqrs_core::prelude::*;

#[derive(Domain)]
pub struct Billing {
    pub name: String,
}

#[derive(Domain)]
pub struct Shipping<T>(T);

fn main() {}
