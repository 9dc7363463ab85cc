//! The shop's model: orders, stock per product, and payments, the checkout
//! process manager that ties them together, and two read models.
//!
//! Placing an order reserves stock, takes payment and confirms the order;
//! a shortage cancels it, and a declined card releases the reservation (the
//! compensating command) and cancels it. Every outcome is an event, so the
//! process manager decides from recorded facts and a replay decides alike.

#![allow(dead_code)]

use cqrs_core::prelude::*;
use serde::{Deserialize, Serialize};

// ------------------------------------------------------------------ orders

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlaceOrder {
    pub customer: String,
    pub sku: String,
    pub quantity: u32,
    pub unit_price: u64,
    pub card: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConfirmOrder;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CancelOrder {
    pub reason: String,
}

#[derive(Debug, Clone, Command)]
pub enum OrderCommand {
    Place(PlaceOrder),
    Confirm(ConfirmOrder),
    Cancel(CancelOrder),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderPlaced {
    pub customer: String,
    pub sku: String,
    pub quantity: u32,
    pub total: u64,
    pub card: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderConfirmed;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderCancelled {
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Event)]
pub enum OrderEvent {
    #[event(name = "shop.order.placed")]
    Placed(OrderPlaced),
    #[event(name = "shop.order.confirmed")]
    Confirmed(OrderConfirmed),
    #[event(name = "shop.order.cancelled")]
    Cancelled(OrderCancelled),
}

#[derive(Debug, PartialEq, thiserror::Error)]
pub enum OrderError {
    #[error("an order needs a quantity")]
    NoQuantity,
    #[error("the order is already {0}")]
    Closed(&'static str),
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OrderStatus {
    #[default]
    Open,
    Confirmed,
    Cancelled,
}

#[derive(Debug, Default, Aggregate)]
#[aggregate(name = "shop.order", command = OrderCommand, event = OrderEvent, error = OrderError)]
pub struct Order {
    pub status: OrderStatus,
    pub sku: String,
    pub quantity: u32,
    pub total: u64,
    pub card: String,
}

#[aggregate_impl]
impl Order {
    #[command_handler(create)]
    fn place(&self, command: PlaceOrder) -> Result<OrderPlaced, OrderError> {
        if command.quantity == 0 {
            return Err(OrderError::NoQuantity);
        }
        Ok(OrderPlaced {
            total: u64::from(command.quantity) * command.unit_price,
            customer: command.customer,
            sku: command.sku,
            quantity: command.quantity,
            card: command.card,
        })
    }

    #[command_handler]
    fn confirm(&self, _: ConfirmOrder) -> Result<OrderConfirmed, OrderError> {
        self.still_open()?;
        Ok(OrderConfirmed)
    }

    #[command_handler]
    fn cancel(&self, command: CancelOrder) -> Result<OrderCancelled, OrderError> {
        self.still_open()?;
        Ok(OrderCancelled {
            reason: command.reason,
        })
    }

    fn still_open(&self) -> Result<(), OrderError> {
        match self.status {
            OrderStatus::Open => Ok(()),
            OrderStatus::Confirmed => Err(OrderError::Closed("confirmed")),
            OrderStatus::Cancelled => Err(OrderError::Closed("cancelled")),
        }
    }

    #[apply]
    fn placed(&mut self, event: &OrderPlaced) {
        self.sku = event.sku.clone();
        self.quantity = event.quantity;
        self.total = event.total;
        self.card = event.card.clone();
    }

    #[apply]
    fn confirmed(&mut self, _: &OrderConfirmed) {
        self.status = OrderStatus::Confirmed;
    }

    #[apply]
    fn cancelled(&mut self, _: &OrderCancelled) {
        self.status = OrderStatus::Cancelled;
    }
}

// ------------------------------------------------------------------ stock

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AddProduct {
    pub quantity: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Restock {
    pub quantity: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReserveStock {
    pub order_id: String,
    pub quantity: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReleaseStock {
    pub order_id: String,
}

#[derive(Debug, Clone, Command)]
pub enum StockCommand {
    Add(AddProduct),
    Restock(Restock),
    Reserve(ReserveStock),
    Release(ReleaseStock),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProductAdded {
    pub quantity: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Restocked {
    pub quantity: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StockReserved {
    pub order_id: String,
    pub quantity: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StockShortage {
    pub order_id: String,
    pub requested: u32,
    pub available: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StockReleased {
    pub order_id: String,
    pub quantity: u32,
}

#[derive(Debug, Clone, PartialEq, Event)]
pub enum StockEvent {
    #[event(name = "shop.stock.added")]
    Added(ProductAdded),
    #[event(name = "shop.stock.restocked")]
    Restocked(Restocked),
    #[event(name = "shop.stock.reserved")]
    Reserved(StockReserved),
    #[event(name = "shop.stock.shortage")]
    Shortage(StockShortage),
    #[event(name = "shop.stock.released")]
    Released(StockReleased),
}

#[derive(Debug, PartialEq, thiserror::Error)]
pub enum StockError {}

/// The stock of one product (the aggregate id is the SKU).
#[derive(Debug, Default, Serialize, Deserialize, Aggregate)]
#[aggregate(
    name = "shop.stock",
    command = StockCommand,
    event = StockEvent,
    error = StockError,
    snapshot_every = 200
)]
pub struct Stock {
    pub available: u32,
    /// Order id to reserved quantity.
    pub held: std::collections::BTreeMap<String, u32>,
}

#[aggregate_impl]
impl Stock {
    #[command_handler(create)]
    fn add(&self, command: AddProduct) -> Result<ProductAdded, StockError> {
        Ok(ProductAdded {
            quantity: command.quantity,
        })
    }

    #[command_handler]
    fn restock(&self, command: Restock) -> Result<Restocked, StockError> {
        Ok(Restocked {
            quantity: command.quantity,
        })
    }

    /// A shortage is a fact the checkout reacts to, not an error.
    #[command_handler]
    fn reserve(&self, command: ReserveStock) -> Result<StockEvent, StockError> {
        if command.quantity > self.available {
            return Ok(StockShortage {
                order_id: command.order_id,
                requested: command.quantity,
                available: self.available,
            }
            .into());
        }
        Ok(StockReserved {
            order_id: command.order_id,
            quantity: command.quantity,
        }
        .into())
    }

    #[command_handler]
    fn release(&self, command: ReleaseStock) -> Result<Option<StockReleased>, StockError> {
        Ok(self
            .held
            .get(&command.order_id)
            .map(|&quantity| StockReleased {
                order_id: command.order_id,
                quantity,
            }))
    }

    #[apply]
    fn added(&mut self, event: &ProductAdded) {
        self.available = event.quantity;
    }

    #[apply]
    fn restocked(&mut self, event: &Restocked) {
        self.available += event.quantity;
    }

    #[apply]
    fn reserved(&mut self, event: &StockReserved) {
        self.available -= event.quantity;
        self.held.insert(event.order_id.clone(), event.quantity);
    }

    #[apply]
    fn shortage(&mut self, _: &StockShortage) {}

    #[apply]
    fn released(&mut self, event: &StockReleased) {
        self.available += event.quantity;
        self.held.remove(&event.order_id);
    }
}

// ------------------------------------------------------------------ payments

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChargeCard {
    pub card: String,
    pub amount: u64,
}

#[derive(Debug, Clone, Command)]
pub enum PaymentCommand {
    Charge(ChargeCard),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PaymentCaptured {
    pub amount: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PaymentDeclined {
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Event)]
pub enum PaymentEvent {
    #[event(name = "shop.payment.captured")]
    Captured(PaymentCaptured),
    #[event(name = "shop.payment.declined")]
    Declined(PaymentDeclined),
}

#[derive(Debug, PartialEq, thiserror::Error)]
pub enum PaymentError {}

/// The payment of one order (the aggregate id is the order id).
#[derive(Debug, Default, Aggregate)]
#[aggregate(name = "shop.payment", command = PaymentCommand, event = PaymentEvent, error = PaymentError)]
pub struct Payment;

#[aggregate_impl]
impl Payment {
    /// Cards starting with 0000 are declined: a fact, not an error.
    #[command_handler(create)]
    fn charge(&self, command: ChargeCard) -> Result<PaymentEvent, PaymentError> {
        if command.card.starts_with("0000") {
            return Ok(PaymentDeclined {
                reason: "card declined".into(),
            }
            .into());
        }
        Ok(PaymentCaptured {
            amount: command.amount,
        }
        .into())
    }

    #[apply]
    fn captured(&mut self, _: &PaymentCaptured) {}

    #[apply]
    fn declined(&mut self, _: &PaymentDeclined) {}
}

// ------------------------------------------------------------------ checkout

/// Takes an order from placed to confirmed or cancelled.
#[derive(Debug, Default)]
pub struct Checkout;

#[process_manager(name = "shop.checkout")]
impl Checkout {
    #[event_handler]
    async fn placed(
        &self,
        event: &OrderPlaced,
        envelope: &Envelope,
        context: &ProcessContext<'_>,
    ) -> Result<(), HandlerError> {
        let reserve = ReserveStock {
            order_id: envelope.aggregate_id.clone(),
            quantity: event.quantity,
        };
        context.execute(&event.sku, reserve).await?;
        Ok(())
    }

    #[event_handler]
    async fn reserved(
        &self,
        event: &StockReserved,
        context: &ProcessContext<'_>,
    ) -> Result<(), HandlerError> {
        let order: Order = context.load(&event.order_id).await?;
        let charge = ChargeCard {
            card: order.card,
            amount: order.total,
        };
        context.execute(&event.order_id, charge).await?;
        Ok(())
    }

    #[event_handler]
    async fn shortage(
        &self,
        event: &StockShortage,
        context: &ProcessContext<'_>,
    ) -> Result<(), HandlerError> {
        let cancel = CancelOrder {
            reason: format!(
                "only {} in stock, {} ordered",
                event.available, event.requested
            ),
        };
        context.execute(&event.order_id, cancel).await?;
        Ok(())
    }

    #[event_handler]
    async fn captured(
        &self,
        _: &PaymentCaptured,
        envelope: &Envelope,
        context: &ProcessContext<'_>,
    ) -> Result<(), HandlerError> {
        context
            .execute(&envelope.aggregate_id, ConfirmOrder)
            .await?;
        Ok(())
    }

    /// The compensating step: give the stock back, then cancel.
    #[event_handler]
    async fn declined(
        &self,
        event: &PaymentDeclined,
        envelope: &Envelope,
        context: &ProcessContext<'_>,
    ) -> Result<(), HandlerError> {
        let order_id = &envelope.aggregate_id;
        let order: Order = context.load(order_id).await?;
        let release = ReleaseStock {
            order_id: order_id.clone(),
        };
        context.execute(&order.sku, release).await?;
        let cancel = CancelOrder {
            reason: event.reason.clone(),
        };
        context.execute(order_id, cancel).await?;
        Ok(())
    }
}

// ------------------------------------------------------------------ read models

/// One document per order, from order, stock and payment events.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderSummary {
    pub customer: String,
    pub sku: String,
    pub quantity: u32,
    pub total: u64,
    pub stock: String,
    pub payment: String,
    pub status: String,
    pub reason: Option<String>,
}

#[projection(name = "shop.order_summary")]
impl OrderSummary {
    #[event_handler]
    fn placed(event: &OrderPlaced, envelope: &Envelope, views: &mut Views<'_, Self>) {
        views.insert(
            envelope.aggregate_id.clone(),
            OrderSummary {
                customer: event.customer.clone(),
                sku: event.sku.clone(),
                quantity: event.quantity,
                total: event.total,
                stock: "pending".into(),
                payment: "pending".into(),
                status: "placed".into(),
                reason: None,
            },
        );
    }

    #[event_handler]
    async fn reserved(event: &StockReserved, views: &mut Views<'_, Self>) -> Result<(), ViewError> {
        Self::update(views, &event.order_id, |order| {
            order.stock = "reserved".into()
        })
        .await
    }

    #[event_handler]
    async fn shortage(event: &StockShortage, views: &mut Views<'_, Self>) -> Result<(), ViewError> {
        Self::update(views, &event.order_id, |order| order.stock = "short".into()).await
    }

    #[event_handler]
    async fn released(event: &StockReleased, views: &mut Views<'_, Self>) -> Result<(), ViewError> {
        Self::update(views, &event.order_id, |order| {
            order.stock = "released".into()
        })
        .await
    }

    #[event_handler]
    async fn captured(
        _: &PaymentCaptured,
        envelope: &Envelope,
        views: &mut Views<'_, Self>,
    ) -> Result<(), ViewError> {
        Self::update(views, &envelope.aggregate_id, |order| {
            order.payment = "captured".into()
        })
        .await
    }

    #[event_handler]
    async fn declined(
        _: &PaymentDeclined,
        envelope: &Envelope,
        views: &mut Views<'_, Self>,
    ) -> Result<(), ViewError> {
        Self::update(views, &envelope.aggregate_id, |order| {
            order.payment = "declined".into()
        })
        .await
    }

    #[event_handler]
    async fn confirmed(
        _: &OrderConfirmed,
        envelope: &Envelope,
        views: &mut Views<'_, Self>,
    ) -> Result<(), ViewError> {
        Self::update(views, &envelope.aggregate_id, |order| {
            order.status = "confirmed".into()
        })
        .await
    }

    #[event_handler]
    async fn cancelled(
        event: &OrderCancelled,
        envelope: &Envelope,
        views: &mut Views<'_, Self>,
    ) -> Result<(), ViewError> {
        Self::update(views, &envelope.aggregate_id, |order| {
            order.status = "cancelled".into();
            order.reason = Some(event.reason.clone());
        })
        .await
    }
}

impl OrderSummary {
    /// Changes the summary of `order_id`, if the view has one.
    async fn update(
        views: &mut Views<'_, Self>,
        order_id: &str,
        change: impl FnOnce(&mut Self),
    ) -> Result<(), ViewError> {
        if let Some(order) = views.get_mut(order_id).await? {
            change(order);
        }
        Ok(())
    }
}

/// One document per product: what is on the shelf, held for open orders,
/// and free to sell.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct StockLevel {
    pub on_hand: u32,
    pub reserved: u32,
    pub available: u32,
}

#[projection(name = "shop.stock_level")]
impl StockLevel {
    #[event_handler]
    async fn added(
        event: &ProductAdded,
        envelope: &Envelope,
        views: &mut Views<'_, Self>,
    ) -> Result<(), ViewError> {
        let level = views.get_or_default(&envelope.aggregate_id).await?;
        level.on_hand += event.quantity;
        level.available += event.quantity;
        Ok(())
    }

    #[event_handler]
    async fn restocked(
        event: &Restocked,
        envelope: &Envelope,
        views: &mut Views<'_, Self>,
    ) -> Result<(), ViewError> {
        let level = views.get_or_default(&envelope.aggregate_id).await?;
        level.on_hand += event.quantity;
        level.available += event.quantity;
        Ok(())
    }

    #[event_handler]
    async fn reserved(
        event: &StockReserved,
        envelope: &Envelope,
        views: &mut Views<'_, Self>,
    ) -> Result<(), ViewError> {
        let level = views.get_or_default(&envelope.aggregate_id).await?;
        level.reserved += event.quantity;
        level.available -= event.quantity;
        Ok(())
    }

    #[event_handler]
    async fn released(
        event: &StockReleased,
        envelope: &Envelope,
        views: &mut Views<'_, Self>,
    ) -> Result<(), ViewError> {
        let level = views.get_or_default(&envelope.aggregate_id).await?;
        level.reserved -= event.quantity;
        level.available += event.quantity;
        Ok(())
    }
}
