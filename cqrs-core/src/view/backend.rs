//! [`ViewBackend`]: where views, processors' segments (checkpoints, claims,
//! fencing tokens), parked events, projection versions and the inboxes'
//! handled messages live, and
//! [`ViewTransaction`], one batch of a segment, all or nothing.

use std::time::Duration;

use uuid::Uuid;

use super::{Connection, Index, Plan, SqlPool, TableSchema, ViewError};
use crate::future::BoxFuture;
use crate::view::{Claim, Decision, ParkedEvent, SegmentState, Settled};

/// A stored view: its JSON and its revision, one more at every write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StoredView {
    /// The view as JSON.
    pub(crate) state: String,
    /// Its revision.
    pub(crate) revision: u64,
}

/// What a batch expects the store to hold of a view it writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expected {
    /// No view: it read none.
    Absent,
    /// The view at this revision.
    Revision(u64),
    /// Anything: the batch replaced the view without reading it
    /// ([`Views::insert`](super::Views::insert), [`Views::remove`](super::Views::remove)).
    Any,
}

/// A view a batch changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ViewChange {
    /// The view's id.
    pub(crate) view_id: String,
    /// What the batch read: the write fails with [`ViewError::Conflict`]
    /// if another segment wrote the view since.
    pub(crate) revision: Expected,
    /// The new JSON, `None` to delete the view.
    pub(crate) state: Option<String>,
    /// The values of its declared fields, as a JSON object, if its type
    /// is [`Indexed`](super::Indexed).
    pub(crate) keys: Option<String>,
}

/// Where views and processors' segments live. A backend commits a batch's
/// views, its parked events and its segment's checkpoint in one transaction,
/// and only while the batch's claim is the segment's current one.
///
/// Processors are named by their key: a projection's name for its first
/// version, `name@N` for version N.
pub(crate) trait ViewBackend: Send + Sync + 'static {
    /// Creates the segments of `processor` at position 0 if it has none. If
    /// it has another number of segments: with `resegment`, and no live
    /// claim, replaces them with `segments` segments at the slowest one's
    /// position; otherwise fails with [`ViewError::Segments`].
    fn prepare<'a>(
        &'a self,
        processor: &'a str,
        segments: u32,
        resegment: bool,
    ) -> BoxFuture<'a, Result<(), ViewError>>;

    /// The segments of `processor`, by index.
    fn segments<'a>(
        &'a self,
        processor: &'a str,
    ) -> BoxFuture<'a, Result<Vec<SegmentState>, ViewError>>;

    /// The keys of every processor with segments, sorted.
    fn processors(&self) -> BoxFuture<'_, Result<Vec<String>, ViewError>>;

    /// Records that `node` runs `processor` for `lease` more, and returns
    /// the nodes that do, itself included, sorted.
    fn heartbeat<'a>(
        &'a self,
        processor: &'a str,
        node: &'a str,
        lease: Duration,
    ) -> BoxFuture<'a, Result<Vec<String>, ViewError>>;

    /// Claims `segment` for `node` for `lease`, if no one holds a live lease
    /// on it, with a new fencing token.
    fn claim<'a>(
        &'a self,
        processor: &'a str,
        segment: u32,
        node: &'a str,
        lease: Duration,
    ) -> BoxFuture<'a, Result<Option<Claim>, ViewError>>;

    /// Extends the leases `node` still holds, and returns them.
    fn renew<'a>(
        &'a self,
        processor: &'a str,
        node: &'a str,
        lease: Duration,
    ) -> BoxFuture<'a, Result<Vec<Claim>, ViewError>>;

    /// Gives up a claim, if it is still current.
    fn release<'a>(
        &'a self,
        processor: &'a str,
        claim: Claim,
    ) -> BoxFuture<'a, Result<(), ViewError>>;

    /// Gives up every claim of `node` and its heartbeat, on a graceful stop.
    fn leave<'a>(
        &'a self,
        processor: &'a str,
        node: &'a str,
    ) -> BoxFuture<'a, Result<(), ViewError>>;

    /// The position one segment has processed up to.
    fn checkpoint<'a>(
        &'a self,
        processor: &'a str,
        segment: u32,
    ) -> BoxFuture<'a, Result<u64, ViewError>>;

    /// A view of `processor` (the key of one version), with its revision,
    /// for a batch to change: the batch's write checks that revision.
    fn load<'a>(
        &'a self,
        processor: &'a str,
        view_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<StoredView>, ViewError>>;

    /// Starts writing a batch of a segment under `claim`: fails with
    /// [`ViewError::Fenced`] unless the claim is current, and keeps it so
    /// until the batch ends. The batch's handlers have run before: the
    /// transaction holds only the batch's own writes, so a node paused in
    /// a handler holds no lock.
    fn begin<'a>(
        &'a self,
        processor: &'a str,
        claim: Claim,
    ) -> BoxFuture<'a, Result<Box<dyn ViewTransaction + 'a>, ViewError>>;

    /// Moves a segment's checkpoint from `from` to `to` under `claim`, for a
    /// batch that changed nothing else. False if the checkpoint was not at
    /// `from` (it was moved meanwhile, as by a reset);
    /// [`ViewError::Fenced`] if the claim is not current.
    fn advance<'a>(
        &'a self,
        processor: &'a str,
        claim: Claim,
        from: u64,
        to: u64,
    ) -> BoxFuture<'a, Result<bool, ViewError>>;

    /// Sets every segment of `processor` to `position`; with `clear`, also
    /// deletes its views and parked events, for a rebuild.
    fn reset<'a>(
        &'a self,
        processor: &'a str,
        position: u64,
        clear: bool,
    ) -> BoxFuture<'a, Result<(), ViewError>>;

    /// The events `processor` parked, by position, decided ones included.
    fn parked<'a>(
        &'a self,
        processor: &'a str,
    ) -> BoxFuture<'a, Result<Vec<ParkedEvent>, ViewError>>;

    /// Records a decision about the parked event at `position`: a retry
    /// marks the parked events of its stream to be retried; a skip marks it
    /// skipped and the events waiting behind it to be retried. False if no
    /// event is parked there.
    fn decide<'a>(
        &'a self,
        processor: &'a str,
        position: u64,
        decision: Decision,
    ) -> BoxFuture<'a, Result<bool, ViewError>>;

    /// The key of the version of `projection` that queries read.
    fn serving<'a>(
        &'a self,
        projection: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, ViewError>>;

    /// Makes `to` the version of `projection` that queries read, if `from`
    /// is (`None`: if none is yet). False if another was.
    fn switch<'a>(
        &'a self,
        projection: &'a str,
        from: Option<&'a str>,
        to: &'a str,
    ) -> BoxFuture<'a, Result<bool, ViewError>>;

    /// Deletes the views, segments and parked events of `processor`, an
    /// old version no query reads any more.
    fn retire<'a>(&'a self, processor: &'a str) -> BoxFuture<'a, Result<(), ViewError>>;

    /// Which of `messages` (message ids) the inbox of consumer `consumer`
    /// holds, handled or parked.
    fn received<'a>(
        &'a self,
        consumer: &'a str,
        messages: &'a [Uuid],
    ) -> BoxFuture<'a, Result<Vec<Uuid>, ViewError>>;

    /// One view of the serving version of `projection`, as JSON.
    fn view<'a>(
        &'a self,
        projection: &'a str,
        view_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, ViewError>>;

    /// Every view of the serving version of `projection`, as (id, JSON), by id.
    fn views<'a>(
        &'a self,
        projection: &'a str,
    ) -> BoxFuture<'a, Result<Vec<(String, String)>, ViewError>>;

    /// Makes the indexes of version `key` of an indexed projection, if
    /// they are not made yet. A backend without indexes (memory) needs
    /// none.
    fn ensure_indexes<'a>(
        &'a self,
        key: &'a str,
        indexes: &'static [Index],
    ) -> BoxFuture<'a, Result<(), ViewError>> {
        let _ = (key, indexes);
        Box::pin(std::future::ready(Ok(())))
    }

    /// Makes the tables of version `key` of a table projection: runs the
    /// steps of its migrations for this backend's dialect that have not run
    /// (one transaction for all, one migrator at a time), checks that each
    /// declared table exists, and records them as the version's. A step
    /// changed since it ran, a failed step or a missing table is
    /// [`ViewError::Migration`], and nothing is changed. A backend without
    /// SQL (memory) holds no tables.
    fn ensure_tables<'a>(
        &'a self,
        key: &'a str,
        schema: TableSchema,
    ) -> BoxFuture<'a, Result<(), ViewError>> {
        let _ = schema;
        Box::pin(std::future::ready(Err(ViewError::Migration {
            projection: key.to_owned(),
            reason: "views in memory hold no tables: open the views in SQLite or PostgreSQL"
                .to_owned(),
        })))
    }

    /// Records that the read side follows the log whose first event is
    /// `log_id`, the first time; [`ViewError::OtherLog`] if it follows
    /// another. Views in memory live and die with their app: nothing to
    /// check.
    fn follow_log<'a>(&'a self, log_id: &'a str) -> BoxFuture<'a, Result<(), ViewError>> {
        let _ = log_id;
        Box::pin(std::future::ready(Ok(())))
    }

    /// The pool of its SQL database; `None` for a backend without SQL.
    fn sql_pool(&self) -> Option<SqlPool> {
        None
    }

    /// One page of the serving version's views that `plan` selects, in its
    /// order: each view's id and JSON.
    fn query<'a>(&'a self, plan: &'a Plan) -> BoxFuture<'a, Result<Vec<QueriedView>, ViewError>>;
}

/// A view a query found: its id and JSON.
pub(crate) type QueriedView = (String, String);

/// The writes of one batch of a segment: the changed views, the events it
/// parked or retried and the new checkpoint, all or nothing. Dropping it
/// without `commit` rolls back.
pub(crate) trait ViewTransaction: Send {
    /// The segment's checkpoint, read under the claim.
    fn checkpoint(&self) -> u64;

    /// Stores changed views, checking each one's revision.
    fn write(&mut self, changes: Vec<ViewChange>) -> BoxFuture<'_, Result<(), ViewError>>;

    /// Parks events.
    fn park(&mut self, events: Vec<ParkedEvent>) -> BoxFuture<'_, Result<(), ViewError>>;

    /// Records how the retry of the parked event at `position` came out.
    fn settle(&mut self, position: u64, outcome: Settled) -> BoxFuture<'_, Result<(), ViewError>>;

    /// Records `messages` (message ids) in the inbox of the batch's
    /// consumer, handled or parked: a later delivery of one is a duplicate.
    fn receive(&mut self, messages: Vec<Uuid>) -> BoxFuture<'_, Result<(), ViewError>>;

    /// Marks where a table projection's handlers start writing: what
    /// they write is checked by [`end_tables`](Self::end_tables).
    fn begin_tables(&mut self) -> BoxFuture<'_, Result<(), ViewError>> {
        Box::pin(std::future::ready(Ok(())))
    }

    /// The batch's connection, for a table projection's handlers; `None`
    /// on a backend without SQL.
    fn tables(&mut self) -> Option<Connection<'_>> {
        None
    }

    /// Checks that the handlers left the batch's transaction open: one that
    /// ended it committed its rows without the checkpoint
    /// ([`ViewError::Corrupt`]).
    fn end_tables(&mut self) -> BoxFuture<'_, Result<(), ViewError>> {
        Box::pin(std::future::ready(Ok(())))
    }

    /// Saves `checkpoint` and commits.
    fn commit(self: Box<Self>, checkpoint: u64) -> BoxFuture<'static, Result<(), ViewError>>;
}
