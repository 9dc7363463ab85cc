//! The segments of a processor as a views backend keeps them: a claim on
//! one, its stored state, and when a new segment count may replace the
//! stored one. The processor runtime drives them; the backends store them.

use super::ViewError;

/// A segment this node owns: its index and the fencing token of the claim.
/// A batch commits only while its token is the segment's current one, so an
/// owner that was paused past its lease cannot write after another took
/// over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Claim {
    /// The segment's index, from 0.
    pub segment: u32,
    /// The fencing token: one more at every claim of the segment.
    pub token: u64,
}

/// One segment of a processor as its backend keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SegmentState {
    /// The segment's index, from 0.
    pub segment: u32,
    /// How many segments the processor has.
    pub segments: u32,
    /// The position the segment has processed up to.
    pub position: u64,
    /// The node that holds its lease, if any (also after the lease expired,
    /// until someone else claims it).
    pub owner: Option<String>,
    /// The current fencing token.
    pub token: u64,
    /// Whether the lease has run out, so any node may claim the segment.
    pub expired: bool,
    /// Events parked in the segment, waiting for a retry or a skip.
    pub parked: u64,
    /// Parked events asked to be retried, not yet retried.
    pub retrying: u64,
}

impl SegmentState {
    /// A segment no node holds a live lease on.
    pub fn is_free(&self) -> bool {
        self.owner.is_none() || self.expired
    }
}

/// The position new segments start at when `prepare` must (re)create them,
/// or `None` when the stored ones fit. Another count is taken only with
/// `resegment` (events handled twice are harmless to process managers and
/// handlers), or when every segment is at one position (nothing would be
/// handled twice), and never while a node holds a live lease.
pub(crate) fn resegment_from(
    processor: &str,
    stored: &[SegmentState],
    segments: u32,
    resegment: bool,
) -> Result<Option<u64>, ViewError> {
    let Some(first) = stored.first() else {
        return Ok(Some(0));
    };
    if first.segments == segments.max(1) && stored.len() == segments.max(1) as usize {
        return Ok(None);
    }
    let slowest = stored
        .iter()
        .map(|segment| segment.position)
        .min()
        .unwrap_or(0);
    let even = stored.iter().all(|segment| segment.position == slowest);
    if (resegment || even) && stored.iter().all(SegmentState::is_free) {
        Ok(Some(slowest))
    } else {
        Err(ViewError::Segments {
            processor: processor.to_owned(),
            stored: first.segments,
            configured: segments,
        })
    }
}
