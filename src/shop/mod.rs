//! An online shop: orders, the stock of each product and payments, the
//! [`Checkout`] process manager that ties them together, two document
//! projections and [`Revenue`], a projection into SQL tables.
//!
//! Placing an order reserves stock, takes payment and confirms the order;
//! a shortage or a declined card cancels it, and so does its own deadline
//! when the payment has not arrived within [`PAYMENT_WINDOW`]; a cancelled
//! order releases its reservation (the compensating command), and a payment
//! captured after the cancel is refunded. Every outcome is an event, so the
//! process manager decides from recorded facts and a replay decides alike.

use cqrs_core::Domain;

mod checkout;
mod order;
mod payment;
mod revenue;
mod stock;
mod views;

pub use checkout::Checkout;
pub use order::{
    CancelOrder, ConfirmOrder, Order, OrderCancelled, OrderCommand, OrderConfirmed, OrderError,
    OrderEvent, OrderPlaced, OrderStatus, PAYMENT_TIMED_OUT, PAYMENT_WINDOW, PaymentDue,
    PlaceOrder,
};
pub use payment::{
    ChargeCard, Payment, PaymentCaptured, PaymentCommand, PaymentDeclined, PaymentError,
    PaymentEvent, PaymentRefunded, RefundPayment,
};
pub use revenue::Revenue;
pub use stock::{
    AddProduct, ProductAdded, ReleaseStock, ReserveStock, Restock, Restocked, Stock, StockCommand,
    StockError, StockEvent, StockReleased, StockReserved, StockShortage,
};
pub use views::{OrderSummary, StockLevel};

/// The shop's domain, this module and its submodules: an app hosts it with
/// `CqrsBuilder::host::<Shop>()`.
#[derive(Domain)]
pub struct Shop;
