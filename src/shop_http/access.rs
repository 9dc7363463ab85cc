//! The shop's command layers: who may send what, and what no one may send.
//! They run before every command of the service's app, those of the
//! checkout process manager included, which carry the user of the request
//! that placed the order.

use cqrs_core::middleware::{CommandRequest, Rejection};

use crate::shop::OrderCommand;

/// The metadata key of the user who sent the command.
pub const USER: &str = "user";

/// The user allowed to manage stock.
pub const ADMIN: &str = "admin";

/// Every command needs a user; only the admin adds and restocks products.
pub fn authorize(request: &mut CommandRequest<'_>) -> Result<(), Rejection> {
    let Some(user) = request.metadata().values.get(USER) else {
        return Err(Rejection::Unauthenticated(
            "send `Authorization: Bearer <user>`".into(),
        ));
    };
    match request.command_name() {
        "AddProduct" | "Restock" if user != ADMIN => Err(Rejection::Forbidden(format!(
            "only {ADMIN} manages stock, not {user}"
        ))),
        _ => Ok(()),
    }
}

/// An order with no price is a mistake, whoever places it.
pub fn validate(request: &mut CommandRequest<'_>) -> Result<(), Rejection> {
    match request.command::<OrderCommand>() {
        Some(OrderCommand::Place(place)) if place.unit_price == 0 => {
            Err(Rejection::Invalid("an order needs a unit price".into()))
        }
        _ => Ok(()),
    }
}
