//! Deadlines: what a decision schedules for later, and cancels.
//!
//! A hold nobody paid for is released after 15 minutes; an order not
//! shipped in 3 days is escalated. A command handler schedules such a
//! deadline by returning [`Schedule`] beside its events, and cancels one by
//! returning [`Cancel`]; when it falls due, the aggregate's `#[deadline]`
//! handler for that type decides, as a command handler does. Both are part
//! of the decision: a command that fails schedules nothing.
//!
//! A deadline is identified by its owner (the aggregate), its type's stored
//! name, and a [key](Schedule::key) (empty unless one owner keeps several
//! deadlines of one type): scheduling it again replaces it, and cancelling
//! one that is not pending (never scheduled, already fired, or cancelled)
//! does nothing.
//!
//! The macros check both directions at compile time: a `Schedule<T>` whose
//! aggregate has no `#[deadline]` handler for `T`, and a `#[deadline]`
//! handler (or a `Cancel<T>`) for a type the aggregate never schedules, are
//! errors at the line to fix.

use std::any::Any;
use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use serde::Serialize;
use serde::de::DeserializeOwned;

use uuid::Uuid;

use crate::clock::Clock;
use crate::envelope::{JsonPayload, Metadata};
use crate::store::{DeadlineWrite, ScheduledDeadline};

/// A value an aggregate schedules for later: what is due, with the data
/// its `#[deadline]` handler needs. Implemented by `#[derive(Deadline)]`,
/// which stores it under the type's name (or `#[deadline_type(name =
/// "..")]`) at version 1 (or `#[deadline_type(version = N)]`).
///
/// # Examples
///
/// ```
/// use cqrs_core::Deadline;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Deadline)]
/// #[deadline_type(name = "shop.order.payment_due")]
/// pub struct PaymentDue {
///     pub order_id: String,
/// }
///
/// assert_eq!(<PaymentDue as Deadline>::NAME, "shop.order.payment_due");
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a deadline",
    label = "not a deadline",
    note = "add `#[derive(Deadline)]` (with serde's `Serialize` and `Deserialize`) to `{Self}`"
)]
pub trait Deadline: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The name pending deadlines of this type are stored under, kept
    /// forever: renaming the Rust type must not change it.
    const NAME: &'static str;

    /// The schema version of the stored value.
    const VERSION: u32;
}

/// When a deadline falls due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// At this time.
    At(DateTime<Utc>),
    /// This long after the decision, by the app's clock.
    After(Duration),
}

impl Due {
    /// The time it falls due for a decision made at `now`, to the
    /// microsecond, the precision every store keeps.
    pub fn resolve(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        let due = match *self {
            Due::At(time) => time,
            Due::After(delay) => TimeDelta::from_std(delay)
                .ok()
                .and_then(|delay| now.checked_add_signed(delay))
                .unwrap_or(DateTime::<Utc>::MAX_UTC),
        };
        DateTime::from_timestamp_micros(due.timestamp_micros()).unwrap_or(due)
    }
}

/// Schedules a deadline of type `T`, returned by a command or `#[deadline]`
/// handler beside its events: `Result<(OrderPlaced, Schedule<PaymentDue>),
/// OrderError>`. It replaces a pending deadline of the same type and key.
///
/// # Examples
///
/// ```
/// # use cqrs_core::Deadline;
/// # use serde::{Deserialize, Serialize};
/// # #[derive(Debug, Clone, Serialize, Deserialize, Deadline)]
/// # pub struct PaymentDue { pub order_id: String }
/// use std::time::Duration;
/// use cqrs_core::Schedule;
///
/// let due = Schedule::after(Duration::from_secs(15 * 60), PaymentDue { order_id: "o-1".into() });
/// assert_eq!(due.deadline().order_id, "o-1");
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule<T> {
    deadline: T,
    due: Due,
    key: String,
    instance: Option<String>,
}

impl<T: Deadline> Schedule<T> {
    /// `deadline`, due at `time`. A time already past falls due at once.
    pub fn at(time: DateTime<Utc>, deadline: T) -> Self {
        Self {
            deadline,
            due: Due::At(time),
            key: String::new(),
            instance: None,
        }
    }

    /// `deadline`, due `delay` after the decision by the app's clock.
    pub fn after(delay: Duration, deadline: T) -> Self {
        Self {
            deadline,
            due: Due::After(delay),
            key: String::new(),
            instance: None,
        }
    }

    /// Tells this deadline apart from others of the same type on the same
    /// owner (one reminder per item, say); without a key an owner has at
    /// most one pending deadline of each type.
    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.key = key.into();
        self
    }

    /// For a process manager: the instance the deadline belongs to (an
    /// order id, say), when it is not the id of the stream whose event the
    /// handler is handling. Scheduling, cancelling and firing are per
    /// instance. An aggregate's deadlines belong to the aggregate: a
    /// command or `#[deadline]` handler that names an instance fails with
    /// [`CommandError::DeadlineInstance`](crate::CommandError::DeadlineInstance).
    pub fn for_instance(mut self, instance: impl Into<String>) -> Self {
        self.instance = Some(instance.into());
        self
    }

    /// The value the `#[deadline]` handler receives.
    pub fn deadline(&self) -> &T {
        &self.deadline
    }

    /// When it falls due.
    pub fn due(&self) -> Due {
        self.due
    }
}

/// Cancels the pending deadline of type `T` (and [key](Self::key)),
/// returned by a handler beside its events. Cancelling one that already
/// fired, or was never scheduled, does nothing.
pub struct Cancel<T> {
    key: String,
    instance: Option<String>,
    deadline: PhantomData<fn() -> T>,
}

impl<T: Deadline> Cancel<T> {
    /// Cancels the deadline of type `T` without a key.
    pub fn new() -> Self {
        Self {
            key: String::new(),
            instance: None,
            deadline: PhantomData,
        }
    }

    /// Cancels the one scheduled with this [`Schedule::key`].
    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.key = key.into();
        self
    }

    /// For a process manager: cancels the one of this instance (see
    /// [`Schedule::for_instance`]).
    pub fn for_instance(mut self, instance: impl Into<String>) -> Self {
        self.instance = Some(instance.into());
        self
    }
}

impl<T: Deadline> Default for Cancel<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> fmt::Debug for Cancel<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cancel")
            .field("deadline", &std::any::type_name::<T>())
            .field("key", &self.key)
            .field("instance", &self.instance)
            .finish()
    }
}

impl<T> Clone for Cancel<T> {
    fn clone(&self) -> Self {
        Self {
            key: self.key.clone(),
            instance: self.instance.clone(),
            deadline: PhantomData,
        }
    }
}

/// One change a decision makes to its owner's deadlines, whatever their
/// type: what [`Schedule`] and [`Cancel`] become in a
/// [`Decision`](crate::Decision).
#[derive(Debug)]
pub enum DeadlineChange {
    /// Schedules a deadline, replacing a pending one of the same name and key.
    Schedule(NewDeadline),
    /// Cancels the pending deadline of this name and key, if there is one.
    Cancel {
        /// The deadline type's stored name.
        name: &'static str,
        /// The key it was scheduled with.
        key: String,
        /// The process manager's instance it belongs to, when named.
        instance: Option<String>,
    },
}

impl DeadlineChange {
    /// The deadline type's stored name.
    pub fn name(&self) -> &'static str {
        match self {
            DeadlineChange::Schedule(deadline) => deadline.name,
            DeadlineChange::Cancel { name, .. } => name,
        }
    }

    /// The key it is scheduled or cancelled with.
    pub fn key(&self) -> &str {
        match self {
            DeadlineChange::Schedule(deadline) => &deadline.key,
            DeadlineChange::Cancel { key, .. } => key,
        }
    }

    /// The process manager's instance it names, if any
    /// ([`Schedule::for_instance`]).
    pub fn instance(&self) -> Option<&str> {
        match self {
            DeadlineChange::Schedule(deadline) => deadline.instance.as_deref(),
            DeadlineChange::Cancel { instance, .. } => instance.as_deref(),
        }
    }

    /// The change as a store writes it: due by the clock at `now`, under
    /// `deadline_id` if it schedules, with the deciding metadata.
    pub(crate) fn into_write(
        self,
        now: DateTime<Utc>,
        deadline_id: Uuid,
        metadata: &Metadata,
    ) -> Result<DeadlineWrite, serde_json::Error> {
        Ok(match self {
            DeadlineChange::Schedule(deadline) => DeadlineWrite::Schedule(ScheduledDeadline {
                payload: deadline.encode()?,
                name: deadline.name.to_owned(),
                key: deadline.key,
                deadline_id,
                due_at: deadline.due.resolve(now),
                version: deadline.version,
                metadata: metadata.clone(),
            }),
            DeadlineChange::Cancel { name, key, .. } => DeadlineWrite::Cancel {
                name: name.to_owned(),
                key,
            },
        })
    }
}

impl<T: Deadline> From<Schedule<T>> for DeadlineChange {
    fn from(schedule: Schedule<T>) -> Self {
        DeadlineChange::Schedule(NewDeadline {
            name: T::NAME,
            version: T::VERSION,
            key: schedule.key,
            instance: schedule.instance,
            due: schedule.due,
            value: Box::new(schedule.deadline),
        })
    }
}

impl<T: Deadline> From<Cancel<T>> for DeadlineChange {
    fn from(cancel: Cancel<T>) -> Self {
        DeadlineChange::Cancel {
            name: T::NAME,
            key: cancel.key,
            instance: cancel.instance,
        }
    }
}

/// A deadline a decision schedules, its type erased.
pub struct NewDeadline {
    name: &'static str,
    version: u32,
    key: String,
    instance: Option<String>,
    due: Due,
    value: Box<dyn AnyDeadline>,
}

impl NewDeadline {
    /// The deadline type's stored name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The schema version of its value.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The key that tells it apart from others of its type.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// When it falls due.
    pub fn due(&self) -> Due {
        self.due
    }

    /// The value as JSON, the form a store keeps.
    pub fn encode(&self) -> Result<JsonPayload, serde_json::Error> {
        self.value.encode()
    }

    /// The value, if it is a `T`.
    pub fn value<T: Deadline>(&self) -> Option<&T> {
        self.value.as_any().downcast_ref()
    }
}

impl fmt::Debug for NewDeadline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let value = self.encode();
        f.debug_struct("NewDeadline")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("key", &self.key)
            .field("instance", &self.instance)
            .field("due", &self.due)
            .field("value", &value)
            .finish()
    }
}

/// A deadline's value behind a box: it encodes itself, and a test can look
/// at it as its own type.
trait AnyDeadline: Send + Sync {
    fn encode(&self) -> Result<JsonPayload, serde_json::Error>;
    fn as_any(&self) -> &dyn Any;
}

impl<T: Deadline> AnyDeadline for T {
    fn encode(&self) -> Result<JsonPayload, serde_json::Error> {
        JsonPayload::encode(self)
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// What a `#[deadline]` handler may ask for by taking `context:
/// &DeadlineContext`: its owner, the metadata the deadline was scheduled
/// with, and when it fell due.
#[derive(Debug, Clone, Copy)]
pub struct DeadlineContext<'a> {
    /// The id of the aggregate that scheduled the deadline, or of the
    /// process manager's instance it belongs to.
    pub aggregate_id: &'a str,
    /// The aggregate's version before this decision (0 for a process
    /// manager's deadline).
    pub version: u64,
    /// The key the deadline was scheduled with (empty by default).
    pub key: &'a str,
    /// When the deadline fell due; [`now`](Self::now) is at or after it.
    pub due_at: DateTime<Utc>,
    /// The metadata of the decision that scheduled it; recorded on every
    /// event this one produces.
    pub metadata: &'a Metadata,
    /// The app's clock.
    pub clock: &'a dyn Clock,
}

impl DeadlineContext<'_> {
    /// The time by the app's clock.
    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }
}
