//! The three backends as the read-side tests use them: a store and its
//! views, shared by every app a test builds on them (a restart, a second
//! node), and `on_every_backend!`, which turns checks generic over the
//! store into one test per backend.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use cqrs_core::{MemoryStore, PostgresStore, SqliteStore, ViewStore};

use super::{TempFile, postgres_store, require, unique_prefix};

/// A store and its views, and whatever must live until the test ends.
pub struct Backend<S> {
    pub store: S,
    pub views: ViewStore,
    reopen: Reopen<S>,
    _guard: Box<dyn std::any::Any + Send>,
}

type Reopen<S> =
    Box<dyn Fn() -> Pin<Box<dyn Future<Output = (S, ViewStore)> + Send>> + Send + Sync>;

impl<S> Backend<S> {
    /// The same data as another process would open it, with connections
    /// of its own (in memory, the same store).
    pub async fn reopen(&self) -> (S, ViewStore) {
        (self.reopen)().await
    }

    /// A store and views the test opened itself; reopening gives them again.
    pub fn of(store: S, views: ViewStore) -> Self
    where
        S: Clone + Send + Sync + 'static,
    {
        let (same_store, same_views) = (store.clone(), views.clone());
        Backend {
            store,
            views,
            reopen: Box::new(move || {
                let both = (same_store.clone(), same_views.clone());
                Box::pin(async move { both })
            }),
            _guard: Box::new(()),
        }
    }
}

pub async fn memory() -> Option<Backend<Arc<MemoryStore>>> {
    Some(Backend::of(
        Arc::new(MemoryStore::new()),
        ViewStore::in_memory(),
    ))
}

pub async fn sqlite() -> Option<Backend<SqliteStore>> {
    let file = TempFile::new("processors");
    let store = SqliteStore::open(file.path()).await.unwrap();
    let path = file.path().to_owned();
    Some(Backend {
        views: store.views(),
        store,
        reopen: Box::new(move || {
            let path = path.clone();
            Box::pin(async move {
                let store = SqliteStore::open(&path).await.unwrap();
                (store.clone(), store.views())
            })
        }),
        _guard: Box::new(file),
    })
}

pub async fn postgres() -> Option<Backend<PostgresStore>> {
    require("CQRS_POSTGRES_URL", |url| async move {
        let prefix = unique_prefix("proc");
        let store = postgres_store(&url, &prefix, 10).await;
        Backend {
            views: store.views(),
            store,
            reopen: Box::new(move || {
                let (url, prefix) = (url.clone(), prefix.clone());
                Box::pin(async move {
                    let store = postgres_store(&url, &prefix, 10).await;
                    (store.clone(), store.views())
                })
            }),
            _guard: Box::new(()),
        }
    })
    .await
}

/// One `#[tokio::test]` per check and backend, in modules `on_memory`,
/// `on_sqlite` and `on_postgres`; each check is an `async fn(Backend<S>)`
/// generic over the store.
#[macro_export]
macro_rules! on_every_backend {
    ($($check:ident),* $(,)?) => {
        $crate::on_every_backend!(@backend on_memory, memory; $($check),*);
        $crate::on_every_backend!(@backend on_sqlite, sqlite; $($check),*);
        $crate::on_every_backend!(@backend on_postgres, postgres; $($check),*);
    };
    (@backend $module:ident, $factory:ident; $($check:ident),*) => {
        mod $module {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                if let Some(backend) = $crate::support::backends::$factory().await {
                    super::$check(backend).await
                }
            })*
        }
    };
}
