//! Rows as the database returns them, checked before they become
//! envelopes, and reads of the log and of one stream built from them.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::envelope::{Envelope, JsonPayload, Metadata};
use crate::store::{ReadLimit, RowLocation, StoreError, weight};

use super::{acquire, stored};
use crate::store::sql::{DriverResult, database_error};

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
        other => database_error(other).into(),
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
    let mut reader = acquire(pool).await.db()?;
    let mut rows = sqlx::query::<DB>(statement)
        .bind(from)
        .bind(i64::try_from(limit.events).unwrap_or(i64::MAX))
        .bind(i64::try_from(limit.bytes).unwrap_or(i64::MAX))
        .fetch(&mut *reader);
    let mut page = LogPage::new(from_position, limit);
    while let Some(found) = next(&mut rows).await {
        if !page.push(row(&found.db()?))? {
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

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::store::sql::following;

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
