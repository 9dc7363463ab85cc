//! Read models: documents a [`Projection`] keeps up to date from the log, in
//! a [`ViewStore`] that writes them together with the projection's checkpoint.

mod memory;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "sqlite")]
mod sqlite;

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;

pub use memory::MemoryViews;
#[cfg(feature = "postgres")]
pub use postgres::PostgresViews;
#[cfg(feature = "sqlite")]
pub use sqlite::SqliteViews;

use crate::envelope::Envelope;

/// A boxed future, as the object-safe store traits return.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A read model: one document type, kept per id, built from events of any
/// aggregates. Implemented by `#[projection(name = "..")]` on an impl block of
/// the document type with one `#[event_handler]` per event it reads.
///
/// # Examples
///
/// ```
/// use cqrs_core::prelude::*;
/// use cqrs_core::Views;
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
/// /// The accounts of each owner: one document per owner, not per account.
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
    /// The projection's name, which keys its documents and checkpoint.
    const NAME: &'static str;

    /// Whether the projection reads events stored under `event_name`.
    fn handles(event_name: &str) -> bool;

    /// Applies one event of the log to the documents.
    fn apply<'a>(
        envelope: &'a Envelope,
        views: &'a mut Views<'_, Self>,
    ) -> BoxFuture<'a, Result<(), crate::ProcessorError>>;
}

/// Why a read-model operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ViewError {
    /// A stored document does not decode into the projection's type.
    #[error("document `{view_id}` of projection {projection} does not decode: {source}")]
    Decode {
        /// The projection.
        projection: String,
        /// The document's id.
        view_id: String,
        /// What serde_json reported.
        #[source]
        source: serde_json::Error,
    },

    /// A document could not be serialized.
    #[error("document `{view_id}` of projection {projection} does not serialize: {source}")]
    Encode {
        /// The projection.
        projection: String,
        /// The document's id.
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
    Database(#[from] crate::DatabaseError),

    /// The event store failed while a processor read the log.
    #[error(transparent)]
    Store(#[from] crate::StoreError),
}

impl ViewError {
    /// Whether trying again later may succeed with nothing changed: the
    /// database was unreachable, busy, read-only or out of space.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Database(error) => error.is_transient(),
            Self::Store(error) => error.is_transient(),
            _ => false,
        }
    }
}

#[cfg(any(feature = "sqlite", feature = "postgres"))]
impl From<sqlx::Error> for ViewError {
    fn from(error: sqlx::Error) -> Self {
        Self::Database(error.into())
    }
}

/// A checkpoint as the database stores it, as a position.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) fn checkpoint_of(processor: &str, stored: Option<i64>) -> Result<u64, ViewError> {
    match stored {
        None => Ok(0),
        Some(position) => u64::try_from(position).map_err(|_| ViewError::Corrupt {
            processor: processor.to_owned(),
            reason: format!("position {position} is negative"),
        }),
    }
}

/// A position as the database stores it.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) fn stored_position(processor: &str, position: u64) -> Result<i64, ViewError> {
    i64::try_from(position).map_err(|_| ViewError::Corrupt {
        processor: processor.to_owned(),
        reason: format!("position {position} is beyond any the log can hold"),
    })
}

/// Where read-model documents and processor checkpoints live. A backend
/// writes a batch of documents and the checkpoint in one transaction, so an
/// event is applied exactly once even if the process dies half-way.
pub trait ViewStore: Send + Sync + 'static {
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

    /// One committed document of a projection, as JSON.
    fn document<'a>(
        &'a self,
        projection: &'a str,
        view_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, ViewError>>;

    /// Every committed document of a projection, as (id, JSON), by id.
    fn documents<'a>(
        &'a self,
        projection: &'a str,
    ) -> BoxFuture<'a, Result<Vec<(String, String)>, ViewError>>;
}

/// One batch of a projection: reads documents, then writes the changed ones
/// and the new checkpoint, all or nothing. Dropping it without `commit`
/// rolls back.
pub trait ViewTransaction: Send {
    /// The checkpoint, read under the processor's lock.
    fn checkpoint(&mut self) -> BoxFuture<'_, Result<u64, ViewError>>;

    /// A document as JSON.
    fn load<'a>(&'a mut self, view_id: &'a str)
    -> BoxFuture<'a, Result<Option<String>, ViewError>>;

    /// Stores changed documents (`None` deletes one).
    fn write(
        &mut self,
        changes: Vec<(String, Option<String>)>,
    ) -> BoxFuture<'_, Result<(), ViewError>>;

    /// Deletes every document of the projection, for a rebuild.
    fn clear(&mut self) -> BoxFuture<'_, Result<(), ViewError>>;

    /// Saves `checkpoint` and commits.
    fn commit(self: Box<Self>, checkpoint: u64) -> BoxFuture<'static, Result<(), ViewError>>;
}

/// Read models and checkpoints: a cheap handle on a [`ViewStore`] with typed
/// queries.
///
/// # Examples
///
/// ```
/// use cqrs_core::ReadModels;
///
/// let read_models = ReadModels::in_memory();
/// # let _ = read_models;
/// ```
#[derive(Clone)]
pub struct ReadModels {
    store: Arc<dyn ViewStore>,
}

impl ReadModels {
    /// Read models over any view store.
    pub fn new(store: impl ViewStore) -> Self {
        Self {
            store: Arc::new(store),
        }
    }

    /// Read models in process memory.
    pub fn in_memory() -> Self {
        Self::new(MemoryViews::default())
    }

    /// The document `view_id` of projection `P`.
    pub async fn get<P: Projection>(&self, view_id: &str) -> Result<Option<P>, ViewError> {
        self.store
            .document(P::NAME, view_id)
            .await?
            .map(|json| decode::<P>(view_id, &json))
            .transpose()
    }

    /// Every document of projection `P`, by id.
    pub async fn all<P: Projection>(&self) -> Result<Vec<(String, P)>, ViewError> {
        self.store
            .documents(P::NAME)
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
        self.store.checkpoint(name).await
    }

    /// Moves the checkpoint of processor `name` to `position`, for example
    /// back to reprocess events after fixing a process manager (its commands
    /// carry command ids, so those it already sent do not run again).
    pub async fn set_checkpoint(&self, name: &str, position: u64) -> Result<(), ViewError> {
        self.store.begin(name).await?.commit(position).await
    }

    pub(crate) fn store(&self) -> &dyn ViewStore {
        &*self.store
    }
}

impl fmt::Debug for ReadModels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReadModels").finish_non_exhaustive()
    }
}

fn decode<P: Projection>(view_id: &str, json: &str) -> Result<P, ViewError> {
    serde_json::from_str(json).map_err(|source| ViewError::Decode {
        projection: P::NAME.to_owned(),
        view_id: view_id.to_owned(),
        source,
    })
}

/// A projection's documents as its handlers see them during a batch: read on
/// first use, changed in memory, written with the checkpoint when the batch
/// commits.
pub struct Views<'t, P> {
    transaction: &'t mut dyn ViewTransaction,
    cache: &'t mut DocumentCache<P>,
}

/// Documents a projection runner keeps between batches. `complete` means
/// it holds every document of the projection (after a rebuild from empty),
/// so a miss is an absent document and needs no read.
pub(crate) struct DocumentCache<P> {
    documents: HashMap<String, Cached<P>>,
    complete: bool,
}

struct Cached<P> {
    view: Option<P>,
    dirty: bool,
}

/// Past this many documents, clean ones are dropped after each batch.
const CACHE_LIMIT: usize = 200_000;

impl<P> Default for DocumentCache<P> {
    fn default() -> Self {
        Self {
            documents: HashMap::new(),
            complete: false,
        }
    }
}

impl<P: Projection> DocumentCache<P> {
    /// After a rebuild cleared the store: every document is in the cache.
    pub(crate) fn reset(&mut self) {
        self.documents.clear();
        self.complete = true;
    }

    /// After a batch that did not commit: forget what it changed.
    pub(crate) fn discard_changes(&mut self) {
        let before = self.documents.len();
        self.documents.retain(|_, cached| !cached.dirty);
        if self.documents.len() != before {
            self.complete = false;
        }
    }

    /// After another runner may have written: nothing cached can be trusted.
    pub(crate) fn invalidate(&mut self) {
        self.documents.clear();
        self.complete = false;
    }

    /// The changed documents as JSON, marking them clean.
    pub(crate) fn take_changes(&mut self) -> Result<Vec<(String, Option<String>)>, ViewError> {
        let mut changes = Vec::new();
        for (view_id, cached) in &mut self.documents {
            if !cached.dirty {
                continue;
            }
            let json = match &cached.view {
                Some(view) => {
                    Some(
                        serde_json::to_string(view).map_err(|source| ViewError::Encode {
                            projection: P::NAME.to_owned(),
                            view_id: view_id.clone(),
                            source,
                        })?,
                    )
                }
                None => None,
            };
            cached.dirty = false;
            changes.push((view_id.clone(), json));
        }
        if self.documents.len() > CACHE_LIMIT {
            self.documents.clear();
            self.complete = false;
        }
        Ok(changes)
    }

    pub(crate) fn views<'t>(
        &'t mut self,
        transaction: &'t mut dyn ViewTransaction,
    ) -> Views<'t, P> {
        Views {
            transaction,
            cache: self,
        }
    }
}

impl<P: Projection> Views<'_, P> {
    /// The document `view_id`, if there is one.
    pub async fn get(&mut self, view_id: &str) -> Result<Option<&P>, ViewError> {
        self.fetch(view_id).await?;
        Ok(self
            .cache
            .documents
            .get(view_id)
            .and_then(|cached| cached.view.as_ref()))
    }

    /// The document `view_id` to change, if there is one.
    pub async fn get_mut(&mut self, view_id: &str) -> Result<Option<&mut P>, ViewError> {
        self.fetch(view_id).await?;
        Ok(self.cache.documents.get_mut(view_id).and_then(|cached| {
            cached.dirty |= cached.view.is_some();
            cached.view.as_mut()
        }))
    }

    /// The document `view_id` to change, created with `Default` if absent.
    pub async fn get_or_default(&mut self, view_id: &str) -> Result<&mut P, ViewError>
    where
        P: Default,
    {
        self.fetch(view_id).await?;
        let cached = self
            .cache
            .documents
            .entry(view_id.to_owned())
            .or_insert(Cached {
                view: None,
                dirty: false,
            });
        cached.dirty = true;
        Ok(cached.view.get_or_insert_with(P::default))
    }

    /// Sets the document `view_id`, replacing any.
    pub fn insert(&mut self, view_id: impl Into<String>, view: P) {
        self.cache.documents.insert(
            view_id.into(),
            Cached {
                view: Some(view),
                dirty: true,
            },
        );
    }

    /// Deletes the document `view_id`.
    pub fn remove(&mut self, view_id: &str) {
        self.cache.documents.insert(
            view_id.to_owned(),
            Cached {
                view: None,
                dirty: true,
            },
        );
    }

    /// Brings `view_id` into the cache (as absent when there is none).
    async fn fetch(&mut self, view_id: &str) -> Result<(), ViewError> {
        if self.cache.documents.contains_key(view_id) {
            return Ok(());
        }
        let view = if self.cache.complete {
            None
        } else {
            self.transaction
                .load(view_id)
                .await?
                .map(|json| decode::<P>(view_id, &json))
                .transpose()?
        };
        self.cache
            .documents
            .insert(view_id.to_owned(), Cached { view, dirty: false });
        Ok(())
    }
}

impl<P> fmt::Debug for Views<'_, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Views")
            .field("cached", &self.cache.documents.len())
            .finish_non_exhaustive()
    }
}
