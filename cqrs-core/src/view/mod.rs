//! Views: the values a [`Projection`] keeps up to date from the log, one
//! per id, queried through a [`ViewStore`] and written, with the
//! projection's checkpoint, by its backend.
//!
//! A *view* is one such value (a row of the `views` table); a projection's
//! handlers change them through [`Views`] during a batch. The backends are
//! process memory ([`ViewStore::in_memory`]) and the SQL stores' own
//! tables (`SqliteStore::views`, `PostgresStore::views`). The backend
//! contract (`ViewBackend`: segments, claims and fencing tokens, parked
//! events, projection versions, inboxes) stays inside the crate while it
//! still grows with each release; a backend for another database belongs
//! beside these three, under their conformance suite.

mod backend;
mod batch;
mod index;
mod memory;
mod parking;
mod query;
mod segment;
mod tables;

use std::fmt;
use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;

pub(crate) use backend::{
    Expected, QueriedView, StoredView, ViewBackend, ViewChange, ViewTransaction,
};
pub(crate) use batch::ViewCache;
pub use batch::Views;
pub use index::{Direction, Field, Filter, IndexKey, KeyError, KeyKind, KeyValue, Order, Ordered};
pub(crate) use memory::MemoryViews;
pub use parking::{Decision, ParkState, ParkedEvent, Settled};
pub use query::{
    Cursor, Index, IndexRegistration, Indexed, Keys, MAX_IN, MAX_LIMIT, Page, Query, QueryError,
};
pub(crate) use query::{Plan, check_keyed};
pub(crate) use segment::resegment_from;
pub use segment::{Claim, SegmentState};
pub(crate) use tables::TableSchema;
pub use tables::{Connection, SqlPool, TableError, TableMigrations, TableProjection, Tables};

use crate::database::DatabaseError;
use crate::envelope::Envelope;
use crate::future::BoxFuture;
use crate::handler::HandlerError;

/// A view type built from events of any aggregates, one view per id.
/// Implemented by `#[projection(name = "..")]` on an impl block of the view
/// type with one `#[event_handler]` per event it reads.
///
/// # Examples
///
/// ```
/// use cqrs_core::prelude::*;
/// use serde::{Deserialize, Serialize};
/// # #[derive(Debug, Clone, Serialize, Deserialize)]
/// # pub struct Open { pub owner: String }
/// # #[derive(Debug, Clone, Command)]
/// # pub enum AccountCommand { Open(Open) }
/// # #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
/// # pub struct Opened { pub owner: String }
/// # #[derive(Debug, Clone, PartialEq, Event)]
/// # pub enum AccountEvent { Opened(Opened) }
/// # #[derive(Debug, thiserror::Error)]
/// # #[error("never")]
/// # pub struct Never;
/// # #[derive(Debug, Default, Aggregate)]
/// # #[aggregate(name = "owned_account", command = AccountCommand, event = AccountEvent, error = Never)]
/// # pub struct Account;
/// # #[aggregate_impl]
/// # impl Account {
/// #     #[command_handler(create)]
/// #     fn open(&self, c: Open) -> Result<Opened, Never> { Ok(Opened { owner: c.owner }) }
/// #     #[apply]
/// #     fn opened(&mut self, _: &Opened) {}
/// # }
///
/// /// The accounts of each owner: one view per owner, not per account.
/// #[derive(Debug, Default, Serialize, Deserialize)]
/// pub struct AccountsByOwner {
///     pub accounts: Vec<String>,
/// }
///
/// #[projection(name = "accounts_by_owner")]
/// impl AccountsByOwner {
///     #[event_handler]
///     async fn opened(event: &Opened, envelope: &Envelope, views: &mut Views<'_, Self>) -> Result<(), ViewError> {
///         let owner = views.get_or_default(&event.owner).await?;
///         owner.accounts.push(envelope.aggregate_id.clone());
///         Ok(())
///     }
/// }
/// ```
pub trait Projection: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The projection's name, which keys its views and checkpoint.
    const NAME: &'static str;

    /// Its version (`#[projection(version = N)]`, default 1). A new version
    /// builds its own views from the start of the log beside the serving
    /// one, and queries switch to it once it has caught up.
    const VERSION: u32 = 1;

    /// How many segments it has (`#[projection(segments = N)]`, default 1):
    /// instances share them, and one stream's events all go to one.
    const SEGMENTS: u32 = 1;

    /// Whether the projection reads events stored under `event_name`.
    fn handles(event_name: &str) -> bool;

    /// Applies one event of the log to the views.
    fn apply<'a>(
        envelope: &'a Envelope,
        views: &'a mut Views<'_, Self>,
    ) -> BoxFuture<'a, Result<(), HandlerError>>;
}

/// Why a view operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ViewError {
    /// A stored view does not decode into the projection's type.
    #[error("view `{view_id}` of projection {projection} does not decode: {source}")]
    Decode {
        /// The projection.
        projection: String,
        /// The view's id.
        view_id: String,
        /// What serde_json reported.
        #[source]
        source: serde_json::Error,
    },

    /// A view could not be serialized.
    #[error("view `{view_id}` of projection {projection} does not serialize: {source}")]
    Encode {
        /// The projection.
        projection: String,
        /// The view's id.
        view_id: String,
        /// What serde_json reported.
        #[source]
        source: serde_json::Error,
    },

    /// A stored checkpoint that is not a position of the log, such as a
    /// negative number written by hand.
    #[error("the checkpoint of {processor} is corrupt: {reason}")]
    Corrupt {
        /// The processor.
        processor: String,
        /// What is wrong with it.
        reason: String,
    },

    /// Another node claimed the segment since this batch began (the
    /// batch's owner was paused or cut off past its lease): nothing of the
    /// batch was written.
    #[error(
        "segment {segment} of {processor} is claimed by another node: the batch was not committed"
    )]
    Fenced {
        /// The processor.
        processor: String,
        /// The segment.
        segment: u32,
    },

    /// Another segment changed a view this batch changed, since the batch
    /// read it: nothing of the batch was written, and it is run again.
    #[error(
        "view `{view_id}` of projection {projection} was changed by another segment during the batch"
    )]
    Conflict {
        /// The projection.
        projection: String,
        /// The view's id.
        view_id: String,
    },

    /// The store keeps another number of segments for the processor than
    /// the app declares, and cannot change it yet: a node holds a lease on
    /// one, or (for a projection) the segments are at different positions.
    #[error(
        "processor {processor} has {stored} segments in the store but {configured} are declared: \
         the count changes once no node runs the old one (a projection's also needs every segment \
         at one position, as after its nodes stopped at the end of the log); or keep {stored}, \
         or for a projection declare a new version with the new count, which builds beside the \
         serving one"
    )]
    Segments {
        /// The processor.
        processor: String,
        /// The count in the store.
        stored: u32,
        /// The count the app declares.
        configured: u32,
    },

    /// A view's declared field holds a value no index keeps (a NaN, a
    /// `u64` beyond `i64::MAX`, text with NUL): the event's failure, and
    /// the view is not written.
    #[error("view `{view_id}` of projection {projection} cannot be indexed: {source}")]
    Key {
        /// The projection.
        projection: String,
        /// The view's id.
        view_id: String,
        /// What is wrong with the value.
        #[source]
        source: KeyError,
    },

    /// An indexed projection's version holds views written before its
    /// type declared its indexes, or with other fields: queries would miss
    /// them, so the version does not start.
    #[error("the views of {projection} cannot be queried: {reason}")]
    Unindexed {
        /// The projection's version.
        projection: String,
        /// What it holds and what to do.
        reason: String,
    },

    /// A table projection's version could not have its tables: a
    /// migration failed or changed since it ran, it did not create a
    /// declared table, or the views are not in a SQL database. That version
    /// does not start; the serving one keeps serving.
    #[error("the tables of {projection} cannot be made: {reason}")]
    Migration {
        /// The projection's version.
        projection: String,
        /// What failed.
        reason: String,
    },

    /// The read side (in a database of its own) was built from another
    /// log than the app's: nothing runs on it.
    #[error(
        "these read models follow another log (its first event is {recorded}, this log's is {log}): \
         open the read side of this log, or an empty one"
    )]
    OtherLog {
        /// The first event of the log the read side follows.
        recorded: String,
        /// The first event of the app's log.
        log: String,
    },

    /// The database failed or could not be reached.
    #[error("database error: {0}")]
    Database(#[from] DatabaseError),
}

impl ViewError {
    pub(crate) fn fenced(processor: &str, segment: u32) -> Self {
        Self::Fenced {
            processor: processor.to_owned(),
            segment,
        }
    }

    /// Whether the failure was the database's for the moment (unreachable,
    /// busy, read-only, out of space), so trying again later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Database(error) if error.is_transient())
    }
}

/// The views of every projection and the processors' checkpoints: a cheap
/// handle on their backend with typed queries. `app.views()` gives the
/// app's.
///
/// # Examples
///
/// ```
/// use cqrs_core::ViewStore;
///
/// let views = ViewStore::in_memory();
/// # let _ = views;
/// ```
#[derive(Clone)]
pub struct ViewStore {
    backend: Arc<dyn ViewBackend>,
}

impl ViewStore {
    /// Views in `backend`.
    pub(crate) fn new(backend: impl ViewBackend) -> Self {
        Self {
            backend: Arc::new(backend),
        }
    }

    /// Views in process memory.
    pub fn in_memory() -> Self {
        Self::new(MemoryViews::default())
    }

    /// The view `view_id` of projection `P`.
    pub async fn get<P: Projection>(&self, view_id: &str) -> Result<Option<P>, ViewError> {
        self.backend
            .view(P::NAME, view_id)
            .await?
            .map(|json| decode::<P>(view_id, &json))
            .transpose()
    }

    /// Every view of projection `P`, by id.
    pub async fn all<P: Projection>(&self) -> Result<Vec<(String, P)>, ViewError> {
        self.backend
            .views(P::NAME)
            .await?
            .into_iter()
            .map(|(view_id, json)| {
                let view = decode::<P>(&view_id, &json)?;
                Ok((view_id, view))
            })
            .collect()
    }

    /// A query on the views of `V` by its declared fields: filters, an
    /// order, a page size and a cursor, then `fetch`. See [`Query`].
    pub fn query<V: Indexed>(&self) -> Query<'_, V> {
        Query::new(self)
    }

    /// The log position processor `name` has processed up to: the slowest
    /// of its segments (0 before its first batch).
    pub async fn checkpoint(&self, name: &str) -> Result<u64, ViewError> {
        let segments = self.backend.segments(name).await?;
        Ok(segments
            .iter()
            .map(|segment| segment.position)
            .min()
            .unwrap_or(0))
    }

    /// Every segment of processor `name`: checkpoint, owner, lease, parked
    /// events.
    pub async fn segments(&self, name: &str) -> Result<Vec<SegmentState>, ViewError> {
        self.backend.segments(name).await
    }

    /// The events processor `name` parked, by position, including those
    /// already retried or skipped.
    pub async fn parked(&self, name: &str) -> Result<Vec<ParkedEvent>, ViewError> {
        self.backend.parked(name).await
    }

    /// Moves every segment of processor `name` to `position`, for example
    /// back to reprocess events after fixing a process manager (its commands
    /// carry command ids, so those it already sent do not run again). A
    /// projection's views keep what they hold, so moving one back applies
    /// events to them twice: rebuild it instead.
    pub async fn set_checkpoint(&self, name: &str, position: u64) -> Result<(), ViewError> {
        self.backend.reset(name, position, false).await
    }

    /// The keys of every processor that keeps its checkpoints here (a
    /// projection's version after the first as `name@version`), sorted.
    pub async fn processors(&self) -> Result<Vec<String>, ViewError> {
        self.backend.processors().await
    }

    /// Whether processor `key` (`name`, or `name@version`) is a projection:
    /// queries read one of its versions.
    pub async fn is_projection(&self, key: &str) -> Result<bool, ViewError> {
        let name = key.split_once('@').map_or(key, |(name, _)| name);
        Ok(self.backend.serving(name).await?.is_some())
    }

    /// Retries the parked events of the stream of the one processor `name`
    /// parked at `position`; the node that owns its segment picks the
    /// decision up at its next lease renewal. False if no event is parked
    /// there. (`Processors::retry_parked` also wakes this node's runner.)
    pub async fn retry_parked(&self, name: &str, position: u64) -> Result<bool, ViewError> {
        self.backend.decide(name, position, Decision::Retry).await
    }

    /// Skips the event processor `name` parked at `position` for good; the
    /// events of its stream waiting behind it are handled next. False if no
    /// event is parked there.
    pub async fn skip_parked(&self, name: &str, position: u64) -> Result<bool, ViewError> {
        self.backend.decide(name, position, Decision::Skip).await
    }

    /// The pool of the SQL database the views are in (`None` in memory),
    /// for queries in plain SQL over the tables of
    /// [`TableProjection`]s: each table's plain name is a SQL view of the
    /// serving version's table.
    pub fn sql(&self) -> Option<SqlPool> {
        self.backend.sql_pool()
    }

    pub(crate) fn backend(&self) -> &dyn ViewBackend {
        &*self.backend
    }
}

impl fmt::Debug for ViewStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ViewStore").finish_non_exhaustive()
    }
}

pub(crate) fn decode<P: Projection>(view_id: &str, json: &str) -> Result<P, ViewError> {
    serde_json::from_str(json).map_err(|source| ViewError::Decode {
        projection: P::NAME.to_owned(),
        view_id: view_id.to_owned(),
        source,
    })
}
