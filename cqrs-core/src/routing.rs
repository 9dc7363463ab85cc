//! The traits the generated code routes through, one impl per handler:
//! what `#[aggregate_impl]` and the derives implement and the rest of the
//! crate calls. Not public API; their `on_unimplemented` messages are what a
//! user reads when a handler is missing or does not fit.

use std::future::Future;

use crate::aggregate::{Aggregate, CommandContext, Decision, Event};
use crate::deadline::{Cancel, Deadline, DeadlineContext, Schedule};

/// The handler of command `C` on an aggregate; implemented by `#[aggregate_impl]`
/// for each `#[command_handler]` method.
#[diagnostic::on_unimplemented(
    message = "aggregate `{Self}` has no #[command_handler] for `{C}`",
    label = "no #[command_handler] takes `{C}`",
    note = "add `#[command_handler] fn ..(&self, command: {C}) -> Result<.., ..>` to the `#[aggregate_impl]` block of `{Self}`"
)]
pub trait HandleCommand<C>: Aggregate {
    /// True for `#[command_handler(create)]`.
    const CREATES: bool;

    /// Runs the handler and converts what it returns into events: at once
    /// for a plain `fn`, in the returned future for an `async fn`.
    fn handle_command<'a>(
        &'a self,
        command: C,
        context: &'a CommandContext<'a>,
        services: &'a Self::Services,
    ) -> Decided<impl Future<Output = HandlerResult<Self>> + Send + 'a, HandlerResult<Self>>;
}

/// The handler of deadline `D` on an aggregate; implemented by
/// `#[aggregate_impl]` for each `#[deadline]` method.
#[diagnostic::on_unimplemented(
    message = "aggregate `{Self}` schedules `{D}` but has no #[deadline] handler for it",
    label = "no #[deadline] takes `{D}`",
    note = "add `#[deadline] fn ..(&self, deadline: {D}) -> Result<.., ..>` to the `#[aggregate_impl]` block of `{Self}`"
)]
pub trait HandleDeadline<D>: Aggregate {
    /// Runs the handler and converts what it returns into a decision, as
    /// [`HandleCommand::handle_command`] does.
    fn handle_deadline<'a>(
        &'a self,
        deadline: D,
        context: &'a DeadlineContext<'a>,
        services: &'a Self::Services,
    ) -> Decided<impl Future<Output = HandlerResult<Self>> + Send + 'a, HandlerResult<Self>>;
}

/// What a handler decides: the aggregate's events and deadline changes, or
/// its error.
pub type HandlerResult<A> = Result<Decision<<A as Aggregate>::Event>, <A as Aggregate>::Error>;

/// A command handler's decision: made already (a plain `fn` handler), or
/// made by a future (an `async fn` handler). A plain handler's decision is
/// not wrapped in a future, so routing to it costs what a hand-written
/// `match` costs.
#[derive(Debug)]
pub enum Decided<F, T> {
    /// The decision.
    Now(T),
    /// The future that makes it.
    Later(F),
}

/// The handler of event `E` on an aggregate or a decision; implemented by
/// `#[aggregate_impl]` and `#[decision_impl]` for each `#[apply]` method.
#[diagnostic::on_unimplemented(
    message = "`{Self}` has no #[apply] handler for `{E}`, an event it records",
    label = "no #[apply] takes `{E}`",
    note = "add `#[apply] fn ..(&mut self, event: &{E})` to the `#[aggregate_impl]` or `#[decision_impl]` block of `{Self}`"
)]
pub trait ApplyEvent<E> {
    /// Changes the state by one event.
    fn apply_event(&mut self, event: &E);
}

/// What a handler may return on success: an event or the event enum, a
/// `Schedule` or `Cancel` of a deadline, `()` for nothing, and `Vec`s,
/// arrays, `Option`s and tuples of them.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an event of `{E}` or a deadline change, so a handler cannot return it",
    label = "returns `{Self}`",
    note = "return an event struct wrapped by a variant of `{E}`, `{E}` itself, `Schedule<T>` or `Cancel<T>` of a deadline, or a `Vec`, array, `Option` or tuple of them, or `()`"
)]
pub trait IntoDecision<E> {
    /// Adds the events and deadline changes, in order.
    fn into_decision(self, decision: &mut Decision<E>);
}

/// Converts a handler's value into its decision.
#[inline]
pub fn decision<E, T: IntoDecision<E>>(value: T) -> Decision<E> {
    let mut decision = Decision::new();
    value.into_decision(&mut decision);
    decision
}

/// One event struct or the event enum `E`; implemented by `#[derive(Event)]`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an event of `{E}`",
    label = "not an event of `{E}`",
    note = "add a variant wrapping `{Self}` to the event enum `{E}`"
)]
pub trait IntoEvent<E> {
    /// Wraps the value in the event enum.
    fn into_event(self) -> E;
}

impl<E: Event> IntoEvent<E> for E {
    #[inline]
    fn into_event(self) -> E {
        self
    }
}

impl<E: Event> IntoDecision<E> for E {
    #[inline]
    fn into_decision(self, decision: &mut Decision<E>) {
        decision.events.push(self);
    }
}

impl<E> IntoDecision<E> for () {
    #[inline]
    fn into_decision(self, _: &mut Decision<E>) {}
}

impl<E, T: IntoDecision<E>> IntoDecision<E> for Vec<T> {
    #[inline]
    fn into_decision(self, decision: &mut Decision<E>) {
        for value in self {
            value.into_decision(decision);
        }
    }
}

impl<E, T: IntoDecision<E>, const N: usize> IntoDecision<E> for [T; N] {
    #[inline]
    fn into_decision(self, decision: &mut Decision<E>) {
        for value in self {
            value.into_decision(decision);
        }
    }
}

impl<E, T: IntoDecision<E>> IntoDecision<E> for Option<T> {
    #[inline]
    fn into_decision(self, decision: &mut Decision<E>) {
        if let Some(value) = self {
            value.into_decision(decision);
        }
    }
}

impl<E, T: Deadline> IntoDecision<E> for Schedule<T> {
    #[inline]
    fn into_decision(self, decision: &mut Decision<E>) {
        decision.deadlines.push(self.into());
    }
}

impl<E, T: Deadline> IntoDecision<E> for Cancel<T> {
    #[inline]
    fn into_decision(self, decision: &mut Decision<E>) {
        decision.deadlines.push(self.into());
    }
}

/// Tuples, so a handler returns an event and a deadline, `(OrderPlaced,
/// Schedule<PaymentDue>)`, in that order.
macro_rules! tuple_decision {
    ($($name:ident)+) => {
        impl<E, $($name: IntoDecision<E>),+> IntoDecision<E> for ($($name,)+) {
            #[inline]
            #[allow(non_snake_case)]
            fn into_decision(self, decision: &mut Decision<E>) {
                let ($($name,)+) = self;
                $($name.into_decision(decision);)+
            }
        }
    };
}

tuple_decision!(A B);
tuple_decision!(A B C);
tuple_decision!(A B C D);
tuple_decision!(A B C D F);
tuple_decision!(A B C D F G);

/// An error a command handler returns, converted into the aggregate's error.
#[diagnostic::on_unimplemented(
    message = "the error type `{Self}` does not convert into the aggregate error `{T}`",
    label = "`{T}` has no `From<{Self}>`",
    note = "implement `From<{Self}> for {T}` (with thiserror: a variant marked `#[from]`), or return `{T}`"
)]
pub trait IntoDomainError<T> {
    /// Converts the error.
    fn into_domain_error(self) -> T;
}

/// An older version of an event's payload that converts into the current one;
/// `#[event(upcast(1 = Old))]` needs it for `Old`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be upcast into `{T}`",
    label = "no `From<{Self}>` for `{T}`",
    note = "implement `From<{Self}> for {T}`: how a stored `{Self}` reads as the current event"
)]
pub trait Upcast<T> {
    /// Converts the old payload.
    fn upcast(self) -> T;
}

#[diagnostic::do_not_recommend]
impl<T, U: Into<T>> Upcast<T> for U {
    fn upcast(self) -> T {
        self.into()
    }
}

#[diagnostic::do_not_recommend]
impl<T, E: Into<T>> IntoDomainError<T> for E {
    #[inline]
    fn into_domain_error(self) -> T {
        self.into()
    }
}
