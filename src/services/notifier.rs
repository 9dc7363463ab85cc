//! The notifier: a service with no aggregate and no log of its own that
//! tells a customer their order was placed. It reacts to the orders
//! service's `OrderPlaced` through an inbox (`Consumer::inbox`): each
//! message goes to [`order_placed`], once in effect, and nothing is
//! appended to a log.

use std::sync::{Mutex, PoisonError};

use cqrs_core::Uuid;
use cqrs_core::prelude::*;

use super::orders::{OrderEvent, OrderPlaced};

/// The notifier's domain: its app hosts it with
/// `CqrsBuilder::host::<NotifierService>()`, which keeps the orders and
/// shipping domains it links (for their event types) from running there.
#[derive(Domain)]
pub struct NotifierService;

/// A notification the notifier sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    /// The order it is about.
    pub order_id: String,
    /// The message that caused it: the orders service's event id.
    pub event_id: Uuid,
    /// What it says.
    pub text: String,
}

/// Where a real notifier would call its mail provider, this one keeps the
/// notifications of the process.
static SENT: Mutex<Vec<Notification>> = Mutex::new(Vec::new());

/// The notifications sent so far in this process, oldest first.
pub fn sent() -> Vec<Notification> {
    SENT.lock().unwrap_or_else(PoisonError::into_inner).clone()
}

/// Tells the customer their order was placed.
#[event_handler(name = "notifier.order_placed")]
fn order_placed(event: &OrderPlaced, envelope: &Envelope<OrderEvent>) {
    let notification = Notification {
        order_id: envelope.aggregate_id.clone(),
        event_id: envelope.event_id,
        text: format!(
            "your order {} of {} x {} is placed",
            envelope.aggregate_id, event.quantity, event.item
        ),
    };
    println!("notifier: {}", notification.text);
    SENT.lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(notification);
}
