//! The shapes a `#[command_handler]` may take: async, with context and
//! services, returning one event, the enum, a Vec, an array, an Option or
//! nothing, and an error that converts into the aggregate's.

use std::sync::atomic::{AtomicU64, Ordering};

use cqrs_core::BuildError;
use cqrs_core::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Register {
    pub sku: String,
}
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Receive {
    pub units: u32,
}
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Count;
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Audit;
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Split {
    pub units: u32,
}

#[derive(Debug, Clone, Command)]
pub enum StockCommand {
    Register(Register),
    Receive(Receive),
    Count(Count),
    Audit(Audit),
    Split(Split),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Registered {
    pub sku: String,
    pub number: u64,
}
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Received {
    pub units: u32,
    pub at_version: u64,
}
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Counted {
    pub units: u32,
}

#[derive(Debug, Clone, PartialEq, Event)]
pub enum StockEvent {
    Registered(Registered),
    Received(Received),
    Counted(Counted),
}

#[derive(Debug, PartialEq, thiserror::Error)]
#[error("too many units: {0}")]
pub struct TooMany(u32);

#[derive(Debug, PartialEq, thiserror::Error)]
pub enum StockError {
    #[error(transparent)]
    TooMany(#[from] TooMany),
}

/// What the handlers depend on.
#[derive(Debug, Default)]
pub struct Numbering {
    next: AtomicU64,
}

#[derive(Debug, Default, Aggregate)]
#[aggregate(name = "stock", command = StockCommand, event = StockEvent, error = StockError, services = Numbering)]
pub struct Stock {
    units: u32,
}

#[aggregate_impl]
impl Stock {
    #[command_handler(create)]
    async fn register(
        &self,
        command: Register,
        numbering: &Numbering,
    ) -> Result<StockEvent, StockError> {
        tokio::task::yield_now().await;
        let number = numbering.next.fetch_add(1, Ordering::SeqCst);
        Ok(Registered {
            sku: command.sku,
            number,
        }
        .into())
    }

    #[command_handler]
    fn receive(
        &self,
        command: Receive,
        context: &CommandContext<'_>,
    ) -> Result<Option<Received>, TooMany> {
        if command.units > 1_000 {
            return Err(TooMany(command.units));
        }
        Ok((command.units > 0).then_some(Received {
            units: command.units,
            at_version: context.version,
        }))
    }

    #[command_handler]
    fn count(
        &self,
        _: Count,
        context: &CommandContext<'_>,
        _numbering: &Numbering,
    ) -> Result<[Counted; 1], StockError> {
        assert!(!context.aggregate_id.is_empty());
        Ok([Counted { units: self.units }])
    }

    #[command_handler]
    fn audit(&self, _: Audit) -> Result<(), StockError> {
        Ok(())
    }

    #[command_handler]
    fn split(&self, command: Split) -> Result<Vec<Received>, StockError> {
        Ok((0..command.units)
            .map(|_| Received {
                units: 1,
                at_version: 0,
            })
            .collect())
    }

    #[apply]
    fn registered(&mut self, _: &Registered) {}

    #[apply]
    fn received(&mut self, event: &Received) {
        self.units += event.units;
    }

    #[apply]
    fn counted(&mut self, _: &Counted) {}
}

fn app() -> Cqrs {
    Cqrs::builder(MemoryStore::new())
        .without_event_handlers()
        .services::<Stock>(Numbering::default())
        .build()
        .unwrap()
}

#[tokio::test]
async fn async_handlers_get_the_services() {
    let app = app();
    let first = app
        .execute("s-1", Register { sku: "a".into() })
        .await
        .unwrap();
    let second = app
        .execute("s-2", Register { sku: "b".into() })
        .await
        .unwrap();
    let numbers: Vec<_> = [first, second]
        .iter()
        .map(|done| match &done.events[0].payload {
            StockEvent::Registered(registered) => registered.number,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(numbers, [0, 1]);
}

#[tokio::test]
async fn handlers_see_the_context_and_may_return_any_number_of_events() {
    let app = app();
    app.execute("s", Register { sku: "a".into() })
        .await
        .unwrap();
    let done = app.execute("s", Receive { units: 3 }).await.unwrap();
    assert_eq!(
        done.events[0].payload,
        StockEvent::Received(Received {
            units: 3,
            at_version: 1
        })
    );

    let done = app.execute("s", Receive { units: 0 }).await.unwrap();
    assert!(done.events.is_empty(), "None records nothing");
    assert_eq!(done.version, 2);

    let done = app.execute("s", Audit).await.unwrap();
    assert!(done.events.is_empty(), "() records nothing");

    let done = app.execute("s", Split { units: 3 }).await.unwrap();
    assert_eq!(done.events.len(), 3);
    assert_eq!(
        done.events.iter().map(|e| e.sequence).collect::<Vec<_>>(),
        [3, 4, 5]
    );
    assert_eq!(done.version, 5);

    let done = app.execute("s", Count).await.unwrap();
    assert_eq!(
        done.events[0].payload,
        StockEvent::Counted(Counted { units: 6 })
    );
}

#[tokio::test]
async fn a_handler_error_converts_into_the_aggregate_error() {
    let app = app();
    app.execute("s", Register { sku: "a".into() })
        .await
        .unwrap();
    let err = app
        .execute("s", Receive { units: 5_000 })
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            CommandError::Domain(StockError::TooMany(TooMany(5_000)))
        ),
        "{err:?}"
    );
}

/// Services an aggregate declares are checked when the app is built, not
/// when its first command runs.
#[test]
fn an_app_without_the_services_does_not_build() {
    let err = Cqrs::builder(MemoryStore::new())
        .without_event_handlers()
        .build()
        .unwrap_err();
    assert!(
        matches!(
            err,
            BuildError::MissingServices {
                aggregate: "stock",
                services: "Numbering",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains("pass them with `CqrsBuilder::services::<test_command_handlers::Stock>(..)`"),
        "{err}"
    );
}

#[test]
fn the_fixture_passes_services_and_runs_async_handlers() {
    TestFixture::<Stock>::new()
        .with_services(Numbering::default())
        .given_no_events()
        .when(Register { sku: "x".into() })
        .then_expect_events([Registered {
            sku: "x".into(),
            number: 0,
        }]);
}
