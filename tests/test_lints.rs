//! The generated code is lint-clean in a user's crate that denies warnings.

#![deny(
    warnings,
    unused_qualifications,
    missing_docs,
    missing_debug_implementations
)]
#![deny(clippy::all, clippy::pedantic)]
#![allow(clippy::missing_errors_doc, clippy::unused_async, clippy::unused_self)] // lints on the user code itself

use cqrs_core::prelude::*;
use serde::{Deserialize, Serialize};

/// Ring the bell.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Ring {
    /// How many times.
    pub times: u8,
}

/// Bell commands.
#[derive(Debug, Clone, Command)]
pub enum BellCommand {
    /// Ring it.
    Ring(Ring),
}

/// The bell rang.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rang {
    /// How many times.
    pub times: u8,
}

/// The bell was silenced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Silenced;

/// The first version of `Rang`.
#[derive(Debug, Clone, Deserialize)]
pub struct RangOnce;

impl From<RangOnce> for Rang {
    fn from(_: RangOnce) -> Self {
        Rang { times: 1 }
    }
}

/// Bell events.
#[derive(Debug, Clone, PartialEq, Event)]
pub enum BellEvent {
    /// It rang.
    #[event(name = "bell.rang", version = 2, upcast(1 = RangOnce))]
    Rang(Rang),
    /// It was silenced.
    Silenced(Silenced),
}

/// The bell falls silent an hour after it rang.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Deadline)]
#[deadline_type(name = "bell.quiet", version = 2)]
pub struct Quiet {
    /// Which ring it ends.
    pub ring: u32,
}

/// Bell errors.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum BellError {
    /// Too many rings.
    #[error("too loud")]
    TooLoud,
}

/// Dependencies of the bell.
#[derive(Debug)]
pub struct Clock {
    /// The hour.
    pub hour: u8,
}

/// A bell.
#[derive(Debug, Default, Serialize, Deserialize, Aggregate)]
#[aggregate(
    name = "bell",
    command = BellCommand,
    event = BellEvent,
    error = BellError,
    services = Clock,
    snapshot_every = 10,
    snapshot_version = 3
)]
pub struct Bell {
    rung: u32,
}

#[aggregate_impl]
impl Bell {
    #[command_handler(create)]
    async fn ring(
        &self,
        command: Ring,
        context: &CommandContext<'_>,
        clock: &Clock,
    ) -> Result<(Option<BellEvent>, Schedule<Quiet>), BellError> {
        if command.times > 12 || clock.hour < 6 {
            return Err(BellError::TooLoud);
        }
        let quiet = Schedule::after(
            std::time::Duration::from_secs(3600),
            Quiet { ring: self.rung },
        );
        if context.version > 100 {
            return Ok((Some(Silenced.into()), quiet));
        }
        Ok((
            Some(
                Rang {
                    times: command.times,
                }
                .into(),
            ),
            quiet,
        ))
    }

    #[deadline]
    async fn quiet(
        &self,
        deadline: Quiet,
        context: &DeadlineContext<'_>,
        _: &Clock,
    ) -> Result<(Option<Silenced>, Cancel<Quiet>), BellError> {
        let current = deadline.ring == self.rung && context.now() >= context.due_at;
        Ok((current.then_some(Silenced), Cancel::new()))
    }

    #[apply]
    fn rang(&mut self, event: &Rang) {
        self.rung += u32::from(event.times);
    }

    #[apply]
    fn silenced(&mut self, _: &Silenced) {}
}

/// Counts rings.
#[event_handler]
pub async fn count_rings(event: &Rang, envelope: &Envelope<BellEvent>) -> Result<(), BellError> {
    if envelope.sequence == 0 || event.times > 12 {
        return Err(BellError::TooLoud);
    }
    Ok(())
}

/// Rings per bell.
#[derive(Debug, Default, Serialize, Deserialize, Indexed)]
#[indexes(rings)]
pub struct RingCount {
    /// How many rings.
    pub rings: u32,
}

#[projection(name = "ring_count")]
impl RingCount {
    #[event_handler]
    async fn rang(
        event: &Rang,
        envelope: &Envelope,
        views: &mut Views<'_, Self>,
    ) -> Result<(), ViewError> {
        views.get_or_default(&envelope.aggregate_id).await?.rings += u32::from(event.times);
        Ok(())
    }

    #[event_handler]
    fn silenced(_: &Silenced, envelope: &Envelope, views: &mut Views<'_, Self>) {
        views.remove(&envelope.aggregate_id);
    }
}

/// The echo rings once more a minute later.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Deadline)]
pub struct EchoAgain {
    /// How many times.
    pub times: u8,
}

/// Rings a second bell when the first one rings, and again a minute later
/// unless the first is silenced.
#[derive(Debug, Default)]
pub struct Echo;

#[process_manager(name = "echo")]
impl Echo {
    #[event_handler]
    async fn rang(
        &self,
        event: &Rang,
        context: &ProcessContext<'_>,
    ) -> Result<Option<Schedule<EchoAgain>>, String> {
        if context.event().aggregate_id == "echo" {
            return Ok(None);
        }
        context
            .execute("echo", Ring { times: event.times })
            .await
            .map_err(|error| error.to_string())?;
        let again = EchoAgain { times: event.times };
        Ok(Some(Schedule::after(
            std::time::Duration::from_secs(60),
            again,
        )))
    }

    #[event_handler]
    fn silenced(&self, _: &Silenced) -> Cancel<EchoAgain> {
        Cancel::new()
    }

    #[deadline]
    async fn again(
        &self,
        deadline: EchoAgain,
        context: &ProcessContext<'_>,
        due: &DeadlineContext<'_>,
    ) -> Result<(), HandlerError> {
        if due.now() >= due.due_at {
            context
                .execute(
                    "echo",
                    Ring {
                        times: deadline.times,
                    },
                )
                .await?;
        }
        Ok(())
    }
}

/// The bells rung most, as a query by a declared field reads them.
pub async fn loudest(
    views: &ViewStore,
) -> Result<Vec<(String, RingCount)>, cqrs_core::view::QueryError> {
    let page = views
        .query::<RingCount>()
        .order_by(RingCount::FIELDS.rings.desc())
        .limit(3)
        .fetch()
        .await?;
    Ok(page.items)
}

#[test]
fn generated_code_compiles_without_warnings() {
    TestFixture::<Bell>::new()
        .with_services(Clock { hour: 9 })
        .when(Ring { times: 3 })
        .then_expect_events([Rang { times: 3 }])
        .then_expect_state(|bell| assert_eq!(bell.rung, 3));
}
