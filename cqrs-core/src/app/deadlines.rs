//! Firing due deadlines: each is decided by its aggregate's `#[deadline]`
//! handler, like a command, and appended with the deadline consumed in the
//! same batch, so a deadline fired by two nodes at once, fired again after
//! a crash, or cancelled while it was being fired takes effect once or not
//! at all (a process manager's: `process_deadlines`). And what an operator
//! sees and does: the status, the list, a cancel or a retry.

use std::any::TypeId;
use std::collections::VecDeque;
use std::fmt;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use uuid::Uuid;

use super::command::{Attempt, Working};
use super::hosting::Hosting;
use super::{Cqrs, ProcessManager, process_deadlines};
use crate::aggregate::Aggregate;
use crate::deadline::DeadlineContext;
use crate::error::CommandError;
use crate::future::{BoxFuture, JoinAll};
use crate::processor::{Processor, ProcessorKind};
use crate::registry::{DeadlineHandler, DeadlineRegistration};
use crate::store::{
    DeadlineChanges, DeadlineCounts, DeadlineFailure, DeadlineFilter, DeadlineWrite, DueQuery,
    ScheduledDeadline, StoreError, StoredDeadline,
};

/// How many due deadlines one read of [`Deadlines::fire_due`] takes.
const PAGE: usize = 256;

/// How many streams' deadlines fire at once.
const CONCURRENT_STREAMS: usize = 32;

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
    /// app hosts, earliest first (each aggregate's in order, up to 32
    /// aggregates' at once): each through its aggregate's `#[deadline]`
    /// handler, whose decision is appended with the deadline consumed. A
    /// deadline cancelled, scheduled again or fired elsewhere meanwhile is
    /// [gone](FiredDeadlines::gone), a no-op.
    ///
    /// A handler that fails is tried again after a pause that doubles from
    /// the app's [`RetryPolicy`](crate::processor::RetryPolicy) `first_delay`
    /// up to its `max_delay`, and after `max_attempts` the deadline is
    /// parked until [`retry`](Self::retry). A database that is unavailable
    /// counts no attempt.
    ///
    /// [`Processors::run`](crate::processor::Processors::run) calls this for
    /// the segments this node owns (processor `cqrs.deadlines`); call it
    /// yourself in an app that runs no processors. Several instances may
    /// call it at once: each deadline takes effect once.
    pub async fn fire_due(self) -> Result<FiredDeadlines, StoreError> {
        let mut report = FiredDeadlines::default();
        while self.app.fire_page(None, &mut report).await? {}
        Ok(report)
    }

    /// The pending deadlines of aggregate `A` with id `aggregate_id`,
    /// parked ones too, earliest due first.
    pub async fn pending<A: Aggregate>(
        self,
        aggregate_id: &str,
    ) -> Result<Vec<StoredDeadline>, StoreError> {
        self.app
            .inner
            .store
            .load_deadlines(A::NAME, aggregate_id)
            .await
    }

    /// Fires a pending deadline of aggregate `A` (a parked one too) again
    /// as soon as it can, its failed attempts forgotten. False if it is no
    /// longer pending.
    pub async fn retry<A: Aggregate>(
        self,
        aggregate_id: &str,
        deadline_id: Uuid,
    ) -> Result<bool, StoreError> {
        self.retry_of(A::NAME, aggregate_id, deadline_id).await
    }

    /// [`retry`](Self::retry) for any owner, named by its type (an
    /// aggregate type or a process manager's name) and id.
    pub async fn retry_of(
        self,
        owner_type: &str,
        owner_id: &str,
        deadline_id: Uuid,
    ) -> Result<bool, StoreError> {
        let now = self.app.inner.clock.now();
        self.app
            .inner
            .store
            .retry_deadline(owner_type, owner_id, deadline_id, now)
            .await
    }

    /// The pending deadlines of any owner the filter selects, parked ones
    /// too, earliest due first.
    pub async fn list(self, filter: DeadlineFilter) -> Result<Vec<StoredDeadline>, StoreError> {
        self.app.inner.store.deadlines(filter).await
    }

    /// Cancels, as an operator, the pending deadline `name` (and `key`) of
    /// an owner (an aggregate type or a process manager's name, and its
    /// id): what its own handlers would do returning `Cancel`. A deadline
    /// being fired is not cancelled: its fire goes on.
    pub async fn cancel(
        self,
        owner_type: &str,
        owner_id: &str,
        name: &str,
        key: &str,
    ) -> Result<Cancelled, StoreError> {
        let store = &self.app.inner.store;
        let find = || async {
            let pending = store.load_deadlines(owner_type, owner_id).await?;
            Ok::<_, StoreError>(
                pending
                    .into_iter()
                    .find(|stored| stored.deadline.name == name && stored.deadline.key == key),
            )
        };
        let Some(before) = find().await? else {
            return Ok(Cancelled::NotPending);
        };
        let changes = DeadlineChanges {
            owner_type: owner_type.to_owned(),
            owner_id: owner_id.to_owned(),
            origin: None,
            writes: vec![DeadlineWrite::Cancel {
                name: name.to_owned(),
                key: key.to_owned(),
            }],
        };
        store.change_deadlines(changes).await?;
        Ok(match find().await? {
            Some(after) if after.deadline.deadline_id == before.deadline.deadline_id => {
                Cancelled::Firing
            }
            _ => Cancelled::Cancelled(Box::new(before)),
        })
    }

    /// Where the deadlines of the owners this app hosts stand: counted in
    /// the store (every row: not for every request), and what this app
    /// fired since it was built, with the lag of its last 10,000 fires.
    pub async fn status(self) -> Result<DeadlineStatus, StoreError> {
        let inner = &self.app.inner;
        let now = inner.clock.now();
        let owners = self.app.owner_types();
        let counts = inner.store.deadline_counts(now, Some(owners)).await?;
        let overdue = counts
            .earliest_due
            .and_then(|due| (now - due).to_std().ok())
            .unwrap_or_default();
        Ok(inner.deadline_stats.status(counts, overdue))
    }
}

/// What [`Deadlines::cancel`] did.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Cancelled {
    /// It was pending and is cancelled.
    Cancelled(Box<StoredDeadline>),
    /// None of that name and key is pending: fired, cancelled, or never
    /// scheduled.
    NotPending,
    /// It is being fired (a process manager's, claimed): not cancelled.
    Firing,
}

/// Where an app's deadlines stand ([`Deadlines::status`]).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct DeadlineStatus {
    /// The store's counts, of the owners the app hosts.
    pub counts: DeadlineCounts,
    /// How long the earliest pending deadline has been due (zero if none
    /// is): the firing lag as it stands.
    pub overdue: Duration,
    /// Deadlines this app fired (their handlers decided and it recorded
    /// the outcome).
    pub fired: u64,
    /// Deadlines this app found gone when it fired them: cancelled,
    /// scheduled again, or fired by another node.
    pub gone: u64,
    /// Fires of this app that failed (each an attempt, or an outage).
    pub failed: u64,
    /// From due to handled, over this app's last 10,000 fires; `None`
    /// before the first.
    pub lag: Option<FiringLag>,
}

/// Percentiles of the time from a deadline's due time to its fire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct FiringLag {
    /// Half the fires were at most this late.
    pub p50: Duration,
    /// 99% were at most this late.
    pub p99: Duration,
    /// The latest.
    pub max: Duration,
}

/// How many fire lags [`FireStats`] keeps.
const LAGS_KEPT: usize = 10_000;

/// What this app's fires came to, for [`Deadlines::status`].
#[derive(Debug, Default)]
pub(super) struct FireStats(Mutex<Recorded>);

#[derive(Debug, Default)]
struct Recorded {
    fired: u64,
    gone: u64,
    failed: u64,
    /// The last fires' lags, oldest first.
    lags: VecDeque<Duration>,
}

impl FireStats {
    fn record(&self, outcome: &FireOutcome, lag: Duration) {
        let mut recorded = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        match outcome {
            FireOutcome::Fired => {
                recorded.fired += 1;
                if recorded.lags.len() == LAGS_KEPT {
                    recorded.lags.pop_front();
                }
                recorded.lags.push_back(lag);
            }
            FireOutcome::Gone => recorded.gone += 1,
            FireOutcome::Failed(_) | FireOutcome::Outage(_) => recorded.failed += 1,
        }
    }

    fn status(&self, counts: DeadlineCounts, overdue: Duration) -> DeadlineStatus {
        let recorded = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let mut lags: Vec<Duration> = recorded.lags.iter().copied().collect();
        lags.sort_unstable();
        let at = |quantile: f64| {
            // Nearest rank.
            let rank = (quantile * lags.len() as f64).ceil() as usize;
            lags[rank.clamp(1, lags.len()) - 1]
        };
        let lag = (!lags.is_empty()).then(|| FiringLag {
            p50: at(0.5),
            p99: at(0.99),
            max: lags[lags.len() - 1],
        });
        DeadlineStatus {
            counts,
            overdue,
            fired: recorded.fired,
            gone: recorded.gone,
            failed: recorded.failed,
            lag,
        }
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
    /// Deadlines whose fire failed; they stay pending.
    pub failed: Vec<FailedDeadline>,
}

/// A deadline that could not be fired, and why.
#[derive(Debug)]
#[non_exhaustive]
pub struct FailedDeadline {
    /// The deadline, as it was read before the fire.
    pub deadline: StoredDeadline,
    /// What went wrong.
    pub error: String,
    /// When it is fired again: `None` if it was parked (after the retry
    /// policy's attempts), or if the database failed (it stays due).
    pub retry_at: Option<DateTime<Utc>>,
}

/// What firing one deadline came to.
#[derive(Debug)]
pub(crate) enum FireOutcome {
    Fired,
    Gone,
    /// The handler failed, or something it needs: an attempt.
    Failed(String),
    /// The database was unavailable: no attempt.
    Outage(String),
}

impl FireOutcome {
    /// The outcome as the metrics name it.
    fn label(&self) -> &'static str {
        match self {
            FireOutcome::Fired => "fired",
            FireOutcome::Gone => "gone",
            FireOutcome::Failed(_) => "failed",
            FireOutcome::Outage(_) => "outage",
        }
    }
}

impl Cqrs {
    /// The types of the deadline owners this app hosts.
    pub(super) fn owner_types(&self) -> Vec<String> {
        self.inner
            .deadline_owners
            .iter()
            .map(|owner| owner.aggregate.to_owned())
            .collect()
    }

    /// Fires one page of the due deadlines of the aggregates this app
    /// hosts (of one segment, when given), adding what happened to
    /// `report`; true if there may be more due.
    pub(crate) async fn fire_page(
        &self,
        segment: Option<(u32, u32)>,
        report: &mut FiredDeadlines,
    ) -> Result<bool, StoreError> {
        let owners = &self.inner.deadline_owners;
        if owners.is_empty() {
            return Ok(false);
        }
        let now = self.inner.clock.now();
        let mut query = DueQuery::new(now, PAGE).of(owners.iter().map(|owner| owner.aggregate));
        query.segment = segment;
        let due = self.inner.store.due_deadlines(query).await?;
        let full = due.len() == PAGE;
        // One stream's deadlines in due order, the streams side by side, so
        // their appends share the store's group commits.
        let mut streams: Vec<Vec<StoredDeadline>> = Vec::new();
        for deadline in due {
            let stream = streams.iter_mut().find(|stream| {
                stream[0].aggregate_type == deadline.aggregate_type
                    && stream[0].aggregate_id == deadline.aggregate_id
            });
            match stream {
                Some(stream) => stream.push(deadline),
                None => streams.push(vec![deadline]),
            }
        }
        let fired = Mutex::new(Vec::new());
        for wave in streams.chunks(CONCURRENT_STREAMS) {
            let fires: Vec<BoxFuture<'_, ()>> = wave
                .iter()
                .map(|stream| {
                    let fired = &fired;
                    Box::pin(async move {
                        for deadline in stream {
                            let outcome = match owners
                                .iter()
                                .find(|owner| owner.aggregate == deadline.aggregate_type)
                            {
                                Some(owner) => (owner.fire)(self, deadline.clone()).await,
                                None => continue,
                            };
                            fired
                                .lock()
                                .unwrap_or_else(PoisonError::into_inner)
                                .push((deadline.clone(), outcome));
                        }
                    }) as BoxFuture<'_, ()>
                })
                .collect();
            JoinAll(fires).await;
        }
        let mut outage = false;
        let done = self.inner.clock.now();
        for (deadline, outcome) in fired.into_inner().unwrap_or_else(PoisonError::into_inner) {
            let lag = (done - deadline.deadline.due_at)
                .to_std()
                .unwrap_or_default();
            self.inner.deadline_stats.record(&outcome, lag);
            crate::telemetry::deadline_fired(&deadline.aggregate_type, outcome.label(), lag);
            match outcome {
                FireOutcome::Fired => report.fired += 1,
                FireOutcome::Gone => report.gone += 1,
                FireOutcome::Failed(error) => {
                    let retry_at = self.failed(&deadline, &error, now).await?;
                    report.failed.push(FailedDeadline {
                        deadline,
                        error,
                        retry_at,
                    });
                }
                FireOutcome::Outage(error) => {
                    outage = true;
                    report.failed.push(FailedDeadline {
                        deadline,
                        error,
                        retry_at: None,
                    });
                }
            }
        }
        // Deadlines that met an outage are still due: not read again now.
        Ok(full && !outage)
    }

    /// Records a failed fire: tried again after the retry policy's pause,
    /// or parked after its last attempt. Returns when it is tried again.
    async fn failed(
        &self,
        deadline: &StoredDeadline,
        error: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<DateTime<Utc>>, StoreError> {
        let policy = self.inner.processors.retry_policy();
        let attempts = deadline.attempts + 1;
        let retry_at = (attempts < policy.max_attempts).then(|| {
            let pause = policy.delay(attempts, policy.max_delay);
            now + TimeDelta::from_std(pause).unwrap_or(TimeDelta::MAX)
        });
        if retry_at.is_none() {
            tracing::warn!(
                aggregate_type = deadline.aggregate_type,
                aggregate_id = deadline.aggregate_id,
                deadline = deadline.deadline.name,
                attempts,
                "deadline parked after its last attempt: {error}"
            );
        }
        let failure = DeadlineFailure {
            aggregate_type: deadline.aggregate_type.clone(),
            aggregate_id: deadline.aggregate_id.clone(),
            deadline_id: deadline.deadline.deadline_id,
            error: error.to_owned(),
            retry_at,
        };
        self.inner.store.deadline_failed(failure).await?;
        Ok(retry_at)
    }
}

/// An aggregate or process manager with `#[deadline]` handlers,
/// registered by `#[aggregate_impl]` or `#[process_manager]`: how the app
/// fires its deadlines without naming its type.
#[doc(hidden)]
pub struct DeadlineOwner {
    /// The aggregate type or process manager name its deadlines are kept
    /// under.
    pub(crate) aggregate: &'static str,
    pub(crate) type_id: fn() -> TypeId,
    /// A process manager's: the app fires them if it runs that manager.
    process: bool,
    fire: for<'a> fn(&'a Cqrs, StoredDeadline) -> BoxFuture<'a, FireOutcome>,
}

impl DeadlineOwner {
    /// The registration of aggregate `A`.
    pub const fn of<A: Aggregate>() -> Self {
        Self {
            aggregate: A::NAME,
            type_id: crate::__private::type_id::<A>,
            process: false,
            fire: fire::<A>,
        }
    }

    /// The registration of process manager `M`.
    pub const fn process<M: ProcessManager + Default>() -> Self {
        Self {
            aggregate: M::NAME,
            type_id: crate::__private::type_id::<M>,
            process: true,
            fire: process_deadlines::fire::<M>,
        }
    }
}

impl fmt::Debug for DeadlineOwner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeadlineOwner")
            .field("aggregate", &self.aggregate)
            .field("process", &self.process)
            .finish_non_exhaustive()
    }
}

inventory::collect!(DeadlineOwner);

/// The registered deadline owners this app hosts: the aggregates it
/// hosts, and the process managers among `processors`.
pub(super) fn owners(
    hosting: &Hosting,
    processors: &[Box<dyn Processor>],
) -> Vec<&'static DeadlineOwner> {
    let mut owners: Vec<&'static DeadlineOwner> = Vec::new();
    for owner in inventory::iter::<DeadlineOwner> {
        let hosted = if owner.process {
            processors.iter().any(|processor| {
                processor.kind() == ProcessorKind::ProcessManager
                    && processor.name() == owner.aggregate
            })
        } else {
            hosting.domain_elsewhere((owner.type_id)()).is_none()
        };
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
            Err(CommandError::Store(error)) if error.is_transient() => {
                FireOutcome::Outage(error.to_string())
            }
            Err(error) => FireOutcome::Failed(error.to_string()),
        }
    })
}

/// The `#[deadline]` handler of aggregate `A` for `deadline`, or why
/// there is none that can read it (a redeploy dropped or changed it).
fn handler_of<A: Aggregate>(
    deadline: &ScheduledDeadline,
) -> Result<&'static DeadlineHandler<A>, String> {
    let Some((registration, handler)) = DeadlineRegistration::find::<A>(&deadline.name) else {
        return Err(format!(
            "aggregate {} has no #[deadline] handler for `{}`",
            A::NAME,
            deadline.name
        ));
    };
    if registration.version != deadline.version {
        return Err(format!(
            "deadline `{}` was scheduled at version {}; its handler reads version {}",
            deadline.name, deadline.version, registration.version
        ));
    }
    Ok(handler)
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
        let handler = match handler_of::<A>(&deadline) {
            Ok(handler) => handler,
            Err(error) => return Ok(FireOutcome::Failed(error)),
        };
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
