//! Command middleware: [`CommandLayer`]s that every command passes before
//! its aggregate is loaded, whoever sends it (a request handler, a process
//! manager, a consumer's handler), to authorize it, validate it or add to
//! its metadata.
//!
//! A layer sees a [`CommandRequest`]: the aggregate, the command (typed, by
//! [`CommandRequest::command`]) and its metadata, which it may change. It
//! returns a [`Rejection`] to stop the command: then nothing is loaded or
//! stored, and `execute` returns [`CommandError::Rejected`]. Layers run in
//! the order [`CqrsBuilder::layer`] added them.
//!
//! A process manager's commands carry the metadata values of the event
//! that caused them, so the user or tenant a request's layer recorded
//! reaches the commands the request causes, and the same layer authorizes
//! them.
//!
//! These are not `tower` layers. A tower `Service` has one request and one
//! response type, and it would wrap the whole command, load and append
//! included; our commands are a different type per aggregate, and a
//! command's outcome is typed by its aggregate, so a tower stack would see
//! both only as `dyn Any`. What these layers need is one step before the
//! load, which a trait says directly. An HTTP service keeps `tower` for
//! what is HTTP's (timeouts, limits, tracing of requests) and puts who the
//! caller is into the metadata these layers read.
//!
//! [`CommandError::Rejected`]: crate::CommandError::Rejected
//! [`CqrsBuilder::layer`]: crate::CqrsBuilder::layer
//!
//! # Examples
//!
//! ```
//! use cqrs_core::middleware::{CommandRequest, Rejection};
//!
//! /// Every command needs a user, and `guest` may not send any.
//! fn authorize(request: &mut CommandRequest<'_>) -> Result<(), Rejection> {
//!     match request.metadata().values.get("user").map(String::as_str) {
//!         None => Err(Rejection::Unauthenticated("no user".into())),
//!         Some("guest") => Err(Rejection::Forbidden(format!(
//!             "guests may not send {}",
//!             request.command_name()
//!         ))),
//!         Some(_) => Ok(()),
//!     }
//! }
//!
//! let app = cqrs_core::Cqrs::builder(cqrs_core::MemoryStore::new())
//!     .layer(authorize)
//!     .build()?;
//! # Ok::<_, cqrs_core::BuildError>(())
//! ```

use std::any::Any;

use crate::envelope::Metadata;
use crate::future::BoxFuture;

/// A step every command passes before its aggregate is loaded.
///
/// Any `Fn(&mut CommandRequest) -> Result<(), Rejection>` is a layer; a
/// layer that waits (for a permission service, say) implements the trait.
pub trait CommandLayer: Send + Sync + 'static {
    /// Lets the command go on, with its metadata as the layer left it, or
    /// rejects it.
    fn before<'a, 'r>(
        &'a self,
        request: &'a mut CommandRequest<'r>,
    ) -> BoxFuture<'a, Result<(), Rejection>>;
}

impl<F> CommandLayer for F
where
    F: Fn(&mut CommandRequest<'_>) -> Result<(), Rejection> + Send + Sync + 'static,
{
    fn before<'a, 'r>(
        &'a self,
        request: &'a mut CommandRequest<'r>,
    ) -> BoxFuture<'a, Result<(), Rejection>> {
        let decided = self(request);
        Box::pin(std::future::ready(decided))
    }
}

/// A command on its way to its aggregate, as a [`CommandLayer`] sees it.
pub struct CommandRequest<'r> {
    pub(crate) aggregate_type: &'static str,
    pub(crate) aggregate_id: &'r str,
    pub(crate) command_name: &'static str,
    /// Held mutably only so that a request is `Send` without the command
    /// being `Sync`; layers get it shared, by [`command`](Self::command).
    pub(crate) command: &'r mut (dyn Any + Send),
    pub(crate) metadata: &'r mut Metadata,
}

impl CommandRequest<'_> {
    /// The stored name of the aggregate type it targets.
    pub fn aggregate_type(&self) -> &'static str {
        self.aggregate_type
    }

    /// The id of the aggregate it targets.
    pub fn aggregate_id(&self) -> &str {
        self.aggregate_id
    }

    /// The Rust name of the command type, such as `PlaceOrder`.
    pub fn command_name(&self) -> &'static str {
        self.command_name
    }

    /// The command, if it is of the aggregate's command enum `C`: match
    /// on its variants to validate it.
    pub fn command<C: 'static>(&self) -> Option<&C> {
        (*self.command).downcast_ref()
    }

    /// The metadata every event of the command will carry.
    pub fn metadata(&self) -> &Metadata {
        self.metadata
    }

    /// The metadata, to add to (a user, a tenant, a request id).
    pub fn metadata_mut(&mut self) -> &mut Metadata {
        self.metadata
    }
}

impl std::fmt::Debug for CommandRequest<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommandRequest")
            .field("aggregate_type", &self.aggregate_type)
            .field("aggregate_id", &self.aggregate_id)
            .field("command_name", &self.command_name)
            .field("metadata", &self.metadata)
            .finish_non_exhaustive()
    }
}

/// Why a [`CommandLayer`] stopped a command. Nothing was loaded or stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Rejection {
    /// The command does not say who sends it (HTTP 401).
    #[error("not authenticated: {0}")]
    Unauthenticated(String),
    /// Its sender may not send it (HTTP 403).
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// The command is not valid, whoever sends it (HTTP 422).
    #[error("invalid command: {0}")]
    Invalid(String),
}
