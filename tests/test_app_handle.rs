//! `Cqrs` is one cheap handle: kept in a web framework's shared state
//! (axum's `State<S>` needs `S: Clone + Send + Sync + 'static`), cloned into
//! every request's task, with futures that are `Send`, and one app behind
//! all the clones.

use std::time::Duration;

use cqrs_core::prelude::*;
use cqrs_examples::bank::*;

/// What axum asks of a router's state.
fn assert_shared_state<S: Clone + Send + Sync + 'static>() {}

/// What `tokio::spawn` and axum ask of a handler's future.
fn assert_send<F: Future + Send>(future: F) -> F {
    future
}

/// The shape of axum's `State` extractor, without axum.
struct State<S>(S);

/// An app's router state: the handle and whatever else requests need.
#[derive(Clone)]
struct AppState {
    app: Cqrs,
}

/// A request handler written as one would for axum.
async fn deposit(State(state): State<AppState>, account: String) -> Result<u64, String> {
    let done = state
        .app
        .execute(&account, DepositMoney { amount: 1 })
        .await
        .map_err(|error| error.to_string())?;
    Ok(done.version)
}

#[test]
fn the_app_handle_is_shared_state() {
    assert_shared_state::<Cqrs>();
    assert_shared_state::<AppState>();
    assert_shared_state::<ViewStore>();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn clones_in_many_tasks_are_one_app() {
    let app = Cqrs::builder(MemoryStore::new())
        .without_event_handlers()
        .without_processors()
        .projection::<Balance>()
        .poll_interval(Duration::from_millis(20))
        .build()
        .unwrap();
    let state = AppState { app: app.clone() };
    app.execute("shared", OpenAccount { owner: "s".into() })
        .await
        .unwrap();
    let running = tokio::spawn(app.processors().run());
    let requests: Vec<_> = (0..8)
        .map(|_| {
            let state = state.clone();
            tokio::spawn(assert_send(async move {
                for _ in 0..25 {
                    deposit(State(state.clone()), "shared".into()).await?;
                }
                Ok::<_, String>(())
            }))
        })
        .collect();
    for request in requests {
        request.await.unwrap().unwrap();
    }
    let account: Account = state.app.load("shared").await.unwrap();
    assert_eq!(account.balance, 200);
    let last = state.app.last_position().await.unwrap();
    state
        .app
        .processors()
        .wait_for::<Balance>(last)
        .await
        .unwrap();
    let view = state.app.views().get::<Balance>("shared").await.unwrap();
    assert_eq!(view.map(|view| view.balance), Some(200));
    app.processors().shutdown().await;
    running.await.unwrap().unwrap();
}
