//! [`Views`]: a projection's views during one batch, and the cache that
//! keeps them between batches.

use std::collections::HashMap;
use std::fmt;

use super::query::KeysFn;
use super::{
    Expected, IndexRegistration, KeyValue, Projection, ViewBackend, ViewChange, ViewError, decode,
};

/// A view's keys as the JSON object the backends keep beside it.
fn keys_json(keys: &[(&'static str, KeyValue)]) -> String {
    let object: serde_json::Map<String, serde_json::Value> = keys
        .iter()
        .map(|(field, value)| ((*field).to_owned(), value.to_json()))
        .collect();
    serde_json::Value::Object(object).to_string()
}

/// A projection's views as its handlers see them during a batch: read on
/// first use, changed in memory, written with the checkpoint when the batch
/// commits.
pub struct Views<'t, P> {
    backend: &'t dyn ViewBackend,
    /// The key of the projection's version that the batch builds.
    key: &'t str,
    cache: &'t mut ViewCache<P>,
}

/// The views a projection runner keeps between batches of one segment.
///
/// `complete` means it holds every view of the projection (after a rebuild
/// from empty), so a miss is an absent view and needs no read. `shared`
/// means other segments may write the same views: then only the batch's
/// own reads are kept, as a view another segment changed would otherwise be
/// read stale from the cache for as long as this segment does not write it.
pub(crate) struct ViewCache<P> {
    views: HashMap<String, Cached<P>>,
    complete: bool,
    shared: bool,
    /// The keys of a view, if `P` is [`Indexed`](super::Indexed).
    keys: Option<KeysFn>,
}

struct Cached<P> {
    view: Option<P>,
    /// What the store held when the view was read.
    revision: Expected,
    dirty: bool,
}

/// Past this many views, clean ones are dropped after each batch.
const CACHE_LIMIT: usize = 200_000;

impl<P: Projection> ViewCache<P> {
    /// An empty cache; `shared` if other segments write the same views.
    pub(crate) fn new(shared: bool) -> Self {
        Self {
            views: HashMap::new(),
            complete: false,
            shared,
            keys: IndexRegistration::find::<P>(),
        }
    }

    /// After a rebuild cleared the store: every view is in the cache.
    pub(crate) fn reset(&mut self) {
        self.views.clear();
        self.complete = true;
    }

    /// After a batch that did not commit: forget what it changed.
    pub(crate) fn discard_changes(&mut self) {
        let before = self.views.len();
        self.views.retain(|_, cached| !cached.dirty);
        if self.views.len() != before {
            self.complete = false;
        }
    }

    /// After another runner may have written: nothing cached can be trusted.
    pub(crate) fn invalidate(&mut self) {
        self.views.clear();
        self.complete = false;
    }

    /// The changed views as JSON, marking them clean: in a shared cache with
    /// the revisions they were read at, to be checked; in an exclusive one,
    /// which no other segment writes, to be written as they are.
    pub(crate) fn take_changes(&mut self) -> Result<Vec<ViewChange>, ViewError> {
        let mut changes = Vec::new();
        for (view_id, cached) in &mut self.views {
            if !cached.dirty {
                continue;
            }
            let state = match &cached.view {
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
            let keys = match (&cached.view, self.keys) {
                (Some(view), Some(keys)) => match keys(view) {
                    Some(Ok(keys)) => Some(keys_json(&keys)),
                    Some(Err(source)) => {
                        return Err(ViewError::Key {
                            projection: P::NAME.to_owned(),
                            view_id: view_id.clone(),
                            source,
                        });
                    }
                    None => None,
                },
                _ => None,
            };
            cached.dirty = false;
            changes.push(ViewChange {
                view_id: view_id.clone(),
                revision: if self.shared {
                    cached.revision
                } else {
                    Expected::Any
                },
                state,
                keys,
            });
        }
        Ok(changes)
    }

    /// After a batch committed: a shared cache forgets what it read; an
    /// exclusive one keeps it, up to a bound.
    pub(crate) fn committed(&mut self) {
        if self.shared || self.views.len() > CACHE_LIMIT {
            self.invalidate();
        }
    }

    /// The views of one batch of the version `key`, read from `backend`.
    pub(crate) fn views<'t>(
        &'t mut self,
        backend: &'t dyn ViewBackend,
        key: &'t str,
    ) -> Views<'t, P> {
        Views {
            backend,
            key,
            cache: self,
        }
    }
}

impl<P: Projection> Views<'_, P> {
    /// The view `view_id`, if there is one.
    pub async fn get(&mut self, view_id: &str) -> Result<Option<&P>, ViewError> {
        self.fetch(view_id).await?;
        Ok(self
            .cache
            .views
            .get(view_id)
            .and_then(|cached| cached.view.as_ref()))
    }

    /// The view `view_id` to change, if there is one.
    pub async fn get_mut(&mut self, view_id: &str) -> Result<Option<&mut P>, ViewError> {
        self.fetch(view_id).await?;
        Ok(self.cache.views.get_mut(view_id).and_then(|cached| {
            cached.dirty |= cached.view.is_some();
            cached.view.as_mut()
        }))
    }

    /// The view `view_id` to change, created with `Default` if absent.
    pub async fn get_or_default(&mut self, view_id: &str) -> Result<&mut P, ViewError>
    where
        P: Default,
    {
        self.fetch(view_id).await?;
        let cached = self
            .cache
            .views
            .entry(view_id.to_owned())
            .or_insert(Cached {
                view: None,
                revision: Expected::Absent,
                dirty: false,
            });
        cached.dirty = true;
        Ok(cached.view.get_or_insert_with(P::default))
    }

    /// Sets the view `view_id`, replacing any.
    pub fn insert(&mut self, view_id: impl Into<String>, view: P) {
        self.overwrite(view_id.into(), Some(view));
    }

    /// Deletes the view `view_id`.
    pub fn remove(&mut self, view_id: &str) {
        self.overwrite(view_id.to_owned(), None);
    }

    /// Replaces the view without reading it: checked against the revision
    /// read before if it was, written over whatever is stored if not.
    fn overwrite(&mut self, view_id: String, view: Option<P>) {
        let cached = self.cache.views.entry(view_id).or_insert(Cached {
            view: None,
            revision: Expected::Any,
            dirty: false,
        });
        cached.view = view;
        cached.dirty = true;
    }

    /// Brings `view_id` into the cache (as absent when there is none).
    async fn fetch(&mut self, view_id: &str) -> Result<(), ViewError> {
        if self.cache.views.contains_key(view_id) {
            return Ok(());
        }
        let (view, revision) = match self.cache.complete {
            true => (None, Expected::Absent),
            false => match self.backend.load(self.key, view_id).await? {
                Some(stored) => (
                    Some(decode::<P>(view_id, &stored.state)?),
                    Expected::Revision(stored.revision),
                ),
                None => (None, Expected::Absent),
            },
        };
        self.cache.views.insert(
            view_id.to_owned(),
            Cached {
                view,
                revision,
                dirty: false,
            },
        );
        Ok(())
    }
}

impl<P> fmt::Debug for Views<'_, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Views")
            .field("cached", &self.cache.views.len())
            .finish_non_exhaustive()
    }
}
