//! Event-sourced aggregates whose command and event handlers the compiler checks.
//!
//! A domain is plain structs and enums. `#[derive(Command)]` and
//! `#[derive(Event)]` turn enums of those structs into an aggregate's commands
//! and events; `#[derive(Aggregate)]` and an `#[aggregate_impl]` block of
//! `#[command_handler]` and `#[apply]` methods generate the routing. A command
//! variant with no handler, an event with no `#[apply]`, or a handler that
//! mutates state is a compile error at the line to fix.
//!
//! [`Cqrs`] runs commands: it loads the aggregate, lets the handler decide,
//! and appends the events to an [`EventStore`] with optimistic concurrency.
//! Every `#[event_handler]` function, `#[projection]` and
//! `#[process_manager]` registers itself and follows the log from its own
//! checkpoint ([`Processors`](processor::Processors)), so an event committed before a crash still
//! reaches them; `#[event_handler(inline)]` runs right after the commit
//! instead, at most once. Several instances of an app share the processors'
//! segments, with leases and fencing, and an event whose handler keeps
//! failing is parked while its processor goes on with the other streams.
//!
//! # Examples
//!
//! ```
//! use cqrs_core::prelude::*;
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Debug, Clone, Serialize, Deserialize)]
//! pub struct OpenAccount { pub owner: String }
//! #[derive(Debug, Clone, Serialize, Deserialize)]
//! pub struct DepositMoney { pub amount: u64 }
//!
//! #[derive(Debug, Clone, Command)]
//! pub enum AccountCommand { Open(OpenAccount), Deposit(DepositMoney) }
//!
//! #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
//! pub struct AccountOpened { pub owner: String }
//! #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
//! pub struct MoneyDeposited { pub amount: u64, pub balance: u64 }
//!
//! #[derive(Debug, Clone, PartialEq, Event)]
//! pub enum AccountEvent {
//!     Opened(AccountOpened),
//!     #[event(name = "account.deposited", version = 1)]
//!     Deposited(MoneyDeposited),
//! }
//!
//! #[derive(Debug, PartialEq, thiserror::Error)]
//! pub enum AccountError {
//!     #[error("deposits must be positive")]
//!     EmptyDeposit,
//! }
//!
//! #[derive(Debug, Default, Aggregate)]
//! #[aggregate(name = "account", command = AccountCommand, event = AccountEvent, error = AccountError)]
//! pub struct Account { balance: u64 }
//!
//! #[aggregate_impl]
//! impl Account {
//!     #[command_handler(create)]
//!     fn open(&self, command: OpenAccount) -> Result<AccountOpened, AccountError> {
//!         Ok(AccountOpened { owner: command.owner })
//!     }
//!
//!     #[command_handler]
//!     fn deposit(&self, command: DepositMoney) -> Result<MoneyDeposited, AccountError> {
//!         if command.amount == 0 {
//!             return Err(AccountError::EmptyDeposit);
//!         }
//!         Ok(MoneyDeposited { amount: command.amount, balance: self.balance + command.amount })
//!     }
//!
//!     #[apply]
//!     fn opened(&mut self, _: &AccountOpened) {}
//!
//!     #[apply]
//!     fn deposited(&mut self, event: &MoneyDeposited) {
//!         self.balance = event.balance;
//!     }
//! }
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let app = Cqrs::new(MemoryStore::new())?;
//! app.execute("acc-1", OpenAccount { owner: "ada".into() }).await?;
//! let done = app.execute("acc-1", DepositMoney { amount: 100 }).await?;
//! assert_eq!(done.version, 2);
//!
//! let err = app.execute("acc-1", DepositMoney { amount: 0 }).await.unwrap_err();
//! assert!(matches!(err, CommandError::Domain(AccountError::EmptyDeposit)));
//!
//! let account: Account = app.load("acc-1").await?;
//! assert_eq!(account.balance, 100);
//! # Ok::<_, Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```
//!
//! # Features
//!
//! - `derive` (default): the macros, re-exported from `cqrs-derive`.
//! - `sqlite`: `SqliteStore`, an event store in a SQLite file (sqlx, bundled SQLite).
//! - `postgres`: `PostgresStore`, an event store in PostgreSQL (sqlx).
//! - `rabbitmq`: [`broker::RabbitMq`], a gateway and consumer on RabbitMQ (lapin).
//! - `nats`: [`broker::JetStream`], a gateway and consumer on NATS JetStream (async-nats).
//!
//! # Modules
//!
//! The root holds what an application uses every day; the modules hold the
//! rest: [`store`] (backends, their options and errors), [`view`] (view
//! backends), [`processor`] (status, failures, retries, runs), [`handler`]
//! (what handlers return), [`registry`] (what the macros registered),
//! [`testing`] ([`TestFixture`](testing::TestFixture),
//! [`ProcessFixture`](testing::ProcessFixture)).

#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

mod aggregate;
mod app;
pub mod boundary;
pub mod broker;
mod cache;
mod clock;
mod database;
mod deadline;
mod decision_model;
mod domain;
mod envelope;
mod error;
mod future;
pub mod handler;
mod id;
pub mod middleware;
pub mod processor;
pub mod registry;
mod routing;
pub mod store;
pub mod telemetry;
pub mod testing;
pub mod view;

#[doc(hidden)]
#[path = "private.rs"]
pub mod __private;

pub use aggregate::{
    Aggregate, Command, CommandContext, Decision, Event, EventPayload, IntoCommand,
};
pub use app::{
    BuildError, Cancelled, Committed, Cqrs, CqrsBuilder, DeadlineStatus, Deadlines,
    ExecuteAndWaitError, FailedDeadline, FiredDeadlines, FiringLag, ProcessContext, ProcessManager,
    SentCommand,
};
pub use clock::{Clock, SystemClock, TestClock};
pub use deadline::{Cancel, Deadline, DeadlineChange, DeadlineContext, Due, NewDeadline, Schedule};
pub use decision_model::{Applied, DecisionModel};
pub use domain::Domain;
pub use envelope::{Envelope, JsonPayload, Metadata};
pub use error::{CommandError, DecodeError, LoadError, PayloadError};
pub use future::BoxFuture;
/// The SQL driver of the SQLite and PostgreSQL stores, for a
/// [`TableProjection`]'s handlers: its connections are the ones they get.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub use sqlx;
#[cfg(feature = "postgres")]
pub use store::PostgresStore;
#[cfg(feature = "sqlite")]
pub use store::SqliteStore;
pub use store::{EventStore, MemoryStore, StoreError};
pub use uuid::Uuid;
pub use view::{Indexed, Projection, TableProjection, Tables, ViewError, ViewStore, Views};

#[cfg(feature = "derive")]
pub use cqrs_derive::{
    Aggregate, Command, Deadline, DecisionModel, Domain, Event, Indexed, aggregate_impl, apply,
    command_handler, deadline, decision_impl, event_handler, process_manager, projection,
};

/// What every user of the crate imports: the traits, the macros, the app and
/// the in-memory store.
pub mod prelude {
    pub use crate::handler::HandlerError;
    pub use crate::testing::TestFixture;
    pub use crate::{
        Aggregate, Cancel, Command, CommandContext, CommandError, Cqrs, Deadline, DeadlineContext,
        DecisionModel, Domain, Envelope, Event, EventStore, Indexed, MemoryStore, Metadata,
        ProcessContext, Schedule, Tables, ViewError, ViewStore, Views,
    };

    #[cfg(feature = "derive")]
    pub use crate::{
        aggregate_impl, apply, command_handler, deadline, decision_impl, event_handler,
        process_manager, projection,
    };
}
