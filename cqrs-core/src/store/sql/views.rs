//! The read side's statements for both SQL dialects, one text for both
//! (PostgreSQL takes `$N` where SQLite takes `?N`), and the decoding of
//! their rows. Times are milliseconds since the Unix epoch from the nodes'
//! clocks, as Axon's token claims are: the nodes' clocks must agree to well
//! within a lease.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{AssertSqlSafe, SqlSafeStr, SqlStr};
use uuid::Uuid;

use super::{Dialect, TablePrefix, checkpoint_of};
use crate::view::ViewError;
use crate::view::{Claim, ParkState, ParkedEvent, SegmentState, Settled};

/// The statements of the views, segments, parked events and versions.
#[derive(Debug, Clone)]
pub(crate) struct ViewStatements {
    pub(crate) insert_segment: SqlStr,
    pub(crate) delete_segments: SqlStr,
    pub(crate) segments: SqlStr,
    pub(crate) processors: SqlStr,
    pub(crate) heartbeat: SqlStr,
    pub(crate) live_nodes: SqlStr,
    pub(crate) forget_nodes: SqlStr,
    pub(crate) claim: SqlStr,
    pub(crate) renew: SqlStr,
    pub(crate) release: SqlStr,
    pub(crate) leave: SqlStr,
    pub(crate) leave_node: SqlStr,
    pub(crate) checkpoint: SqlStr,
    /// The position under a current claim; PostgreSQL locks the row.
    pub(crate) fence: SqlStr,
    /// The position under a current claim, without a lock.
    pub(crate) token: SqlStr,
    pub(crate) advance: SqlStr,
    pub(crate) save_checkpoint: SqlStr,
    pub(crate) reset: SqlStr,
    pub(crate) clear_views: SqlStr,
    pub(crate) clear_parked: SqlStr,
    pub(crate) parked: SqlStr,
    pub(crate) parked_one: SqlStr,
    pub(crate) retry_stream: SqlStr,
    pub(crate) skip: SqlStr,
    pub(crate) park: SqlStr,
    pub(crate) settle_handled: SqlStr,
    pub(crate) settle_failed: SqlStr,
    pub(crate) settle_waiting: SqlStr,
    pub(crate) serving: SqlStr,
    pub(crate) adopt: SqlStr,
    pub(crate) switch: SqlStr,
    pub(crate) forget_processor: SqlStr,
    /// Records the log the read side follows, the first time.
    pub(crate) follow_log: SqlStr,
    /// The log the read side follows.
    pub(crate) followed_log: SqlStr,
    pub(crate) load: SqlStr,
    /// The keys of one view of a version (the first found, no scan), to
    /// tell how its views were indexed.
    pub(crate) sample_keys: SqlStr,
    pub(crate) view: SqlStr,
    pub(crate) views: SqlStr,
    /// Which of a JSON array of message ids an inbox holds.
    pub(crate) received: SqlStr,
    /// Adds a JSON array of message ids to an inbox.
    pub(crate) receive: SqlStr,
}

impl ViewStatements {
    pub(crate) fn new(prefix: &TablePrefix, dialect: Dialect) -> Self {
        let sql = |template: &str| {
            let text = prefix.expand(template);
            let text = match dialect {
                Dialect::Sqlite => text
                    .replace("::TEXT", "")
                    .replace("::JSONB", "")
                    .replace(" FOR UPDATE SKIP LOCKED", "")
                    .replace(" FOR UPDATE", ""),
                Dialect::Postgres => text.replace('?', "$"),
            };
            AssertSqlSafe(text).into_sql_str()
        };
        // The elements of the JSON array of message ids bound as ?2.
        let ids = match dialect {
            Dialect::Sqlite => "SELECT value AS id FROM json_each(?2)",
            Dialect::Postgres => "SELECT jsonb_array_elements_text(?2::JSONB) AS id",
        };
        const PARKED_COLUMNS: &str = "processor, segment, position, event_id, aggregate_type, \
             aggregate_id, event_name, error, attempts, parked_at, state, decided_at, message";
        Self {
            insert_segment: sql(
                "INSERT INTO {p}segments (processor, segment, segments, position, token) \
                 VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (processor, segment) DO NOTHING",
            ),
            delete_segments: sql("DELETE FROM {p}segments WHERE processor = ?1"),
            segments: sql(
                "SELECT s.segment, s.segments, s.position, s.owner, s.token, s.lease_until, \
                 (SELECT COUNT(*) FROM {p}parked_events e WHERE e.processor = s.processor \
                  AND e.segment = s.segment AND e.state IN ('parked', 'retrying')), \
                 (SELECT COUNT(*) FROM {p}parked_events e WHERE e.processor = s.processor \
                  AND e.segment = s.segment AND e.state = 'retrying') \
                 FROM {p}segments s WHERE s.processor = ?1 ORDER BY s.segment",
            ),
            processors: sql("SELECT DISTINCT processor FROM {p}segments"),
            heartbeat: sql(
                "INSERT INTO {p}nodes (processor, node, lease_until) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (processor, node) DO UPDATE SET lease_until = excluded.lease_until",
            ),
            live_nodes: sql(
                "SELECT node FROM {p}nodes WHERE processor = ?1 AND lease_until > ?2 ORDER BY node",
            ),
            forget_nodes: sql("DELETE FROM {p}nodes WHERE processor = ?1 AND lease_until < ?2"),
            // A row a paused batch still locks is passed over, not waited
            // for: the claim is tried again at the next renewal.
            claim: sql(
                "UPDATE {p}segments SET owner = ?3, token = token + 1, lease_until = ?4 \
                 WHERE processor = ?1 AND segment IN (SELECT segment FROM {p}segments \
                 WHERE processor = ?1 AND segment = ?2 AND (owner IS NULL OR lease_until <= ?5) \
                 FOR UPDATE SKIP LOCKED) RETURNING token",
            ),
            renew: sql(
                "UPDATE {p}segments SET lease_until = ?3 WHERE processor = ?1 AND owner = ?2 \
                 RETURNING segment, token",
            ),
            release: sql("UPDATE {p}segments SET owner = NULL, lease_until = 0 \
                 WHERE processor = ?1 AND segment = ?2 AND token = ?3"),
            leave: sql(
                "UPDATE {p}segments SET owner = NULL, lease_until = 0 WHERE processor = ?1 AND owner = ?2",
            ),
            leave_node: sql("DELETE FROM {p}nodes WHERE processor = ?1 AND node = ?2"),
            checkpoint: sql(
                "SELECT position FROM {p}segments WHERE processor = ?1 AND segment = ?2",
            ),
            fence: sql(
                "SELECT position FROM {p}segments WHERE processor = ?1 AND segment = ?2 AND token = ?3 FOR UPDATE",
            ),
            token: sql(
                "SELECT position FROM {p}segments WHERE processor = ?1 AND segment = ?2 AND token = ?3",
            ),
            advance: sql("UPDATE {p}segments SET position = ?5 \
                 WHERE processor = ?1 AND segment = ?2 AND token = ?3 AND position = ?4"),
            save_checkpoint: sql(
                "UPDATE {p}segments SET position = ?4 WHERE processor = ?1 AND segment = ?2 AND token = ?3",
            ),
            reset: sql("UPDATE {p}segments SET position = ?2 WHERE processor = ?1"),
            clear_views: sql("DELETE FROM {p}views WHERE projection = ?1"),
            clear_parked: sql("DELETE FROM {p}parked_events WHERE processor = ?1"),
            parked: sql(&format!(
                "SELECT {PARKED_COLUMNS} FROM {{p}}parked_events WHERE processor = ?1 ORDER BY position"
            )),
            parked_one: sql(&format!(
                "SELECT {PARKED_COLUMNS} FROM {{p}}parked_events WHERE processor = ?1 AND position = ?2"
            )),
            retry_stream: sql(
                "UPDATE {p}parked_events SET state = 'retrying', decided_at = ?4 \
                 WHERE processor = ?1 AND aggregate_type = ?2 AND aggregate_id = ?3 AND state = 'parked'",
            ),
            skip: sql(
                "UPDATE {p}parked_events SET state = 'skipped', decided_at = ?3 \
                 WHERE processor = ?1 AND position = ?2 AND state = 'parked'",
            ),
            park: sql(&format!(
                "INSERT INTO {{p}}parked_events ({PARKED_COLUMNS}) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13) \
                 ON CONFLICT (processor, position) DO NOTHING"
            )),
            settle_handled: sql(
                "UPDATE {p}parked_events SET state = 'retried', attempts = attempts + 1 \
                 WHERE processor = ?1 AND position = ?2",
            ),
            settle_failed: sql(
                "UPDATE {p}parked_events SET state = 'parked', error = ?3, attempts = attempts + 1 \
                 WHERE processor = ?1 AND position = ?2",
            ),
            settle_waiting: sql(
                "UPDATE {p}parked_events SET state = 'parked' WHERE processor = ?1 AND position = ?2",
            ),
            forget_processor: sql("DELETE FROM {p}nodes WHERE processor = ?1"),
            follow_log: sql(
                "INSERT INTO {p}read_side (id, log_id) VALUES (1, ?1) ON CONFLICT (id) DO NOTHING",
            ),
            followed_log: sql("SELECT log_id FROM {p}read_side WHERE id = 1"),
            serving: sql("SELECT serving FROM {p}projections WHERE name = ?1"),
            adopt: sql(
                "INSERT INTO {p}projections (name, serving) VALUES (?1, ?2) ON CONFLICT (name) DO NOTHING",
            ),
            switch: sql("UPDATE {p}projections SET serving = ?3 WHERE name = ?1 AND serving = ?2"),
            load: sql(
                "SELECT state::TEXT, revision FROM {p}views WHERE projection = ?1 AND view_id = ?2",
            ),
            sample_keys: sql(
                "SELECT COALESCE(keys::TEXT, 'null') FROM {p}views WHERE projection = ?1 LIMIT 1",
            ),
            view: sql("SELECT state::TEXT FROM {p}views WHERE projection = \
                 COALESCE((SELECT serving FROM {p}projections WHERE name = ?1), ?1) AND view_id = ?2"),
            views: sql(
                "SELECT view_id, state::TEXT FROM {p}views WHERE projection = \
                 COALESCE((SELECT serving FROM {p}projections WHERE name = ?1), ?1) ORDER BY view_id",
            ),
            received: sql(&format!(
                "SELECT message_id FROM {{p}}inbox WHERE consumer = ?1 AND message_id IN ({ids})"
            )),
            receive: sql(&format!(
                "INSERT INTO {{p}}inbox (consumer, message_id, handled_at) \
                 SELECT ?1, m.id, ?3 FROM ({ids}) m WHERE true \
                 ON CONFLICT (consumer, message_id) DO NOTHING"
            )),
        }
    }
}

/// Now, as the segments' and parked events' columns keep it.
pub(crate) fn now_millis() -> i64 {
    Utc::now().timestamp_millis()
}

/// A duration in the columns' milliseconds.
pub(crate) fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// `lease` from now.
pub(crate) fn lease_until(lease: Duration) -> i64 {
    now_millis().saturating_add(millis(lease))
}

/// A segment row: index, count, position, owner, token, lease end, parked,
/// retrying.
pub(crate) type SegmentRow = (i64, i64, i64, Option<String>, i64, i64, i64, i64);

pub(crate) fn segment_state(processor: &str, row: SegmentRow) -> Result<SegmentState, ViewError> {
    let (segment, segments, position, owner, token, lease_until, parked, retrying) = row;
    let number = |value: i64, what: &str| {
        u32::try_from(value)
            .map_err(|_| corrupt(processor, format!("{what} {value} is out of range")))
    };
    let count = |value: i64| u64::try_from(value).unwrap_or(0);
    let mut state = SegmentState {
        segment: number(segment, "segment")?,
        segments: number(segments, "segment count")?,
        position: checkpoint_of(processor, Some(position))?,
        owner,
        token: u64::try_from(token)
            .map_err(|_| corrupt(processor, format!("token {token} is negative")))?,
        expired: lease_until <= now_millis(),
        parked: count(parked),
        retrying: count(retrying),
    };
    if state.owner.is_none() {
        state.expired = true;
    }
    Ok(state)
}

/// A parked event's row, in the order of `ViewStatements::parked`.
pub(crate) type ParkedRow = (
    String,
    i64,
    i64,
    String,
    String,
    String,
    String,
    Option<String>,
    i64,
    i64,
    String,
    Option<i64>,
    Option<String>,
);

pub(crate) fn parked_event(row: ParkedRow) -> Result<ParkedEvent, ViewError> {
    let (
        processor,
        segment,
        position,
        event_id,
        aggregate_type,
        aggregate_id,
        event_name,
        error,
        attempts,
        parked_at,
        state,
        decided_at,
        message,
    ) = row;
    let bad = |reason: String| corrupt(&processor, reason);
    let time = |millis: i64| {
        DateTime::<Utc>::from_timestamp_millis(millis)
            .ok_or_else(|| bad(format!("parked event time {millis} is out of range")))
    };
    Ok(ParkedEvent {
        segment: u32::try_from(segment)
            .map_err(|_| bad(format!("segment {segment} is out of range")))?,
        position: checkpoint_of(&processor, Some(position))?,
        event_id: Uuid::parse_str(&event_id)
            .map_err(|_| bad(format!("event id `{event_id}` is not a UUID")))?,
        aggregate_type,
        aggregate_id,
        event_name,
        error,
        attempts: u32::try_from(attempts).unwrap_or(0),
        parked_at: time(parked_at)?,
        state: ParkState::parse(&state)
            .ok_or_else(|| bad(format!("parked event state `{state}` is unknown")))?,
        decided_at: decided_at.map(time).transpose()?,
        message,
        processor,
    })
}

/// The statement that records how a retry came out, and the error it binds.
pub(crate) fn settle_statement(
    sql: &ViewStatements,
    outcome: &Settled,
) -> (SqlStr, Option<String>) {
    match outcome {
        Settled::Handled => (sql.settle_handled.clone(), None),
        Settled::Failed(error) => (sql.settle_failed.clone(), Some(error.clone())),
        Settled::Waiting => (sql.settle_waiting.clone(), None),
    }
}

/// Message ids as the JSON array the inbox statements take.
pub(crate) fn id_list(ids: &[Uuid]) -> String {
    let ids: Vec<String> = ids.iter().map(Uuid::to_string).collect();
    serde_json::Value::from(ids).to_string()
}

pub(crate) fn corrupt(processor: &str, reason: String) -> ViewError {
    ViewError::Corrupt {
        processor: processor.to_owned(),
        reason,
    }
}

/// A claim from its stored token.
pub(crate) fn claim_of(processor: &str, segment: u32, token: i64) -> Result<Claim, ViewError> {
    let token = u64::try_from(token)
        .map_err(|_| corrupt(processor, format!("token {token} is negative")))?;
    Ok(Claim { segment, token })
}
