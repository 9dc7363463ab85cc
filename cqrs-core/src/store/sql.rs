//! What the SQL backends share: the table prefix, schema versioning, what a
//! driver error means, and turning rows into envelopes without trusting them.

use std::fmt;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::error::{DatabaseError, RowLocation, StoreError};
use super::read::{ReadLimit, weight};
use crate::envelope::{Envelope, JsonPayload, Metadata};

/// The prefix of every table (and function) a SQL store creates, so several
/// stores can share one database.
///
/// Lowercase ASCII letters, digits and `_`, starting with a letter, at most 32
/// characters; the default is `cqrs_`. It is the only text a store puts into
/// SQL that the caller chose, which is why it is checked.
///
/// # Examples
///
/// ```
/// use cqrs_core::TablePrefix;
///
/// assert_eq!(TablePrefix::default().as_str(), "cqrs_");
/// assert!(TablePrefix::new("billing_").is_ok());
/// assert!(TablePrefix::new("x; DROP TABLE users").is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TablePrefix(String);

/// A table prefix that is not a safe SQL identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid table prefix `{prefix}`: use lowercase ASCII letters, digits and `_`, starting with a letter, at most 32 characters"
)]
pub struct InvalidTablePrefix {
    /// The rejected prefix.
    pub prefix: String,
}

impl TablePrefix {
    /// Checks `prefix`.
    pub fn new(prefix: impl Into<String>) -> Result<Self, InvalidTablePrefix> {
        let prefix = prefix.into();
        let valid = prefix.len() <= 32
            && prefix.starts_with(|c: char| c.is_ascii_lowercase())
            && prefix
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if valid {
            Ok(Self(prefix))
        } else {
            Err(InvalidTablePrefix { prefix })
        }
    }

    /// The prefix.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A stable number for this prefix, for locks that must be shared by
    /// every process using the same tables (FNV-1a).
    pub(crate) fn lock_key(&self, purpose: &str) -> i64 {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in purpose.bytes().chain(self.0.bytes()) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        i64::from_ne_bytes(hash.to_ne_bytes())
    }

    /// Replaces `{p}` in a SQL template with the prefix.
    pub(crate) fn expand(&self, template: &str) -> String {
        template.replace("{p}", &self.0)
    }
}

impl Default for TablePrefix {
    fn default() -> Self {
        Self("cqrs_".to_owned())
    }
}

impl fmt::Display for TablePrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A schema migration: its version and its SQL, with `{p}` for the prefix.
pub(crate) type Migration = (i64, &'static str);

/// The migrations a schema at version `current` still needs, in order; an
/// error if it is newer than any this build knows.
pub(crate) fn pending(
    migrations: &'static [Migration],
    current: i64,
) -> Result<impl Iterator<Item = Migration>, StoreError> {
    let known = migrations.last().map_or(0, |&(version, _)| version);
    if current > known {
        return Err(StoreError::SchemaTooNew {
            found: current,
            known,
        });
    }
    Ok(migrations
        .iter()
        .copied()
        .filter(move |&(version, _)| version > current))
}

// -------------------------------------------------------------- connections

/// A connection from `pool`, acquired by a task of its own that the caller's
/// cancellation does not reach.
///
/// sqlx 0.9's pool stops lending connections once `acquire` futures are
/// dropped half-way, as a command under a request timeout is: measured
/// here, four tasks that give up after 0.1 to 2.8 ms got 220 connections
/// and then none for seconds, while the same tasks with the acquire shielded
/// got 7,000 in 6 s. A connection the task gets after its caller left goes
/// back to the pool. Outside a tokio runtime the pool is asked directly.
pub(crate) async fn acquire<DB: sqlx::Database>(
    pool: &sqlx::Pool<DB>,
) -> Result<sqlx::pool::PoolConnection<DB>, sqlx::Error> {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return pool.acquire().await;
    };
    let pool = pool.clone();
    runtime
        .spawn(async move { pool.acquire().await })
        .await
        // The task panicked or its runtime is shutting down: worth another try.
        .unwrap_or(Err(sqlx::Error::WorkerCrashed))
}

// ------------------------------------------------------------ driver errors

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        StoreError::Database(database_error(error))
    }
}

impl From<sqlx::Error> for DatabaseError {
    fn from(error: sqlx::Error) -> Self {
        database_error(error)
    }
}

/// A driver error as the public, driver-free type, classified.
pub(crate) fn database_error(error: sqlx::Error) -> DatabaseError {
    let code = match &error {
        sqlx::Error::Database(database) => database.code().map(|code| code.into_owned()),
        _ => None,
    };
    let transient = is_transient(&error);
    DatabaseError::new(Box::new(error), code.as_deref(), transient)
}

/// Which database sent an error code: their codes overlap (a PostgreSQL
/// SQLSTATE such as `25006` is digits too).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dialect {
    Postgres,
    Sqlite,
}

fn dialect(database: &dyn sqlx::error::DatabaseError) -> Option<Dialect> {
    #[cfg(feature = "postgres")]
    if database
        .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
        .is_some()
    {
        return Some(Dialect::Postgres);
    }
    #[cfg(feature = "sqlite")]
    if database
        .try_downcast_ref::<sqlx::sqlite::SqliteError>()
        .is_some()
    {
        return Some(Dialect::Sqlite);
    }
    None
}

/// Whether the same request may succeed later with nothing changed on our
/// side: the connection, the server's state or its resources failed, not the
/// request.
fn is_transient(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(database) => match (dialect(&**database), database.code()) {
            (Some(dialect), Some(code)) => is_transient_code(dialect, &code),
            _ => false,
        },
        _ => false,
    }
}

/// PostgreSQL SQLSTATEs and SQLite result codes that describe the server,
/// the file or the connection rather than the request.
fn is_transient_code(dialect: Dialect, code: &str) -> bool {
    match dialect {
        // The primary result code is the low byte of the extended one.
        Dialect::Sqlite => code.parse::<i32>().is_ok_and(|code| {
            matches!(
                code & 0xff,
                5   // SQLITE_BUSY
                | 6   // SQLITE_LOCKED
                | 7   // SQLITE_NOMEM
                | 8   // SQLITE_READONLY: the file cannot be written, for now
                | 10  // SQLITE_IOERR
                | 13  // SQLITE_FULL
                | 14  // SQLITE_CANTOPEN
                | 15 // SQLITE_PROTOCOL
            )
        }),
        Dialect::Postgres => {
            code.starts_with("08") // connection exception
                || code.starts_with("53") // insufficient resources: disk, memory, connections
                || code.starts_with("57P") // the server is shutting down or starting
                || code.starts_with("58") // system error: I/O
                || matches!(
                    code,
                    "25006" // read-only transaction: a standby, or default_transaction_read_only
                    | "40001" // serialization failure
                    | "40P01" // deadlock
                    | "55P03" // lock not available
                    | "57014" // query cancelled (statement timeout)
                )
        }
    }
}

/// Whether an error that arrived after a request was sent leaves its
/// outcome unknown: the connection broke, or the server ended the session
/// (an error of severity FATAL, such as a shutdown, may follow a commit).
/// An error the server reports at severity ERROR rolled the request back.
pub(crate) fn outcome_unknown(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(database) => {
            dialect(&**database) == Some(Dialect::Postgres)
                && database
                    .code()
                    .is_some_and(|code| code.starts_with("08") || code.starts_with("57P"))
        }
        _ => false,
    }
}

// --------------------------------------------------------------------- rows

/// The column `index` of a row, or `Corrupt` when it holds another type.
pub(crate) fn column<'r, R, T>(
    row: &'r R,
    index: usize,
    at: impl FnOnce() -> RowLocation,
) -> Result<T, StoreError>
where
    R: sqlx::Row,
    T: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    usize: sqlx::ColumnIndex<R>,
{
    row.try_get(index).map_err(|error| match error {
        sqlx::Error::ColumnDecode { source, .. } => StoreError::corrupt(
            at(),
            format!("column {} does not read back: {source}", row_column(index)),
        ),
        other => other.into(),
    })
}

/// The name of column `index` of [`Row`], as the stores select them.
fn row_column(index: usize) -> &'static str {
    const NAMES: [&str; 10] = [
        "position",
        "aggregate_type",
        "aggregate_id",
        "sequence",
        "event_id",
        "event_name",
        "event_version",
        "recorded_at",
        "metadata",
        "payload",
    ];
    NAMES.get(index).copied().unwrap_or("?")
}

/// One stored event as the database returns it, before any of it is trusted.
#[derive(Debug, Clone)]
pub(crate) struct Row {
    pub(crate) position: i64,
    pub(crate) aggregate_type: String,
    pub(crate) aggregate_id: String,
    pub(crate) sequence: i64,
    pub(crate) event_id: Uuid,
    pub(crate) event_name: String,
    pub(crate) event_version: i64,
    pub(crate) recorded_at: DateTime<Utc>,
    pub(crate) metadata: String,
    /// Copied once, from the driver's buffer into the shared text.
    pub(crate) payload: std::sync::Arc<str>,
}

impl Row {
    /// The envelope, if every column holds what the store writes.
    pub(crate) fn into_envelope(self) -> Result<Envelope, StoreError> {
        let position = u64::try_from(self.position).ok().filter(|&p| p > 0);
        let sequence = u64::try_from(self.sequence).ok().filter(|&s| s > 0);
        let at = RowLocation {
            position,
            aggregate_type: Some(self.aggregate_type.clone()),
            aggregate_id: Some(self.aggregate_id.clone()),
            sequence,
        };
        let (Some(position), Some(sequence)) = (position, sequence) else {
            let reason = match position {
                None => format!("position {} is out of range", self.position),
                Some(_) => format!("sequence {} is out of range", self.sequence),
            };
            return Err(StoreError::corrupt(at, reason));
        };
        let event_version = u32::try_from(self.event_version).map_err(|_| {
            StoreError::corrupt(
                at.clone(),
                format!("event version {} is out of range", self.event_version),
            )
        })?;
        let metadata: Metadata = serde_json::from_str(&self.metadata).map_err(|error| {
            StoreError::corrupt(at.clone(), format!("metadata is not valid: {error}"))
        })?;
        Ok(Envelope {
            event_id: self.event_id,
            aggregate_type: self.aggregate_type,
            aggregate_id: self.aggregate_id,
            sequence,
            position,
            event_name: self.event_name,
            event_version,
            recorded_at: self.recorded_at,
            metadata,
            payload: JsonPayload::from_text(self.payload),
        })
    }
}

/// Collects the rows of one read of the global log from `from_position`:
/// stops at the read's limit, and checks that positions are dense and rows
/// valid. A row that breaks either is reported when a read starts at it, and
/// otherwise ends the read before it, so a reader gets every good event
/// before the bad one and then an error naming it.
pub(crate) struct LogPage {
    limit: ReadLimit,
    next: u64,
    bytes: usize,
    events: Vec<Envelope>,
}

impl LogPage {
    pub(crate) fn new(from_position: u64, limit: ReadLimit) -> Self {
        Self {
            limit,
            next: from_position.max(1),
            bytes: 0,
            events: Vec::new(),
        }
    }

    /// Adds a row, as read or as the error of reading it; `false` once the
    /// page is full or the log breaks off.
    pub(crate) fn push(&mut self, row: Result<Row, StoreError>) -> Result<bool, StoreError> {
        if !self.limit.admits(self.events.len(), self.bytes) {
            return Ok(false);
        }
        let row = match row {
            Ok(row) => row,
            // Reported by the read that starts there, with the events before
            // it returned now.
            Err(_) if !self.events.is_empty() => return Ok(false),
            Err(error) => return Err(error),
        };
        let dense = row.position == i64::try_from(self.next).unwrap_or(i64::MAX);
        if !dense && !self.events.is_empty() {
            // Reported by the read that starts there.
            return Ok(false);
        }
        let found = row.position;
        let envelope = match row.into_envelope() {
            Ok(envelope) => envelope,
            // Reported by the read that starts there, with the events before
            // it returned now.
            Err(_) if !self.events.is_empty() => return Ok(false),
            Err(error) => return Err(error),
        };
        if !dense {
            return Err(StoreError::corrupt(
                RowLocation::at_position(self.next),
                format!(
                    "the log has no event at this position; the next row is at position {found}"
                ),
            ));
        }
        self.bytes += weight(&envelope);
        self.events.push(envelope);
        self.next += 1;
        Ok(true)
    }

    pub(crate) fn into_events(self) -> Vec<Envelope> {
        self.events
    }
}

/// The next item of a stream of rows.
pub(crate) async fn next<S>(stream: &mut S) -> Option<S::Item>
where
    S: futures_core::Stream + Unpin,
{
    std::future::poll_fn(|context| std::pin::Pin::new(&mut *stream).poll_next(context)).await
}

/// One read of the global log from `from_position` with `statement`, which
/// takes the first position, the event count and the byte budget: rows are
/// taken one by one into a [`LogPage`], and the read stops when it is full.
pub(crate) async fn read_log<DB>(
    pool: &sqlx::Pool<DB>,
    statement: sqlx::SqlStr,
    from_position: u64,
    limit: ReadLimit,
    row: fn(&DB::Row) -> Result<Row, StoreError>,
) -> Result<Vec<Envelope>, StoreError>
where
    DB: sqlx::Database,
    for<'q> i64: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> <DB as sqlx::Database>::Arguments: sqlx::IntoArguments<DB>,
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
{
    let Some(from) = stored(from_position) else {
        return Ok(Vec::new());
    };
    // From the start, rows at positions below 1 are read too, to be
    // reported rather than never seen.
    let from = if from <= 1 { i64::MIN } else { from };
    let mut reader = acquire(pool).await?;
    let mut rows = sqlx::query::<DB>(statement)
        .bind(from)
        .bind(i64::try_from(limit.events).unwrap_or(i64::MAX))
        .bind(i64::try_from(limit.bytes).unwrap_or(i64::MAX))
        .fetch(&mut *reader);
    let mut page = LogPage::new(from_position, limit);
    while let Some(found) = next(&mut rows).await {
        if !page.push(row(&found?))? {
            break;
        }
    }
    Ok(page.into_events())
}

/// Checks that one stream's rows, read from `from_sequence`, continue without
/// a gap.
pub(crate) fn dense_stream(
    aggregate_type: &str,
    aggregate_id: &str,
    from_sequence: u64,
    rows: Vec<Row>,
) -> Result<Vec<Envelope>, StoreError> {
    let mut events = Vec::with_capacity(rows.len());
    for (expected, row) in (from_sequence.max(1)..).zip(rows) {
        let envelope = row.into_envelope()?;
        if envelope.sequence != expected {
            return Err(StoreError::corrupt(
                RowLocation::in_stream(aggregate_type, aggregate_id, Some(expected)),
                format!(
                    "the stream has no event at this sequence; the next one is at sequence {}",
                    envelope.sequence
                ),
            ));
        }
        events.push(envelope);
    }
    Ok(events)
}

/// A caller's `u64` as the database's signed integer, for a value that
/// cannot exist beyond `i64::MAX`; `None` when it is out of that range.
pub(crate) fn stored(value: u64) -> Option<i64> {
    i64::try_from(value).ok()
}

/// The positions or sequences `first + 1 ..= first + count` of an append, if
/// they fit in the database's integers.
pub(crate) fn following(first: i64, count: usize) -> Option<i64> {
    i64::try_from(count)
        .ok()
        .and_then(|count| first.checked_add(count))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn row(position: i64, sequence: i64, event_version: i64, metadata: String) -> Row {
        Row {
            position,
            aggregate_type: "t".into(),
            aggregate_id: "s".into(),
            sequence,
            event_id: Uuid::nil(),
            event_name: "E".into(),
            event_version,
            recorded_at: DateTime::UNIX_EPOCH,
            metadata,
            payload: "{}".into(),
        }
    }

    /// The codes of both databases, each read as its own: a SQLSTATE made
    /// of digits used to be read as a SQLite result code.
    #[test]
    fn codes_are_classified_by_the_database_that_sent_them() {
        let postgres = |code| is_transient_code(Dialect::Postgres, code);
        let sqlite = |code| is_transient_code(Dialect::Sqlite, code);
        for transient in [
            "25006", "40001", "40P01", "08006", "08000", "53300", "53100", "57P01", "57014",
            "58030",
        ] {
            assert!(postgres(transient), "{transient}");
        }
        for permanent in ["42501", "23505", "22P05", "42P01", "22003"] {
            assert!(!postgres(permanent), "{permanent}");
        }
        for transient in [
            "5", "261", "6", "8", "1032", "10", "266", "3338", "13", "14",
        ] {
            assert!(sqlite(transient), "{transient}");
        }
        for permanent in ["1", "11", "19", "2067", "1555", "26", "18"] {
            assert!(!sqlite(permanent), "{permanent}");
        }
    }

    proptest! {
        /// Any column values give an envelope that holds them or a typed
        /// `Corrupt`; nothing panics.
        #[test]
        fn a_row_reads_back_or_is_corrupt(
            position in any::<i64>(),
            sequence in any::<i64>(),
            event_version in any::<i64>(),
            metadata in prop_oneof![Just("{}".to_owned()), any::<String>()],
        ) {
            match row(position, sequence, event_version, metadata.clone()).into_envelope() {
                Ok(envelope) => {
                    prop_assert!(position > 0 && sequence > 0);
                    prop_assert_eq!(envelope.position as i64, position);
                    prop_assert_eq!(envelope.sequence as i64, sequence);
                    prop_assert_eq!(i64::from(envelope.event_version), event_version);
                    prop_assert!(serde_json::from_str::<Metadata>(&metadata).is_ok());
                }
                Err(StoreError::Corrupt { at, .. }) => {
                    prop_assert!(
                        position <= 0
                            || sequence <= 0
                            || u32::try_from(event_version).is_err()
                            || serde_json::from_str::<Metadata>(&metadata).is_err()
                    );
                    prop_assert_eq!(at.position.is_some(), position > 0);
                }
                Err(other) => prop_assert!(false, "{other:?}"),
            }
        }

        /// A page of the log holds a dense run from its start, or reports
        /// where the log breaks off; it never returns a row out of order.
        #[test]
        fn a_log_page_is_dense_or_an_error(
            from in 0u64..20,
            positions in proptest::collection::vec(-3i64..30, 0..12),
            events in 1usize..8,
        ) {
            let mut page = LogPage::new(from, ReadLimit::events(events));
            let mut outcome = Ok(());
            for &position in &positions {
                match page.push(Ok(row(position, 1, 1, "{}".into()))) {
                    Ok(true) => {}
                    Ok(false) => break,
                    Err(error) => {
                        outcome = Err(error);
                        break;
                    }
                }
            }
            match outcome {
                Ok(()) => {
                    let read = page.into_events();
                    prop_assert!(read.len() <= events);
                    for (envelope, expected) in read.iter().zip(from.max(1)..) {
                        prop_assert_eq!(envelope.position, expected);
                    }
                }
                // A gap names the missing position; a row out of range has none.
                Err(StoreError::Corrupt { at, .. }) => {
                    prop_assert!(at.position.is_none() || at.position == Some(from.max(1)));
                    prop_assert!(page.into_events().is_empty());
                }
                Err(other) => prop_assert!(false, "{other:?}"),
            }
        }

        /// The arithmetic of an append never wraps: the last position or
        /// sequence fits, or the append is refused.
        #[test]
        fn append_arithmetic_never_wraps(first in 0..=i64::MAX, count in any::<usize>()) {
            let exact = i128::from(first) + count as i128;
            match following(first, count) {
                Some(last) => prop_assert_eq!(i128::from(last), exact),
                None => prop_assert!(exact > i128::from(i64::MAX)),
            }
        }

        /// A stream read back is dense from where it was read, or `Corrupt`
        /// at the first missing sequence.
        #[test]
        fn a_stream_is_dense_or_corrupt(
            from in 1u64..5,
            sequences in proptest::collection::vec(-2i64..10, 0..8),
        ) {
            let rows: Vec<Row> = sequences
                .iter()
                .zip(1..)
                .map(|(&sequence, position)| row(position, sequence, 1, "{}".into()))
                .collect();
            match dense_stream("t", "s", from, rows) {
                Ok(events) => {
                    for (envelope, expected) in events.iter().zip(from..) {
                        prop_assert_eq!(envelope.sequence, expected);
                    }
                }
                Err(StoreError::Corrupt { .. }) => {
                    let dense = sequences.iter().zip(from as i64..).all(|(&s, e)| s == e);
                    prop_assert!(!dense);
                }
                Err(other) => prop_assert!(false, "{other:?}"),
            }
        }
    }
}
