//! Firing due deadlines: each is decided by its aggregate's `#[deadline]`
//! handler, like a command, and appended with the deadline consumed in the
//! same batch, so a deadline fired by two nodes at once, fired again after
//! a crash, or cancelled while it was being fired takes effect once or not
//! at all.

use std::any::TypeId;
use std::collections::HashSet;
use std::fmt;

use uuid::Uuid;

use super::Cqrs;
use super::command::{Attempt, Working};
use super::hosting::Hosting;
use crate::aggregate::Aggregate;
use crate::deadline::DeadlineContext;
use crate::error::CommandError;
use crate::future::BoxFuture;
use crate::registry::DeadlineRegistration;
use crate::store::{DeadlineWrite, DueQuery, ScheduledDeadline, StoreError, StoredDeadline};

/// How many due deadlines one read of [`Deadlines::fire_due`] takes.
const PAGE: usize = 256;

/// The app's deadlines ([`Cqrs::deadlines`]): fire those that are due, and
/// read an aggregate's pending ones.
#[derive(Debug, Clone, Copy)]
pub struct Deadlines<'a> {
    app: &'a Cqrs,
}

impl Cqrs {
    /// The deadlines of the aggregates this app hosts.
    pub fn deadlines(&self) -> Deadlines<'_> {
        Deadlines { app: self }
    }
}

impl Deadlines<'_> {
    /// Fires every deadline due by the app's clock, of the aggregates this
    /// app hosts, earliest first: each through its aggregate's `#[deadline]`
    /// handler, whose decision is appended with the deadline consumed. A
    /// deadline cancelled, scheduled again or fired elsewhere meanwhile is
    /// [gone](FiredDeadlines::gone), a no-op. A handler that fails leaves its
    /// deadline pending, to be fired again by the next call.
    ///
    /// Deadlines fire when this is called: call it on a timer, or let
    /// several instances call it at once, each deadline takes effect once.
    pub async fn fire_due(self) -> Result<FiredDeadlines, StoreError> {
        let mut report = FiredDeadlines::default();
        let owners = &self.app.inner.deadline_owners;
        if owners.is_empty() {
            return Ok(report);
        }
        let now = self.app.inner.clock.now();
        let types: Vec<&str> = owners.iter().map(|owner| owner.aggregate).collect();
        let mut failed: HashSet<Uuid> = HashSet::new();
        loop {
            let query = DueQuery::new(now, PAGE + failed.len()).of(types.iter().copied());
            let due = self.app.inner.store.due_deadlines(query).await?;
            let page = due.len();
            let mut fired_any = false;
            for deadline in due {
                let id = deadline.deadline.deadline_id;
                if failed.contains(&id) {
                    continue;
                }
                let Some(owner) = owners
                    .iter()
                    .find(|owner| owner.aggregate == deadline.aggregate_type)
                else {
                    continue;
                };
                fired_any = true;
                match (owner.fire)(self.app, deadline.clone()).await {
                    FireOutcome::Fired => report.fired += 1,
                    FireOutcome::Gone => report.gone += 1,
                    FireOutcome::Failed(error) => {
                        failed.insert(id);
                        report.failed.push(FailedDeadline { deadline, error });
                    }
                }
            }
            if !fired_any || page < PAGE + failed.len() {
                return Ok(report);
            }
        }
    }

    /// The pending deadlines of aggregate `A` with id `aggregate_id`,
    /// earliest first.
    pub async fn pending<A: Aggregate>(
        self,
        aggregate_id: &str,
    ) -> Result<Vec<ScheduledDeadline>, StoreError> {
        self.app
            .inner
            .store
            .load_deadlines(A::NAME, aggregate_id)
            .await
    }
}

/// What one [`Deadlines::fire_due`] did.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct FiredDeadlines {
    /// Deadlines whose handler decided and whose decision was appended.
    pub fired: usize,
    /// Deadlines no longer pending by the time they were fired: cancelled,
    /// scheduled again, or fired by another call.
    pub gone: usize,
    /// Deadlines whose handler (or append) failed; they stay pending.
    pub failed: Vec<FailedDeadline>,
}

/// A deadline that could not be fired, and why.
#[derive(Debug)]
#[non_exhaustive]
pub struct FailedDeadline {
    /// The deadline, still pending.
    pub deadline: StoredDeadline,
    /// What went wrong.
    pub error: String,
}

/// What firing one deadline came to.
#[derive(Debug)]
pub(crate) enum FireOutcome {
    Fired,
    Gone,
    Failed(String),
}

/// An aggregate with `#[deadline]` handlers, registered by
/// `#[aggregate_impl]`: how the app fires its deadlines without naming its
/// type.
#[doc(hidden)]
pub struct DeadlineOwner {
    pub(crate) aggregate: &'static str,
    pub(crate) type_id: fn() -> TypeId,
    fire: for<'a> fn(&'a Cqrs, StoredDeadline) -> BoxFuture<'a, FireOutcome>,
}

impl DeadlineOwner {
    /// The registration of aggregate `A`.
    pub const fn of<A: Aggregate>() -> Self {
        Self {
            aggregate: A::NAME,
            type_id: crate::__private::type_id::<A>,
            fire: fire::<A>,
        }
    }
}

impl fmt::Debug for DeadlineOwner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeadlineOwner")
            .field("aggregate", &self.aggregate)
            .finish_non_exhaustive()
    }
}

inventory::collect!(DeadlineOwner);

/// The registered deadline owners this app hosts, one per aggregate.
pub(super) fn owners(hosting: &Hosting) -> Vec<&'static DeadlineOwner> {
    let mut owners: Vec<&'static DeadlineOwner> = Vec::new();
    for owner in inventory::iter::<DeadlineOwner> {
        let hosted = hosting.domain_elsewhere((owner.type_id)()).is_none();
        if hosted
            && owners
                .iter()
                .all(|known| known.aggregate != owner.aggregate)
        {
            owners.push(owner);
        }
    }
    owners
}

fn fire<A: Aggregate>(app: &Cqrs, deadline: StoredDeadline) -> BoxFuture<'_, FireOutcome> {
    Box::pin(async move {
        match app.fire::<A>(deadline).await {
            Ok(outcome) => outcome,
            Err(error) => FireOutcome::Failed(error.to_string()),
        }
    })
}

/// The command id of a deadline's fire: the same for every attempt, so
/// the events of a fire are recorded once however many try.
fn fire_id(deadline_id: Uuid) -> Uuid {
    let mut bytes = *deadline_id.as_bytes();
    // A fixed mask keeps it apart from the deadline's own id.
    for (byte, mask) in bytes.iter_mut().zip(*b"cqrs.deadline.fi") {
        *byte ^= mask;
    }
    Uuid::new_v8(bytes)
}

impl Cqrs {
    /// Fires one deadline of aggregate `A`: decides with its handler on
    /// the aggregate's state, and appends the decision with the deadline
    /// consumed, deciding again when another writer appended first.
    async fn fire<A: Aggregate>(
        &self,
        due: StoredDeadline,
    ) -> Result<FireOutcome, CommandError<A::Error>> {
        let StoredDeadline {
            aggregate_id,
            deadline,
            ..
        } = due;
        let Some((registration, handler)) = DeadlineRegistration::find::<A>(&deadline.name) else {
            return Ok(FireOutcome::Failed(format!(
                "aggregate {} has no #[deadline] handler for `{}`",
                A::NAME,
                deadline.name
            )));
        };
        if registration.version != deadline.version {
            return Ok(FireOutcome::Failed(format!(
                "deadline `{}` was scheduled at version {}; its handler reads version {}",
                deadline.name, deadline.version, registration.version
            )));
        }
        let runtime = self.runtime::<A>();
        let services = runtime
            .services
            .as_deref()
            .ok_or(CommandError::MissingServices {
                aggregate_type: A::NAME,
            })?;
        let mut metadata = deadline.metadata.clone();
        metadata.causation_id = Some(deadline.deadline_id);
        metadata.command_id = Some(fire_id(deadline.deadline_id));
        metadata.command_digest = None;
        let consumed = DeadlineWrite::Consume {
            name: deadline.name.clone(),
            key: deadline.key.clone(),
            deadline_id: deadline.deadline_id,
        };

        let slot = runtime.cache.slot(&aggregate_id);
        let (mut working, _) = Working::lock(self, &slot, &aggregate_id).await?;
        let mut retries = 0;
        loop {
            let loaded = working.state();
            let context = DeadlineContext {
                aggregate_id: &aggregate_id,
                version: loaded.version,
                key: &deadline.key,
                due_at: deadline.due_at,
                metadata: &metadata,
                clock: &*self.inner.clock,
            };
            let decision =
                (handler.decide)(&loaded.state, &deadline.payload, &context, services).await?;
            let attempt = self
                .append_decision(
                    &runtime,
                    (&aggregate_id, loaded.version),
                    decision,
                    &metadata,
                    Some(consumed.clone()),
                )
                .await;
            match attempt {
                Ok(Attempt::Decided(envelopes)) => {
                    self.commit(working, &aggregate_id, envelopes, retries)
                        .await;
                    return Ok(FireOutcome::Fired);
                }
                Ok(Attempt::Conflict(conflict)) => {
                    runtime.metrics.conflict();
                    working.replay(self, &aggregate_id).await?;
                    if retries == self.inner.max_retries {
                        return Err(CommandError::Conflict {
                            conflict,
                            attempts: retries + 1,
                        });
                    }
                    retries += 1;
                }
                // The fire's command id is recorded: this deadline fired.
                Ok(Attempt::Duplicate)
                | Err(CommandError::Store(StoreError::DeadlineGone { .. })) => {
                    return Ok(FireOutcome::Gone);
                }
                // A fire always appends (at least the consumed deadline).
                Ok(Attempt::Nothing) => {
                    return Ok(FireOutcome::Failed("the fire appended nothing".to_owned()));
                }
                Err(error) => return Err(error),
            }
        }
    }
}
