//! How much one read of the global log may return, [`ReadLimit`], and what
//! a read of the events a query selects returns, [`Matching`].

use crate::envelope::Envelope;

/// The most one read of the global log returns: at most `events` events,
/// and no further event once those read hold `bytes` of payload and
/// metadata. The first event is always returned, whatever its size, so a
/// reader makes progress; memory then follows the budget, not the count.
///
/// A `usize` converts into a limit of that many events and the default
/// byte budget.
///
/// # Examples
///
/// ```
/// use cqrs_core::store::ReadLimit;
///
/// let limit = ReadLimit::events(500).with_bytes(4 << 20);
/// assert_eq!((limit.events, limit.bytes), (500, 4 << 20));
/// assert_eq!(ReadLimit::from(10).bytes, ReadLimit::DEFAULT_BYTES);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadLimit {
    /// The most events.
    pub events: usize,
    /// The byte budget.
    pub bytes: usize,
}

impl ReadLimit {
    /// The byte budget unless one is given: 16 MiB.
    pub const DEFAULT_BYTES: usize = 16 << 20;

    /// At most `events` events, within the default byte budget.
    pub const fn events(events: usize) -> Self {
        Self {
            events,
            bytes: Self::DEFAULT_BYTES,
        }
    }

    /// The same limit with a byte budget of `bytes`.
    pub const fn with_bytes(self, bytes: usize) -> Self {
        Self { bytes, ..self }
    }

    /// Whether a read that holds `taken` events of `bytes` in all takes
    /// another.
    pub(crate) fn admits(&self, taken: usize, bytes: usize) -> bool {
        taken < self.events && (taken == 0 || bytes < self.bytes)
    }
}

impl From<usize> for ReadLimit {
    fn from(events: usize) -> Self {
        Self::events(events)
    }
}

/// What an envelope weighs against a byte budget: its payload, its id and
/// its metadata's values, the parts that grow with the user's data.
pub(crate) fn weight(envelope: &Envelope) -> usize {
    let metadata: usize = envelope
        .metadata
        .values
        .iter()
        .map(|(key, value)| key.len() + value.len())
        .sum();
    envelope.payload.as_str().len() + envelope.aggregate_id.len() + metadata
}

/// The events a query selected, in log order, and the log's head when they
/// were read: nothing the query selects is recorded at a position up to
/// `head` that is not among `events`. The head is the `after` of the
/// [`AppendCondition`](crate::boundary::AppendCondition) of a decision made
/// on them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Matching {
    /// The selected events, by position.
    pub events: Vec<Envelope>,
    /// The last position of the log when they were read.
    pub head: u64,
}
