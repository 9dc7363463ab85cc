//! Loading an aggregate: from its newest usable snapshot and the events
//! after it; taking snapshots; decoding stored events.

use super::Cqrs;
use crate::aggregate::{Aggregate, Event};
use crate::cache::Loaded;
use crate::envelope::Envelope;
use crate::error::{CommandError, DecodeError, LoadError, PayloadError};
use crate::store::{Snapshot, StoreError};

impl Cqrs {
    /// The aggregate from its newest usable snapshot, if any, and the events
    /// after it.
    pub(super) async fn load_fresh<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<Loaded<A>, ReadError> {
        let start = if A::SNAPSHOT_EVERY > 0 {
            self.restore(aggregate_id).await?
        } else {
            None
        };
        self.replay(aggregate_id, start.unwrap_or_else(Loaded::initial))
            .await
    }

    async fn restore<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<Option<Loaded<A>>, ReadError> {
        let Some(snapshot) = self
            .inner
            .store
            .load_snapshot(A::NAME, aggregate_id)
            .await?
        else {
            return Ok(None);
        };
        if snapshot.schema_version != A::SNAPSHOT_VERSION {
            tracing::debug!(
                aggregate_type = A::NAME,
                aggregate_id,
                found = snapshot.schema_version,
                current = A::SNAPSHOT_VERSION,
                "ignoring a snapshot of another schema version"
            );
            return Ok(None);
        }
        match A::from_snapshot(&snapshot.state) {
            Some(Ok(state)) => Ok(Some(Loaded {
                state,
                version: snapshot.version,
            })),
            Some(Err(error)) => {
                tracing::warn!(
                    aggregate_type = A::NAME,
                    aggregate_id,
                    version = snapshot.version,
                    "ignoring a snapshot that does not decode, replaying the stream: {error}"
                );
                Ok(None)
            }
            None => Ok(None),
        }
    }

    /// Saves the state as a snapshot. A failure only costs a longer replay
    /// later, so it is logged, not returned.
    pub(super) async fn take_snapshot<A: Aggregate>(&self, aggregate_id: &str, loaded: &Loaded<A>) {
        let state = match loaded.state.to_snapshot() {
            Some(Ok(state)) => state,
            Some(Err(error)) => {
                tracing::warn!(
                    aggregate_type = A::NAME,
                    aggregate_id,
                    "cannot serialize a snapshot: {error}"
                );
                return;
            }
            None => return,
        };
        let snapshot = Snapshot {
            aggregate_type: A::NAME.to_owned(),
            aggregate_id: aggregate_id.to_owned(),
            version: loaded.version,
            schema_version: A::SNAPSHOT_VERSION,
            state,
            taken_at: chrono::Utc::now(),
        };
        if let Err(error) = self.inner.store.save_snapshot(snapshot).await {
            tracing::warn!(
                aggregate_type = A::NAME,
                aggregate_id,
                "cannot save a snapshot: {error}"
            );
        }
    }

    /// Applies the events recorded after `loaded.version`.
    pub(super) async fn replay<A: Aggregate>(
        &self,
        aggregate_id: &str,
        mut loaded: Loaded<A>,
    ) -> Result<Loaded<A>, ReadError> {
        self.catch_up(aggregate_id, &mut loaded).await?;
        Ok(loaded)
    }

    /// Applies the events recorded after `loaded.version`, in place. The
    /// state is touched only after the read, one event and its version at a
    /// time, so it matches its version however this ends.
    pub(super) async fn catch_up<A: Aggregate>(
        &self,
        aggregate_id: &str,
        loaded: &mut Loaded<A>,
    ) -> Result<(), ReadError> {
        let envelopes = self
            .inner
            .store
            .load(A::NAME, aggregate_id, loaded.version + 1)
            .await?;
        for envelope in envelopes {
            let event = decode::<A::Event>(&envelope)?;
            loaded.state.apply(&event);
            loaded.version = envelope.sequence;
        }
        Ok(())
    }
}

/// Why replaying a stream failed.
pub(super) enum ReadError {
    Decode(Box<DecodeError>),
    Store(StoreError),
}

impl From<StoreError> for ReadError {
    fn from(error: StoreError) -> Self {
        Self::Store(error)
    }
}

impl From<Box<DecodeError>> for ReadError {
    fn from(error: Box<DecodeError>) -> Self {
        Self::Decode(error)
    }
}

impl<E> From<ReadError> for CommandError<E> {
    fn from(error: ReadError) -> Self {
        match error {
            ReadError::Decode(error) => Self::Decode(error),
            ReadError::Store(error) => Self::Store(error),
        }
    }
}

impl From<ReadError> for LoadError {
    fn from(error: ReadError) -> Self {
        match error {
            ReadError::Decode(error) => Self::Decode(error),
            ReadError::Store(error) => Self::Store(error),
        }
    }
}

/// Decodes a stored envelope's payload into the event enum.
pub(crate) fn decode<E: Event>(envelope: &Envelope) -> Result<E, Box<DecodeError>> {
    E::decode(
        &envelope.event_name,
        envelope.event_version,
        &envelope.payload,
    )
    .map_err(|source| decode_error(envelope, source))
}

/// Why a stored envelope did not read, and where it is.
pub(crate) fn decode_error(envelope: &Envelope, source: PayloadError) -> Box<DecodeError> {
    Box::new(DecodeError {
        aggregate_type: envelope.aggregate_type.clone(),
        aggregate_id: envelope.aggregate_id.clone(),
        sequence: envelope.sequence,
        position: envelope.position,
        event_name: envelope.event_name.clone(),
        event_version: envelope.event_version,
        source,
    })
}
