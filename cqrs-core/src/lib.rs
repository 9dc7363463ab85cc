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
//! appends the events to an [`EventStore`] with optimistic concurrency, and
//! delivers them to every `#[event_handler]` function, which registers itself.
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
//! - `sqlite`: [`SqliteStore`], an event store in a SQLite file (sqlx, bundled SQLite).
//! - `postgres`: [`PostgresStore`], an event store in PostgreSQL (sqlx).

#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

mod aggregate;
mod app;
mod cache;
mod envelope;
mod error;
mod fixture;
mod handler;
mod id;
mod processor;
mod registry;
mod store;
mod view;

#[doc(hidden)]
#[path = "private.rs"]
pub mod __private;

pub use aggregate::{
    Aggregate, ApplyEvent, Command, CommandContext, Decided, Decision, Event, EventPayload,
    EventType, HandleCommand, IntoCommand, IntoDomainError, IntoEvent, IntoEvents, Upcast,
};
pub use app::{Committed, Cqrs, CqrsBuilder, Dispatcher, ExecuteAndWaitError};
pub use envelope::{Envelope, JsonPayload, Metadata, NewEvent};
pub use error::{
    CommandError, DecodeError, HandlerFailure, LoadError, PayloadError, RegistryError,
};
pub use fixture::{TestFixture, TestOutcome};
pub use handler::{HandlerError, HandlerOutcome};
pub use processor::{
    FailureCause, ProcessContext, ProcessManager, ProcessorError, ProcessorFailure, ProcessorKind,
    ProcessorStatus, Processors, RebuildProgress, RetryPolicy, WaitError,
};
pub use registry::{
    AggregateRegistration, EventHandlerRegistration, EventRegistration, ProcessorRegistration,
    Registry,
};
#[cfg(feature = "postgres")]
pub use store::PostgresStore;
#[cfg(feature = "sqlite")]
pub use store::SqliteStore;
pub use store::{
    Conflict, DatabaseError, EventStore, MAX_AGGREGATE_ID_BYTES, MemoryStore, ReadLimit,
    RowLocation, Snapshot, StoreError,
};
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub use store::{InvalidTablePrefix, TablePrefix};
pub use uuid::Uuid;
#[cfg(feature = "postgres")]
pub use view::PostgresViews;
#[cfg(feature = "sqlite")]
pub use view::SqliteViews;
pub use view::{
    BoxFuture, MemoryViews, Projection, ReadModels, ViewError, ViewStore, ViewTransaction, Views,
};

#[cfg(feature = "derive")]
pub use cqrs_derive::{
    Aggregate, Command, Event, aggregate_impl, apply, command_handler, event_handler,
    process_manager, projection,
};

/// What every user of the crate imports: the traits, the macros, the app and
/// the in-memory store.
pub mod prelude {
    pub use crate::{
        Aggregate, Command, CommandContext, CommandError, Cqrs, Envelope, Event, EventStore,
        HandlerError, MemoryStore, Metadata, ProcessContext, ReadModels, TestFixture, ViewError,
        Views,
    };

    #[cfg(feature = "derive")]
    pub use crate::{
        aggregate_impl, apply, command_handler, event_handler, process_manager, projection,
    };
}
