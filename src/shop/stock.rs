//! The stock of one product: reservations for orders, releases, restocks;
//! a shortage is recorded as a fact.

use cqrs_core::prelude::*;
use serde::{Deserialize, Serialize};

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
