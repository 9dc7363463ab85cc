//! What an `#[event_handler]` returns ([`HandlerOutcome`], [`HandlerError`]),
//! and how an inline handler's failure is reported ([`HandlerFailure`]).

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// The type-erased entry point `#[event_handler]` generates: it receives an
/// `&Envelope<E>` for the handler's event enum `E`.
#[doc(hidden)]
pub type HandlerFn = for<'a> fn(&'a (dyn Any + Send + Sync)) -> HandlerFuture<'a>;

/// The error of a failed handler, with its source chain.
pub type HandlerError = Box<dyn std::error::Error + Send + Sync>;

/// What one handler makes of one envelope.
#[doc(hidden)]
pub enum HandlerFuture<'a> {
    /// The envelope holds another event than the handler's.
    Skip,
    /// A synchronous handler ran.
    Ready(Result<(), HandlerError>),
    /// An `async fn` handler, still to be awaited.
    Pending(Pin<Box<dyn Future<Output = Result<(), HandlerError>> + Send + 'a>>),
}

impl fmt::Debug for HandlerFuture<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Skip => f.write_str("Skip"),
            Self::Ready(result) => f.debug_tuple("Ready").field(result).finish(),
            Self::Pending(_) => f.write_str("Pending"),
        }
    }
}

/// What an `#[event_handler]` function may return: `()` or `Result<(), E>`
/// where `E` is an error type (its sources are kept: a process manager whose
/// command failed because the database was down is retried, not stopped) or
/// a `String`.
#[diagnostic::on_unimplemented(
    message = "an #[event_handler] cannot return `{Self}`",
    label = "returns `{Self}`",
    note = "return nothing, or `Result<(), E>` where `E` implements `std::error::Error + Send + Sync` or is a `String`"
)]
pub trait HandlerOutcome {
    /// The failure, if the handler failed.
    fn into_outcome(self) -> Result<(), HandlerError>;
}

impl HandlerOutcome for () {
    fn into_outcome(self) -> Result<(), HandlerError> {
        Ok(())
    }
}

impl<E: Into<HandlerError>> HandlerOutcome for Result<(), E> {
    fn into_outcome(self) -> Result<(), HandlerError> {
        self.map_err(Into::into)
    }
}

/// An inline event handler that failed on a committed event.
///
/// The events stay committed; the failure is returned beside them and logged.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct HandlerFailure {
    /// The handler's path, `module::function`.
    pub handler: String,
    /// The event's id.
    pub event_id: uuid::Uuid,
    /// The stored event name.
    pub event_name: String,
    /// What the handler returned.
    pub error: Arc<dyn std::error::Error + Send + Sync>,
}

impl fmt::Display for HandlerFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "handler {} failed on {} ({}): {}",
            self.handler, self.event_name, self.event_id, self.error
        )
    }
}

impl std::error::Error for HandlerFailure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.error)
    }
}
