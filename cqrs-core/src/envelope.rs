//! What the log records around each event: [`Envelope`], [`Metadata`], [`JsonPayload`].

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::boundary::Tag;

/// One recorded event with everything the log knows about it.
///
/// The store hands out `Envelope<JsonPayload>`; `Cqrs::execute` and event handlers
/// see `Envelope<E>` with the decoded event enum.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope<P = JsonPayload> {
    /// Unique and time-ordered (UUIDv7).
    pub event_id: Uuid,
    /// The aggregate's stored name (`#[aggregate(name = ..)]`).
    pub aggregate_type: String,
    /// The aggregate instance.
    pub aggregate_id: String,
    /// 1-based position within the aggregate's stream; also the aggregate's
    /// version after this event.
    pub sequence: u64,
    /// 1-based position in the global log, the same order for every reader.
    pub position: u64,
    /// The stored event name.
    pub event_name: String,
    /// The schema version of the payload.
    pub event_version: u32,
    /// When the store committed the event, UTC.
    pub recorded_at: DateTime<Utc>,
    /// Correlation, causation and user key/values.
    pub metadata: Metadata,
    /// The event.
    pub payload: P,
}

impl<P> Envelope<P> {
    /// The same envelope around another payload, such as the decoded event.
    pub fn with_payload<Q>(self, payload: Q) -> Envelope<Q> {
        Envelope {
            event_id: self.event_id,
            aggregate_type: self.aggregate_type,
            aggregate_id: self.aggregate_id,
            sequence: self.sequence,
            position: self.position,
            event_name: self.event_name,
            event_version: self.event_version,
            recorded_at: self.recorded_at,
            metadata: self.metadata,
            payload,
        }
    }
}

/// Metadata carried from a command to every event it records.
///
/// # Examples
///
/// ```
/// use cqrs_core::Metadata;
///
/// let metadata = Metadata::default().with("user", "ada");
/// assert_eq!(metadata.get("user"), Some("ada"));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    /// Shared by every message of one business transaction. `Cqrs::execute`
    /// assigns a fresh one when the command arrives without it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<Uuid>,
    /// The id of the message that caused this one, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causation_id: Option<Uuid>,
    /// Makes a command idempotent: a stream records events of one command id
    /// once, and sending the command again does nothing. Process managers set
    /// it so a restart does not repeat their commands; a client can set it to
    /// retry a request safely.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command_id: Option<Uuid>,
    /// Set by `Cqrs::execute` on the events of a command with a
    /// [`command_id`](Self::command_id): a digest (UUIDv5) of the command's
    /// type and JSON. The same id sent again with another command is refused
    /// with `CommandError::CommandIdReused` instead of answered as a retry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command_digest: Option<Uuid>,
    /// Free-form key/values, such as the acting user.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub values: BTreeMap<String, String>,
}

impl Metadata {
    /// Adds or replaces a key/value.
    pub fn with(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.values.insert(key.into(), value.into());
        self
    }

    /// The value of `key`, if set.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.values.get(key).map(String::as_str)
    }
}

thread_local! {
    static BUFFER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// An event payload serialized as JSON text, the form every store keeps.
///
/// Cheap to clone. Text read from a store is not validated until decoded, so a
/// corrupt row surfaces as a typed decode error rather than a failed read;
/// text given to [`from_text`](Self::from_text) is checked by the store it is
/// appended to.
#[derive(Clone)]
pub struct JsonPayload {
    text: Arc<str>,
    /// Made by [`encode`](Self::encode), so known to be JSON.
    encoded: bool,
}

/// Buffers above this size are not kept for the next payload: a large event
/// would otherwise pin its size in memory for the life of the thread.
const KEPT_BUFFER: usize = 1 << 20;

impl JsonPayload {
    /// Serializes `value`.
    pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Self, serde_json::Error> {
        // Serialized into a buffer kept per thread, then copied once into the
        // shared text: one allocation instead of a `String` and then an `Arc`.
        BUFFER.with(|buffer| {
            let mut buffer = buffer.borrow_mut();
            buffer.clear();
            let encoded = serde_json::to_writer(&mut *buffer, value).and_then(|()| {
                if buffer.capacity() > KEPT_BUFFER {
                    // Up to half of a grown buffer is spare: give it back
                    // before the copy, which then peaks at twice the text.
                    buffer.shrink_to_fit();
                }
                let text = std::str::from_utf8(&buffer).map_err(serde::ser::Error::custom)?;
                Ok(Self {
                    text: text.into(),
                    encoded: true,
                })
            });
            if buffer.capacity() > KEPT_BUFFER {
                *buffer = Vec::new();
            }
            encoded
        })
    }

    /// Wraps JSON text, as read from a store or made elsewhere, unchecked.
    pub fn from_text(text: impl Into<Arc<str>>) -> Self {
        Self {
            text: text.into(),
            encoded: false,
        }
    }

    /// Deserializes into `T`.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_str(&self.text)
    }

    /// The JSON text.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether the text is one JSON value; `encode` made it or it parses.
    pub(crate) fn is_json(&self) -> bool {
        self.encoded || serde_json::from_str::<serde::de::IgnoredAny>(&self.text).is_ok()
    }
}

impl PartialEq for JsonPayload {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl Eq for JsonPayload {}

impl fmt::Debug for JsonPayload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Display for JsonPayload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// An event on its way into the store: everything but what the store assigns
/// (sequence, position, timestamp).
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    /// Unique and time-ordered (UUIDv7).
    pub event_id: Uuid,
    /// The stored event name.
    pub event_name: &'static str,
    /// The schema version of the payload.
    pub event_version: u32,
    /// Correlation, causation and user key/values.
    pub metadata: Metadata,
    /// The serialized event.
    pub payload: JsonPayload,
    /// What queries select it by beside its stream: the values of its
    /// `#[tag]` fields. The stores index them; an envelope read back does
    /// not carry them (the event's fields hold them).
    pub tags: Vec<Tag>,
}
