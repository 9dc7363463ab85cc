//! What the tests of several nodes run: `Trail`, a projection in segments
//! that records, per account stream, how many of its events it applied and
//! how many arrived out of sequence, so an event lost or applied twice
//! shows; `Bonus`, a process manager in segments that pays every new
//! account one bonus, so a command sent twice shows; and `Versioned` in
//! two versions, so a query shows which one built the view it read.
//! (Shared with `tests/test_scale_out.rs`, which runs the nodes in one
//! process; each uses part of it.)

#![allow(dead_code)]

use std::sync::Mutex;

use cqrs_core::prelude::*;
use cqrs_examples::bank::{AccountOpened, DepositMoney, MoneyDeposited};
use serde::{Deserialize, Serialize};

pub const TRAIL: &str = "scale.trail";
pub const BONUS: &str = "scale.bonus";
pub const VERSIONED: &str = "scale.versioned";

/// One view per account stream, in 4 segments (a builder's `segments`
/// changes that): how many of its events were applied, the last sequence,
/// and how many arrived out of sequence (twice, or after a gap).
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trail {
    pub events: u64,
    pub last_sequence: u64,
    pub out_of_order: u64,
}

#[projection(name = "scale.trail", segments = 4)]
impl Trail {
    #[event_handler]
    async fn opened(
        _: &AccountOpened,
        envelope: &Envelope,
        views: &mut Views<'_, Self>,
    ) -> Result<(), ViewError> {
        Self::record(envelope, views).await
    }

    #[event_handler]
    async fn deposited(
        event: &MoneyDeposited,
        envelope: &Envelope,
        views: &mut Views<'_, Self>,
    ) -> Result<(), HandlerError> {
        if event.amount == 13 && POISONED.lock().unwrap().contains(&envelope.aggregate_id) {
            return Err(format!("13 is unlucky for {}", envelope.aggregate_id).into());
        }
        pause_this_thread();
        slow_down();
        Ok(Self::record(envelope, views).await?)
    }
}

impl Trail {
    async fn record(envelope: &Envelope, views: &mut Views<'_, Self>) -> Result<(), ViewError> {
        let trail = views.get_or_default(&envelope.aggregate_id).await?;
        if envelope.sequence != trail.last_sequence + 1 {
            trail.out_of_order += 1;
        }
        trail.events += 1;
        trail.last_sequence = trail.last_sequence.max(envelope.sequence);
        Ok(())
    }

    /// What a correct trail of a stream of `events` events holds.
    pub fn of(events: u64) -> Self {
        Trail {
            events,
            last_sequence: events,
            out_of_order: 0,
        }
    }
}

/// Accounts whose deposits of 13 fail in `Trail`.
pub static POISONED: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// How long `Trail` takes per deposit, as a handler that calls out would
/// (microseconds, blocking its thread; 0 by default).
pub static DEPOSIT_MICROS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn slow_down() {
    let micros = DEPOSIT_MICROS.load(std::sync::atomic::Ordering::Relaxed);
    if micros > 0 {
        std::thread::sleep(std::time::Duration::from_micros(micros));
    }
}

std::thread_local! {
    /// Set on the thread of a node a test pauses: its next deposit blocks
    /// the whole thread, as SIGSTOP would the process.
    pub static PAUSE: std::cell::RefCell<Option<std::sync::mpsc::Receiver<()>>> =
        const { std::cell::RefCell::new(None) };
}

fn pause_this_thread() {
    if let Some(resume) = PAUSE.with(|pause| pause.borrow_mut().take()) {
        let _ = resume.recv();
    }
}

/// Pays every new account a bonus of 10, from 4 segments.
#[derive(Debug, Default)]
pub struct Bonus;

#[process_manager(name = "scale.bonus", segments = 4)]
impl Bonus {
    #[event_handler]
    async fn opened(
        &self,
        _: &AccountOpened,
        envelope: &Envelope,
        context: &ProcessContext<'_>,
    ) -> Result<(), HandlerError> {
        context
            .execute(&envelope.aggregate_id, DepositMoney { amount: 10 })
            .await?;
        Ok(())
    }
}

/// Every account's trail matches its stream, event for event, and with
/// `bonus` it got exactly one bonus (the one event a command caused).
pub async fn check_trails(app: &Cqrs, accounts: &[String], bonus: bool) {
    for id in accounts {
        let stream = app.read_stream("account", id, 1).await.unwrap();
        let trail: Trail = app.views().get(id).await.unwrap().unwrap();
        assert_eq!(
            trail,
            Trail::of(stream.len() as u64),
            "{id}: each event once, in order"
        );
        if bonus {
            let bonuses = stream
                .iter()
                .filter(|event| event.metadata.causation_id.is_some())
                .count();
            assert_eq!(bonuses, 1, "{id}: one bonus");
        }
    }
}

/// Two versions of one projection, as a deployment that changes it has
/// them: one view per account, saying which version built it.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Versioned {
    pub events: u64,
    pub built_by: u32,
}

#[projection(name = "scale.versioned")]
impl Versioned {
    #[event_handler]
    async fn deposited(
        _: &MoneyDeposited,
        envelope: &Envelope,
        views: &mut Views<'_, Self>,
    ) -> Result<(), ViewError> {
        let view = views.get_or_default(&envelope.aggregate_id).await?;
        view.events += 1;
        view.built_by = 1;
        Ok(())
    }
}

/// Version 2 of `Versioned`: views of the same shape (a newtype is its
/// inner value in JSON), built by other code, in 2 segments.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct VersionedV2(Versioned);

#[projection(name = "scale.versioned", version = 2, segments = 2)]
impl VersionedV2 {
    #[event_handler]
    async fn deposited(
        _: &MoneyDeposited,
        envelope: &Envelope,
        views: &mut Views<'_, Self>,
    ) -> Result<(), ViewError> {
        let view = views.get_or_default(&envelope.aggregate_id).await?;
        view.0.events += 1;
        view.0.built_by = 2;
        Ok(())
    }
}

pub const TRAIL_TABLE: &str = "scale.trail_table";

/// `Trail` as a table projection on PostgreSQL: a row per account stream
/// in `scale_trail`, and a row per event applied in `scale_trail_events`,
/// whose key refuses an event applied twice; in 16 segments.
#[derive(Debug, Default)]
pub struct TrailTable;

#[projection(
    name = "scale.trail_table",
    segments = 16,
    tables(scale_trail, scale_trail_events),
    migrations(postgres("tests/scale_out/sql/trail-v1.postgres.sql"))
)]
impl TrailTable {
    #[event_handler]
    async fn opened(
        _: &AccountOpened,
        envelope: &Envelope,
        tables: &mut Tables<'_>,
    ) -> Result<(), HandlerError> {
        record_row(envelope, tables).await
    }

    #[event_handler]
    async fn deposited(
        _: &MoneyDeposited,
        envelope: &Envelope,
        tables: &mut Tables<'_>,
    ) -> Result<(), HandlerError> {
        record_row(envelope, tables).await
    }
}

/// Version 2 of `TrailTable`: the same rows, built by version 2.
#[derive(Debug, Default)]
pub struct TrailTableV2;

#[projection(
    name = "scale.trail_table",
    version = 2,
    segments = 16,
    tables(scale_trail, scale_trail_events),
    migrations(postgres("tests/scale_out/sql/trail-v2.postgres.sql"))
)]
impl TrailTableV2 {
    #[event_handler]
    async fn opened(
        _: &AccountOpened,
        envelope: &Envelope,
        tables: &mut Tables<'_>,
    ) -> Result<(), HandlerError> {
        record_row(envelope, tables).await
    }

    #[event_handler]
    async fn deposited(
        _: &MoneyDeposited,
        envelope: &Envelope,
        tables: &mut Tables<'_>,
    ) -> Result<(), HandlerError> {
        record_row(envelope, tables).await
    }
}

/// Adds the event to its stream's row in the version's tables.
async fn record_row(envelope: &Envelope, tables: &mut Tables<'_>) -> Result<(), HandlerError> {
    let (trail, events) = (
        tables.table("scale_trail"),
        tables.table("scale_trail_events"),
    );
    let version = i64::from(tables.version());
    let db = tables.postgres()?;
    let position = i64::try_from(envelope.position)?;
    let sequence = i64::try_from(envelope.sequence)?;
    let insert = format!("INSERT INTO {events} (position) VALUES ($1)");
    cqrs_core::sqlx::query(cqrs_core::sqlx::AssertSqlSafe(insert))
        .bind(position)
        .execute(&mut *db)
        .await?;
    let upsert = format!(
        "INSERT INTO {trail} AS t (account, events, last_sequence, out_of_order, built_by) \
         VALUES ($1, 1, $2, CASE WHEN $2 = 1 THEN 0 ELSE 1 END, $3) \
         ON CONFLICT (account) DO UPDATE SET events = t.events + 1, \
         last_sequence = GREATEST(t.last_sequence, excluded.last_sequence), \
         out_of_order = t.out_of_order + CASE WHEN excluded.last_sequence = t.last_sequence + 1 THEN 0 ELSE 1 END"
    );
    cqrs_core::sqlx::query(cqrs_core::sqlx::AssertSqlSafe(upsert))
        .bind(&envelope.aggregate_id)
        .bind(sequence)
        .bind(version)
        .execute(&mut *db)
        .await?;
    Ok(())
}
