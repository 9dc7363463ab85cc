//! The shop's read side: a summary per order across all three aggregates,
//! and the stock level per product.

use chrono::{DateTime, Utc};
use cqrs_core::prelude::*;
use serde::{Deserialize, Serialize};

use super::order::{OrderCancelled, OrderConfirmed, OrderPlaced};
use super::payment::{PaymentCaptured, PaymentDeclined};
use super::stock::{ProductAdded, Restocked, StockReleased, StockReserved, StockShortage};

/// One view per order, from order, stock and payment events; queried by
/// customer (and status), newest first.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize, Indexed)]
#[indexes((customer, placed_at), (customer, status, placed_at))]
pub struct OrderSummary {
    pub customer: String,
    /// When the order was placed (its event's recording time).
    pub placed_at: DateTime<Utc>,
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
                placed_at: envelope.recorded_at,
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

/// One view per product: what is on the shelf, held for open orders,
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
