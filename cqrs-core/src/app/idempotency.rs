//! Idempotent commands: a command with a [`Metadata::command_id`] runs once
//! per stream, and sending it again answers what its first run recorded, read
//! by the store's command index. A digest of the command, recorded beside
//! its events, tells a retry from another command sent with the same id.

use uuid::Uuid;

use super::replay::decode;
use super::{Committed, Cqrs};
use crate::aggregate::{Aggregate, Command};
use crate::envelope::{Envelope, JsonPayload, Metadata};
use crate::error::CommandError;

/// The namespace of command digests: UUIDv5 of a command's name and its
/// JSON with sorted keys.
const DIGESTS: Uuid = Uuid::from_u128(0x3c1b_7e52_90d4_4f6a_8e21_5b0c_9d7f_a614);

/// Whether a command id sent again with another command is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reuse {
    /// As for a caller's command: the digest tells a retry from another
    /// command, which is `CommandError::CommandIdReused`.
    Refused,
    /// As for a process manager's command, whose id is derived from the
    /// event and the order it sends its commands in: a repeat is that
    /// command, even if the manager decides otherwise on its second run,
    /// and answers the first outcome.
    Answered,
}

/// Sets `metadata.command_digest` for a command with a command id whose
/// reuse is refused, and clears it otherwise (a caller may have copied one
/// from another event).
pub(super) fn stamp<C: Command, E>(
    command: &C,
    metadata: &mut Metadata,
    reuse: Reuse,
) -> Result<(), CommandError<E>> {
    metadata.command_digest = match (metadata.command_id, reuse) {
        (Some(_), Reuse::Refused) => {
            Some(
                digest(command).map_err(|source| CommandError::EncodeCommand {
                    command: command.name(),
                    source,
                })?,
            )
        }
        _ => None,
    };
    Ok(())
}

/// The digest of a command: its Rust name and its JSON, the keys of every
/// object sorted, so a map field serialized in another order is the same
/// command.
fn digest<C: Command>(command: &C) -> Result<Uuid, serde_json::Error> {
    let json: serde_json::Value = command.encode()?.decode()?;
    let mut bytes = Vec::with_capacity(64);
    bytes.extend_from_slice(command.name().as_bytes());
    bytes.push(b'\n');
    canonical(&json, &mut bytes)?;
    Ok(Uuid::new_v5(&DIGESTS, &bytes))
}

/// Writes `value` as JSON with the keys of every object in sorted order,
/// whatever order the map keeps them in.
fn canonical(value: &serde_json::Value, out: &mut Vec<u8>) -> Result<(), serde_json::Error> {
    match value {
        serde_json::Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
            out.push(b'{');
            for (n, (key, value)) in entries.into_iter().enumerate() {
                if n > 0 {
                    out.push(b',');
                }
                serde_json::to_writer(&mut *out, key)?;
                out.push(b':');
                canonical(value, out)?;
            }
            out.push(b'}');
        }
        serde_json::Value::Array(items) => {
            out.push(b'[');
            for (n, item) in items.iter().enumerate() {
                if n > 0 {
                    out.push(b',');
                }
                canonical(item, out)?;
            }
            out.push(b']');
        }
        scalar => serde_json::to_writer(&mut *out, scalar)?,
    }
    Ok(())
}

impl Cqrs {
    /// What the command with `metadata.command_id` recorded on the stream
    /// when it first ran, if it did: its events, decoded, and the version
    /// after them. A command id recorded with another command is
    /// [`CommandError::CommandIdReused`].
    pub(super) async fn first_outcome<A: Aggregate>(
        &self,
        aggregate_id: &str,
        command: &A::Command,
        metadata: &Metadata,
    ) -> Result<Option<Committed<A::Event>>, CommandError<A::Error>> {
        let Some(command_id) = metadata.command_id else {
            return Ok(None);
        };
        let recorded = self
            .inner
            .store
            .load_command(A::NAME, aggregate_id, command_id)
            .await
            .map_err(CommandError::Store)?;
        answer::<A>(aggregate_id, command, metadata, command_id, recorded)
    }
}

/// The first outcome of a command from the events its id recorded: `None`
/// when there are none.
fn answer<A: Aggregate>(
    aggregate_id: &str,
    command: &A::Command,
    metadata: &Metadata,
    command_id: Uuid,
    recorded: Vec<Envelope<JsonPayload>>,
) -> Result<Option<Committed<A::Event>>, CommandError<A::Error>> {
    let Some(first) = recorded.first() else {
        return Ok(None);
    };
    // Events recorded without a digest (by a consumer, or before digests
    // were kept) are taken as this command's.
    if let (Some(recorded), Some(sent)) = (first.metadata.command_digest, metadata.command_digest)
        && recorded != sent
    {
        return Err(CommandError::CommandIdReused {
            aggregate_type: A::NAME,
            aggregate_id: aggregate_id.to_owned(),
            command_id,
            command: command.name(),
        });
    }
    let version = recorded.last().map_or(0, |envelope| envelope.sequence);
    let events = recorded
        .into_iter()
        .map(|envelope| {
            let event = decode::<A::Event>(&envelope).map_err(CommandError::Decode)?;
            Ok(envelope.with_payload(event))
        })
        .collect::<Result<Vec<_>, CommandError<A::Error>>>()?;
    Ok(Some(Committed {
        aggregate_id: aggregate_id.to_owned(),
        version,
        events,
        retries: 0,
        handler_failures: Vec::new(),
        duplicate: true,
    }))
}

#[cfg(test)]
mod tests {
    use super::canonical;

    #[test]
    fn canonical_json_sorts_keys_at_every_depth() {
        let a: serde_json::Value =
            serde_json::from_str(r#"{"b":1,"a":{"y":[{"q":1,"p":2}],"x":"\u00e9\""}}"#)
                .expect("JSON");
        let b: serde_json::Value =
            serde_json::from_str(r#"{"a":{"x":"\u00e9\"","y":[{"p":2,"q":1}]},"b":1}"#)
                .expect("JSON");
        let (mut left, mut right) = (Vec::new(), Vec::new());
        canonical(&a, &mut left).expect("JSON");
        canonical(&b, &mut right).expect("JSON");
        assert_eq!(left, right);
        assert_eq!(
            String::from_utf8(left).expect("UTF-8"),
            r#"{"a":{"x":"é\"","y":[{"p":2,"q":1}]},"b":1}"#
        );
    }
}
