//! The order flow of an online shop. Placing an order records `OrderPlaced`;
//! inventory, payment and confirmation each react in their own
//! `#[event_handler]`, by sending the next command:
//!
//! ```text
//! PlaceOrder -> OrderPlaced
//!   reserve_stock:   OrderPlaced     -> ReserveStock   -> StockReserved (or the order is cancelled)
//!   take_payment:    StockReserved   -> ChargeCard     -> PaymentCaptured | PaymentDeclined
//!   confirm_order:   PaymentCaptured -> ConfirmOrder   -> OrderConfirmed
//!   refuse_order:    PaymentDeclined -> ReleaseStock + CancelOrder
//! ```
//!
//! ```text
//! cargo run --example order
//! ```

use std::collections::BTreeMap;
use std::sync::OnceLock;

use cqrs_core::prelude::*;
use serde::{Deserialize, Serialize};

/// The app the event handlers send their commands through.
static APP: OnceLock<Cqrs<MemoryStore>> = OnceLock::new();

fn app() -> Result<&'static Cqrs<MemoryStore>, String> {
    APP.get().ok_or_else(|| "the app is not running".to_owned())
}

// ---------------------------------------------------------------- order

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Line {
    pub sku: String,
    pub quantity: u32,
    pub unit_price: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlaceOrder {
    pub lines: Vec<Line>,
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
    pub lines: Vec<Line>,
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
    #[event(name = "order.placed")]
    Placed(OrderPlaced),
    #[event(name = "order.confirmed")]
    Confirmed(OrderConfirmed),
    #[event(name = "order.cancelled")]
    Cancelled(OrderCancelled),
}

#[derive(Debug, PartialEq, thiserror::Error)]
pub enum OrderError {
    #[error("an order needs at least one line")]
    Empty,
    #[error("the order is already {0}")]
    Closed(&'static str),
}

#[derive(Debug, Default, PartialEq)]
enum OrderStatus {
    #[default]
    Open,
    Confirmed,
    Cancelled,
}

#[derive(Debug, Default, Aggregate)]
#[aggregate(name = "order", command = OrderCommand, event = OrderEvent, error = OrderError)]
pub struct Order {
    status: OrderStatus,
    lines: Vec<Line>,
}

#[aggregate_impl]
impl Order {
    #[command_handler(create)]
    fn place(&self, command: PlaceOrder) -> Result<OrderPlaced, OrderError> {
        if command.lines.is_empty() {
            return Err(OrderError::Empty);
        }
        let total = command
            .lines
            .iter()
            .map(|line| u64::from(line.quantity) * line.unit_price)
            .sum();
        Ok(OrderPlaced {
            lines: command.lines,
            total,
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
        self.lines = event.lines.clone();
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

// ---------------------------------------------------------------- inventory

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OpenWarehouse;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Restock {
    pub sku: String,
    pub quantity: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReserveStock {
    pub order_id: String,
    pub lines: Vec<Line>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReleaseStock {
    pub order_id: String,
}

#[derive(Debug, Clone, Command)]
pub enum WarehouseCommand {
    Open(OpenWarehouse),
    Restock(Restock),
    Reserve(ReserveStock),
    Release(ReleaseStock),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WarehouseOpened;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Restocked {
    pub sku: String,
    pub quantity: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StockReserved {
    pub order_id: String,
    pub lines: Vec<Line>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StockReleased {
    pub order_id: String,
}

#[derive(Debug, Clone, PartialEq, Event)]
pub enum WarehouseEvent {
    #[event(name = "warehouse.opened")]
    Opened(WarehouseOpened),
    #[event(name = "warehouse.restocked")]
    Restocked(Restocked),
    #[event(name = "warehouse.reserved")]
    Reserved(StockReserved),
    #[event(name = "warehouse.released")]
    Released(StockReleased),
}

#[derive(Debug, PartialEq, thiserror::Error)]
pub enum WarehouseError {
    #[error("only {available} of {sku} left, {requested} requested")]
    OutOfStock {
        sku: String,
        available: u32,
        requested: u32,
    },
}

/// One warehouse: what is on the shelves and what each order holds.
#[derive(Debug, Default, Aggregate)]
#[aggregate(name = "warehouse", command = WarehouseCommand, event = WarehouseEvent, error = WarehouseError)]
pub struct Warehouse {
    on_hand: BTreeMap<String, u32>,
    held: BTreeMap<String, Vec<Line>>,
}

#[aggregate_impl]
impl Warehouse {
    #[command_handler(create)]
    fn open(&self, _: OpenWarehouse) -> Result<WarehouseOpened, WarehouseError> {
        Ok(WarehouseOpened)
    }

    #[command_handler]
    fn restock(&self, command: Restock) -> Result<Restocked, WarehouseError> {
        Ok(Restocked {
            sku: command.sku,
            quantity: command.quantity,
        })
    }

    #[command_handler]
    fn reserve(&self, command: ReserveStock) -> Result<StockReserved, WarehouseError> {
        for line in &command.lines {
            let available = self.on_hand.get(&line.sku).copied().unwrap_or(0);
            if available < line.quantity {
                return Err(WarehouseError::OutOfStock {
                    sku: line.sku.clone(),
                    available,
                    requested: line.quantity,
                });
            }
        }
        Ok(StockReserved {
            order_id: command.order_id,
            lines: command.lines,
        })
    }

    #[command_handler]
    fn release(&self, command: ReleaseStock) -> Result<Option<StockReleased>, WarehouseError> {
        Ok(self
            .held
            .contains_key(&command.order_id)
            .then_some(StockReleased {
                order_id: command.order_id,
            }))
    }

    #[apply]
    fn opened(&mut self, _: &WarehouseOpened) {}

    #[apply]
    fn restocked(&mut self, event: &Restocked) {
        *self.on_hand.entry(event.sku.clone()).or_default() += event.quantity;
    }

    #[apply]
    fn reserved(&mut self, event: &StockReserved) {
        for line in &event.lines {
            *self.on_hand.entry(line.sku.clone()).or_default() -= line.quantity;
        }
        self.held
            .insert(event.order_id.clone(), event.lines.clone());
    }

    #[apply]
    fn released(&mut self, event: &StockReleased) {
        for line in self.held.remove(&event.order_id).unwrap_or_default() {
            *self.on_hand.entry(line.sku).or_default() += line.quantity;
        }
    }
}

// ---------------------------------------------------------------- payment

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
    #[event(name = "payment.captured")]
    Captured(PaymentCaptured),
    #[event(name = "payment.declined")]
    Declined(PaymentDeclined),
}

#[derive(Debug, PartialEq, thiserror::Error)]
pub enum PaymentError {}

/// The payment of one order, keyed by the order id.
#[derive(Debug, Default, Aggregate)]
#[aggregate(name = "payment", command = PaymentCommand, event = PaymentEvent, error = PaymentError)]
pub struct Payment;

#[aggregate_impl]
impl Payment {
    /// A declined card is a fact the shop reacts to, not an error.
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

// ---------------------------------------------------------------- the flow

#[event_handler]
async fn reserve_stock(event: &OrderPlaced, envelope: &Envelope<OrderEvent>) -> Result<(), String> {
    let app = app()?;
    let order_id = envelope.aggregate_id.clone();
    let reserve = ReserveStock {
        order_id: order_id.clone(),
        lines: event.lines.clone(),
    };
    match app.execute("main", reserve).await {
        Ok(_) => Ok(()),
        Err(CommandError::Domain(out_of_stock)) => {
            println!("  [inventory] {order_id}: {out_of_stock}");
            let cancel = CancelOrder {
                reason: out_of_stock.to_string(),
            };
            app.execute(&order_id, cancel)
                .await
                .map(drop)
                .map_err(|error| error.to_string())
        }
        Err(error) => Err(error.to_string()),
    }
}

#[event_handler]
async fn take_payment(event: &StockReserved) -> Result<(), String> {
    let app = app()?;
    println!("  [inventory] {}: stock reserved", event.order_id);
    let placed = app
        .store()
        .load("order", &event.order_id, 1)
        .await
        .map_err(|error| error.to_string())?;
    let placed: OrderPlaced = placed
        .first()
        .ok_or("the order has no events")?
        .payload
        .decode()
        .map_err(|error| error.to_string())?;
    let charge = ChargeCard {
        card: placed.card,
        amount: placed.total,
    };
    app.execute(&event.order_id, charge)
        .await
        .map(drop)
        .map_err(|error| error.to_string())
}

#[event_handler]
async fn confirm_order(
    event: &PaymentCaptured,
    envelope: &Envelope<PaymentEvent>,
) -> Result<(), String> {
    println!(
        "  [payment] {}: captured {}",
        envelope.aggregate_id, event.amount
    );
    app()?
        .execute(&envelope.aggregate_id, ConfirmOrder)
        .await
        .map(drop)
        .map_err(|error| error.to_string())
}

#[event_handler]
async fn refuse_order(
    event: &PaymentDeclined,
    envelope: &Envelope<PaymentEvent>,
) -> Result<(), String> {
    let app = app()?;
    let order_id = &envelope.aggregate_id;
    println!("  [payment] {order_id}: {}", event.reason);
    let release = ReleaseStock {
        order_id: order_id.clone(),
    };
    app.execute("main", release)
        .await
        .map_err(|error| error.to_string())?;
    let cancel = CancelOrder {
        reason: event.reason.clone(),
    };
    app.execute(order_id, cancel)
        .await
        .map(drop)
        .map_err(|error| error.to_string())
}

#[event_handler]
fn announce(_: &OrderConfirmed, envelope: &Envelope<OrderEvent>) {
    println!("  [confirmation] {} confirmed", envelope.aggregate_id);
}

#[event_handler]
fn announce_cancellation(event: &OrderCancelled, envelope: &Envelope<OrderEvent>) {
    println!(
        "  [confirmation] {} cancelled: {}",
        envelope.aggregate_id, event.reason
    );
}

fn line(sku: &str, quantity: u32, unit_price: u64) -> Line {
    Line {
        sku: sku.into(),
        quantity,
        unit_price,
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    APP.set(Cqrs::new(MemoryStore::new())?)
        .map_err(|_| "the app is already running")?;
    let app = app()?;
    app.execute("main", OpenWarehouse).await?;
    app.execute(
        "main",
        Restock {
            sku: "mug".into(),
            quantity: 3,
        },
    )
    .await?;
    app.execute(
        "main",
        Restock {
            sku: "tea".into(),
            quantity: 10,
        },
    )
    .await?;

    let orders = [
        (
            "order-1",
            vec![line("mug", 2, 900), line("tea", 1, 450)],
            "4242",
        ),
        ("order-2", vec![line("mug", 2, 900)], "4242"),
        ("order-3", vec![line("tea", 4, 450)], "0000-declined"),
        ("order-4", vec![line("mug", 1, 900)], "4242"),
    ];
    for (id, lines, card) in orders {
        println!("placing {id}");
        let done = app
            .execute(
                id,
                PlaceOrder {
                    lines,
                    card: card.into(),
                },
            )
            .await?;
        for failure in &done.handler_failures {
            println!("  handler failed: {failure}");
        }
    }

    let warehouse: Warehouse = app.load("main").await?;
    println!("on hand: {:?}", warehouse.on_hand);
    for id in ["order-1", "order-2", "order-3", "order-4"] {
        let order: Order = app.load(id).await?;
        println!("{id}: {:?}", order.status);
    }
    Ok(())
}
