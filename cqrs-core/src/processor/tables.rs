//! [`TableProjectionRunner`]: a table projection as a processor, each
//! segment's batch applied by its handlers inside the transaction that
//! saves the segment's checkpoint.

use std::marker::PhantomData;

use tracing::Instrument;

use super::projection::version_key;
use super::{Failed, Processor, ProcessorError, ProcessorKind, Settled, Step, StepEnv, Work};
use crate::envelope::Envelope;
use crate::future::BoxFuture;
use crate::handler::HandlerError;
use crate::store::ReadLimit;
use crate::view::{TableProjection, TableSchema, Tables, ViewError, ViewTransaction};

/// The most events a table projection's batch applies: its transaction
/// holds the segment's row (and, on SQLite, the file's write lock, which
/// appends to the same file wait for) while its handlers run.
const BATCH_EVENTS: usize = 500;

/// Runs table projection `P`: per segment, opens the batch's transaction
/// under the claim, applies the events after the checkpoint to the
/// projection's tables, and commits them with the checkpoint.
pub(crate) struct TableProjectionRunner<P: TableProjection> {
    key: String,
    _projection: PhantomData<fn() -> P>,
}

impl<P: TableProjection> TableProjectionRunner<P> {
    pub(crate) fn new() -> Self {
        Self {
            key: version_key(P::NAME, P::VERSION),
            _projection: PhantomData,
        }
    }

    async fn run_step(
        &self,
        env: &StepEnv<'_>,
        work: &Work<'_>,
        limit: ReadLimit,
    ) -> Result<Step, Failed> {
        let limit = ReadLimit {
            events: limit.events.min(BATCH_EVENTS),
            ..limit
        };
        let (checkpoint, batch) = work.read(env, limit).await?;
        let Some(last) = batch.last().map(|envelope| envelope.position) else {
            return Ok(Step::Idle(checkpoint));
        };
        let (mine, parked) = work.split(&batch, P::handles);
        if mine.is_empty() {
            return work.advance(env, checkpoint, last, parked).await;
        }
        let failed = |error| Failed::after(checkpoint, error);
        let mut transaction = work.begin(env).await.map_err(failed)?;
        // Moved meanwhile (a reset): the next step starts from there.
        if transaction.checkpoint() != checkpoint {
            return Ok(Step::Advanced(checkpoint));
        }
        self.apply(&mut *transaction, &mine, checkpoint).await?;
        if !parked.is_empty() {
            transaction.park(parked).await.map_err(failed)?;
        }
        transaction.commit(last).await.map_err(failed)?;
        Ok(Step::Advanced(last))
    }

    /// Applies one parked event again and records it handled, in one
    /// transaction with its rows, leaving the checkpoint where it is.
    async fn run_retry(
        &self,
        env: &StepEnv<'_>,
        work: &Work<'_>,
        envelope: &Envelope,
    ) -> Result<(), Failed> {
        let failed = |error| Failed::after(envelope.position, error);
        let mut transaction = work.begin(env).await.map_err(failed)?;
        let checkpoint = transaction.checkpoint();
        self.apply(&mut *transaction, &[envelope], envelope.position)
            .await?;
        transaction
            .settle(envelope.position, Settled::Handled)
            .await
            .map_err(failed)?;
        transaction.commit(checkpoint).await.map_err(failed)
    }

    /// Runs the handlers of `events` in the batch's transaction, whose
    /// other failures are reported after `after`. On an error the caller
    /// drops the transaction, which rolls back every event's rows.
    async fn apply(
        &self,
        transaction: &mut (dyn ViewTransaction + '_),
        events: &[&Envelope],
        after: u64,
    ) -> Result<(), Failed> {
        let failed = |error| Failed::after(after, error);
        transaction.begin_tables().await.map_err(failed)?;
        {
            let Some(connection) = transaction.tables() else {
                return Err(failed(ViewError::Migration {
                    projection: self.key.clone(),
                    reason: "views in memory hold no tables".to_owned(),
                }));
            };
            let mut tables = Tables::new(connection, P::NAME, P::VERSION);
            for &envelope in events {
                let handling = crate::telemetry::handling(P::NAME, envelope);
                if let Err(error) = P::apply(envelope, &mut tables).instrument(handling).await {
                    return Err(Failed::at(
                        envelope,
                        ProcessorError::Handler(classified(error)),
                    ));
                }
            }
        }
        transaction.end_tables().await.map_err(failed)
    }
}

/// A handler's error, with a database error of the driver made the
/// crate's, so that an outage (a lost connection, a deadlock) is retried
/// as one, not counted against the event.
fn classified(error: HandlerError) -> HandlerError {
    #[cfg(any(feature = "sqlite", feature = "postgres"))]
    let error = match error.downcast::<sqlx::Error>() {
        Ok(error) => Box::new(crate::store::database_error(*error)) as HandlerError,
        Err(error) => error,
    };
    error
}

impl<P: TableProjection> Processor for TableProjectionRunner<P> {
    fn name(&self) -> &'static str {
        P::NAME
    }

    fn key(&self) -> &str {
        &self.key
    }

    fn kind(&self) -> ProcessorKind {
        ProcessorKind::Projection
    }

    fn version(&self) -> u32 {
        P::VERSION
    }

    fn segments(&self) -> u32 {
        P::SEGMENTS
    }

    fn tables(&self) -> Option<TableSchema> {
        Some(TableSchema::of::<P>())
    }

    fn step<'a>(
        &'a self,
        env: &'a StepEnv<'a>,
        work: &'a Work<'a>,
        limit: ReadLimit,
    ) -> BoxFuture<'a, Result<Step, Failed>> {
        Box::pin(self.run_step(env, work, limit))
    }

    fn retry<'a>(
        &'a self,
        env: &'a StepEnv<'a>,
        work: &'a Work<'a>,
        envelope: &'a Envelope,
    ) -> BoxFuture<'a, Result<(), Failed>> {
        Box::pin(self.run_retry(env, work, envelope))
    }
}
