//! The table projection a child runs when its read side is in a database
//! of its own: one row per event it applied, keyed by the event's
//! position, so the suite sees an event applied twice (the key refuses it,
//! and the event is parked) or never.

use cqrs_core::prelude::*;
use cqrs_core::sqlx;
use cqrs_core::view::{Connection, SqlPool};

use cqrs_examples::bank::{AccountOpened, MoneyDeposited};

pub const LEDGER: &str = "faults.ledger";

#[derive(Debug, Default)]
pub struct Ledger;

#[projection(
    name = "faults.ledger",
    segments = 4,
    tables(faults_ledger),
    migrations(
        sqlite("tests/faults/sql/ledger.sqlite.sql"),
        postgres("tests/faults/sql/ledger.postgres.sql"),
    )
)]
impl Ledger {
    #[event_handler]
    async fn opened(
        _: &AccountOpened,
        envelope: &Envelope,
        tables: &mut Tables<'_>,
    ) -> Result<(), HandlerError> {
        record(envelope, tables).await
    }

    #[event_handler]
    async fn deposited(
        _: &MoneyDeposited,
        envelope: &Envelope,
        tables: &mut Tables<'_>,
    ) -> Result<(), HandlerError> {
        record(envelope, tables).await
    }
}

async fn record(envelope: &Envelope, tables: &mut Tables<'_>) -> Result<(), HandlerError> {
    const INSERT: &str = "INSERT INTO faults_ledger_v1 (position, account) VALUES ($1, $2)";
    let position = i64::try_from(envelope.position)?;
    let account = envelope.aggregate_id.as_str();
    match tables.connection() {
        Connection::Sqlite(db) => {
            sqlx::query(INSERT)
                .bind(position)
                .bind(account)
                .execute(&mut **db)
                .await?;
        }
        Connection::Postgres(db) => {
            sqlx::query(INSERT)
                .bind(position)
                .bind(account)
                .execute(&mut **db)
                .await?;
        }
        _ => return Err("no SQL database".into()),
    }
    Ok(())
}

/// The positions the ledger holds, in order.
pub async fn positions(views: &ViewStore) -> Result<Vec<u64>, String> {
    const SELECT: &str = "SELECT position FROM faults_ledger ORDER BY position";
    let rows: Vec<(i64,)> = match views.sql() {
        Some(SqlPool::Sqlite(pool)) => sqlx::query_as(SELECT).fetch_all(&pool).await,
        Some(SqlPool::Postgres(pool)) => sqlx::query_as(SELECT).fetch_all(&pool).await,
        _ => return Err("the read side is not in a SQL database".to_owned()),
    }
    .map_err(|error| format!("reading the ledger: {error}"))?;
    Ok(rows
        .into_iter()
        .map(|(position,)| position.unsigned_abs())
        .collect())
}
