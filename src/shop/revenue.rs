//! Revenue per product and day, in SQL tables of its own: a table
//! projection, which the report endpoint queries in plain SQL.

use cqrs_core::prelude::*;
use cqrs_core::sqlx;
use cqrs_core::view::Connection;

use super::order::OrderPlaced;
use super::payment::{PaymentCaptured, PaymentRefunded};

/// Each order's product and day (`shop_order_lines`), and the orders paid
/// and the revenue per product and day (`shop_revenue`), on SQLite or
/// PostgreSQL. One segment: a payment's handler reads the line its order's
/// placement wrote, which must come first, and one segment applies the log
/// in order (segments apply theirs each at its own pace).
#[derive(Debug, Default)]
pub struct Revenue;

#[projection(
    name = "shop.revenue",
    tables(shop_order_lines, shop_revenue),
    migrations(
        sqlite("src/shop/sql/revenue-v1.sqlite.sql"),
        postgres("src/shop/sql/revenue-v1.postgres.sql"),
    )
)]
impl Revenue {
    #[event_handler]
    async fn placed(
        event: &OrderPlaced,
        envelope: &Envelope,
        tables: &mut Tables<'_>,
    ) -> Result<(), HandlerError> {
        let day = envelope.recorded_at.date_naive().to_string();
        execute(
            tables,
            "INSERT INTO shop_order_lines_v1 (order_id, sku, day) VALUES ($1, $2, $3)",
            &[
                Value::Text(&envelope.aggregate_id),
                Value::Text(&event.sku),
                Value::Text(&day),
            ],
        )
        .await
    }

    /// The payment's id is its order's.
    #[event_handler]
    async fn captured(
        event: &PaymentCaptured,
        envelope: &Envelope,
        tables: &mut Tables<'_>,
    ) -> Result<(), HandlerError> {
        paid(
            tables,
            &envelope.aggregate_id,
            1,
            i64::try_from(event.amount)?,
        )
        .await
    }

    #[event_handler]
    async fn refunded(
        event: &PaymentRefunded,
        envelope: &Envelope,
        tables: &mut Tables<'_>,
    ) -> Result<(), HandlerError> {
        paid(
            tables,
            &envelope.aggregate_id,
            -1,
            -i64::try_from(event.amount)?,
        )
        .await
    }
}

/// Adds `orders` and `amount` to the revenue of the order's product and day.
async fn paid(
    tables: &mut Tables<'_>,
    order_id: &str,
    orders: i64,
    amount: i64,
) -> Result<(), HandlerError> {
    execute(
        tables,
        "INSERT INTO shop_revenue_v1 AS r (sku, day, orders, revenue) \
         SELECT sku, day, $2, $3 FROM shop_order_lines_v1 WHERE order_id = $1 \
         ON CONFLICT (sku, day) DO UPDATE \
         SET orders = r.orders + excluded.orders, revenue = r.revenue + excluded.revenue",
        &[
            Value::Text(order_id),
            Value::Int(orders),
            Value::Int(amount),
        ],
    )
    .await
}

/// A value a statement binds.
enum Value<'a> {
    Text(&'a str),
    Int(i64),
}

/// Runs `sql` on whichever database the tables are in: the statements
/// here are written once for both (`$N` parameters, `INSERT .. AS`,
/// `ON CONFLICT`).
async fn execute(
    tables: &mut Tables<'_>,
    sql: &'static str,
    values: &[Value<'_>],
) -> Result<(), HandlerError> {
    match tables.connection() {
        Connection::Sqlite(db) => {
            let mut query = sqlx::query(sql);
            for value in values {
                query = match *value {
                    Value::Text(text) => query.bind(text),
                    Value::Int(number) => query.bind(number),
                };
            }
            query.execute(&mut **db).await?;
        }
        Connection::Postgres(db) => {
            let mut query = sqlx::query(sql);
            for value in values {
                query = match *value {
                    Value::Text(text) => query.bind(text),
                    Value::Int(number) => query.bind(number),
                };
            }
            query.execute(&mut **db).await?;
        }
        _ => return Err("shop.revenue writes SQLite or PostgreSQL tables".into()),
    }
    Ok(())
}
