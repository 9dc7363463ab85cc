//! [`Views`]: a projection's views during one batch, and the cache that
//! keeps them between batches.

use std::collections::HashMap;
use std::fmt;

use super::{Projection, ViewError, ViewTransaction, decode};

/// A projection's views as its handlers see them during a batch: read on
/// first use, changed in memory, written with the checkpoint when the batch
/// commits.
pub struct Views<'t, P> {
    transaction: &'t mut dyn ViewTransaction,
    cache: &'t mut ViewCache<P>,
}

/// The views a projection runner keeps between batches. `complete` means
/// it holds every view of the projection (after a rebuild from empty), so a
/// miss is an absent view and needs no read.
pub(crate) struct ViewCache<P> {
    views: HashMap<String, Cached<P>>,
    complete: bool,
}

struct Cached<P> {
    view: Option<P>,
    dirty: bool,
}

/// Past this many views, clean ones are dropped after each batch.
const CACHE_LIMIT: usize = 200_000;

impl<P> Default for ViewCache<P> {
    fn default() -> Self {
        Self {
            views: HashMap::new(),
            complete: false,
        }
    }
}

impl<P: Projection> ViewCache<P> {
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

    /// The changed views as JSON, marking them clean.
    pub(crate) fn take_changes(&mut self) -> Result<Vec<(String, Option<String>)>, ViewError> {
        let mut changes = Vec::new();
        for (view_id, cached) in &mut self.views {
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
        if self.views.len() > CACHE_LIMIT {
            self.views.clear();
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
                dirty: false,
            });
        cached.dirty = true;
        Ok(cached.view.get_or_insert_with(P::default))
    }

    /// Sets the view `view_id`, replacing any.
    pub fn insert(&mut self, view_id: impl Into<String>, view: P) {
        self.cache.views.insert(
            view_id.into(),
            Cached {
                view: Some(view),
                dirty: true,
            },
        );
    }

    /// Deletes the view `view_id`.
    pub fn remove(&mut self, view_id: &str) {
        self.cache.views.insert(
            view_id.to_owned(),
            Cached {
                view: None,
                dirty: true,
            },
        );
    }

    /// Brings `view_id` into the cache (as absent when there is none).
    async fn fetch(&mut self, view_id: &str) -> Result<(), ViewError> {
        if self.cache.views.contains_key(view_id) {
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
            .views
            .insert(view_id.to_owned(), Cached { view, dirty: false });
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
