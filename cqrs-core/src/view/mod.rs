//! Views: the values a [`Projection`] keeps up to date from the log, one
//! per id, queried through a [`ViewStore`] and written, with the
//! projection's checkpoint, by a [`ViewBackend`].
//!
//! A *view* is one such value (a row of the `views` table); a projection's
//! handlers change them through [`Views`] during a batch. The backends are [`MemoryViews`] here,
//! and the SQL stores' own tables (`SqliteStore::views`,
//! `PostgresStore::views`).

mod batch;
mod memory;

use std::fmt;
use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;

pub(crate) use batch::ViewCache;
pub use batch::Views;
pub use memory::MemoryViews;

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

    /// The database failed or could not be reached.
    #[error("database error: {0}")]
    Database(#[from] DatabaseError),
}

impl ViewError {
    /// Whether the failure was the database's for the moment (unreachable,
    /// busy, read-only, out of space), so trying again later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Database(error) if error.is_transient())
    }
}

/// Where views and processor checkpoints live. A backend writes a batch of
/// views and the checkpoint in one transaction, so an event is applied
/// exactly once even if the process dies half-way.
pub trait ViewBackend: Send + Sync + 'static {
    /// Starts the transaction of one batch of `processor`. It holds the
    /// processor's lock until it ends, so two runners of one projection never
    /// interleave batches.
    fn begin<'a>(
        &'a self,
        processor: &'a str,
    ) -> BoxFuture<'a, Result<Box<dyn ViewTransaction + 'a>, ViewError>>;

    /// The position `processor` has processed up to (0 before its first event).
    fn checkpoint<'a>(&'a self, processor: &'a str) -> BoxFuture<'a, Result<u64, ViewError>>;

    /// Moves the checkpoint of `processor` from `from` to `to`, if it is still
    /// at `from`; false if another runner moved it first.
    fn advance<'a>(
        &'a self,
        processor: &'a str,
        from: u64,
        to: u64,
    ) -> BoxFuture<'a, Result<bool, ViewError>>;

    /// One committed view of a projection, as JSON.
    fn view<'a>(
        &'a self,
        projection: &'a str,
        view_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, ViewError>>;

    /// Every committed view of a projection, as (id, JSON), by id.
    fn views<'a>(
        &'a self,
        projection: &'a str,
    ) -> BoxFuture<'a, Result<Vec<(String, String)>, ViewError>>;
}

/// One batch of a projection: reads views, then writes the changed ones and
/// the new checkpoint, all or nothing. Dropping it without `commit` rolls
/// back.
pub trait ViewTransaction: Send {
    /// The checkpoint, read under the processor's lock.
    fn checkpoint(&mut self) -> BoxFuture<'_, Result<u64, ViewError>>;

    /// A view as JSON.
    fn load<'a>(&'a mut self, view_id: &'a str)
    -> BoxFuture<'a, Result<Option<String>, ViewError>>;

    /// Stores changed views (`None` deletes one).
    fn write(
        &mut self,
        changes: Vec<(String, Option<String>)>,
    ) -> BoxFuture<'_, Result<(), ViewError>>;

    /// Deletes every view of the projection, for a rebuild.
    fn clear(&mut self) -> BoxFuture<'_, Result<(), ViewError>>;

    /// Saves `checkpoint` and commits.
    fn commit(self: Box<Self>, checkpoint: u64) -> BoxFuture<'static, Result<(), ViewError>>;
}

/// The views of every projection and the processors' checkpoints: a cheap
/// handle on a [`ViewBackend`] with typed queries. `app.views()` gives the
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
    /// Views in any backend.
    pub fn new(backend: impl ViewBackend) -> Self {
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

    /// The log position processor `name` has processed up to.
    pub async fn checkpoint(&self, name: &str) -> Result<u64, ViewError> {
        self.backend.checkpoint(name).await
    }

    /// Moves the checkpoint of processor `name` to `position`, for example
    /// back to reprocess events after fixing a process manager (its commands
    /// carry command ids, so those it already sent do not run again).
    pub async fn set_checkpoint(&self, name: &str, position: u64) -> Result<(), ViewError> {
        self.backend.begin(name).await?.commit(position).await
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
