//! The wire format: which attributes an event carries on a broker, named as
//! CloudEvents names them, and how a received message becomes an event of
//! the log again ([`Received`]) or a [`MalformedMessage`].

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::envelope::{Envelope, JsonPayload, Metadata};
use crate::telemetry::{TRACEPARENT, TRACESTATE};

/// The body's content type: the stored payload's JSON, unchanged.
pub const CONTENT_TYPE: &str = "application/json";

/// The CloudEvents version the attributes follow.
pub const SPEC_VERSION: &str = "1.0";

/// One event on its way to a broker: its routing parts, its body and its
/// attributes, borrowed from the log's envelope.
#[derive(Debug, Clone, Copy)]
pub struct Outgoing<'a> {
    envelope: &'a Envelope,
}

impl<'a> Outgoing<'a> {
    /// The event as a broker would get it.
    pub fn new(envelope: &'a Envelope) -> Self {
        Self { envelope }
    }

    /// The event as the log holds it.
    pub fn envelope(&self) -> &'a Envelope {
        self.envelope
    }

    /// The event id: the message id a broker deduplicates by.
    pub fn id(&self) -> Uuid {
        self.envelope.event_id
    }

    /// `<aggregate type>.<event name>`: RabbitMQ's routing key, and the end
    /// of a NATS subject.
    pub fn routing_key(&self) -> String {
        format!(
            "{}.{}",
            self.envelope.aggregate_type, self.envelope.event_name
        )
    }

    /// The stored payload's JSON text.
    pub fn body(&self) -> &'a [u8] {
        self.envelope.payload.as_str().as_bytes()
    }

    /// The stream the event belongs to, which keeps its order: a Kafka
    /// adapter would use it as the record key.
    pub fn stream(&self) -> (&'a str, &'a str) {
        (&self.envelope.aggregate_type, &self.envelope.aggregate_id)
    }

    /// The CloudEvents attributes, without a prefix: `specversion`, `id`,
    /// `source` (aggregate type), `subject` (aggregate id), `type` (event
    /// name), `time`, `datacontenttype`, and the extensions `sequence`
    /// (in the stream), `position` (in the log), `eventversion`,
    /// `correlationid`, `causationid`, `traceparent` and `tracestate` when
    /// the event has them.
    pub fn attributes(&self) -> Vec<(&'static str, String)> {
        let envelope = self.envelope;
        let mut attributes = vec![
            ("specversion", SPEC_VERSION.to_owned()),
            ("id", envelope.event_id.to_string()),
            ("source", envelope.aggregate_type.clone()),
            ("subject", envelope.aggregate_id.clone()),
            ("type", envelope.event_name.clone()),
            ("time", envelope.recorded_at.to_rfc3339()),
            ("datacontenttype", CONTENT_TYPE.to_owned()),
            ("sequence", envelope.sequence.to_string()),
            ("position", envelope.position.to_string()),
            ("eventversion", envelope.event_version.to_string()),
        ];
        let metadata = &envelope.metadata;
        if let Some(id) = metadata.correlation_id {
            attributes.push(("correlationid", id.to_string()));
        }
        if let Some(id) = metadata.causation_id {
            attributes.push(("causationid", id.to_string()));
        }
        for key in [TRACEPARENT, TRACESTATE] {
            if let Some(value) = metadata.get(key) {
                attributes.push((key, value.to_owned()));
            }
        }
        attributes
    }
}

/// An event read off a broker, checked: what the consumer records in its
/// own log.
#[derive(Debug, Clone, PartialEq)]
pub struct Received {
    /// The producer's event id.
    pub event_id: Uuid,
    /// The producer's aggregate type.
    pub aggregate_type: String,
    /// The producer's aggregate id.
    pub aggregate_id: String,
    /// The event's sequence in the producer's stream.
    pub sequence: u64,
    /// The event's position in the producer's log.
    pub position: u64,
    /// The stored event name.
    pub event_name: String,
    /// The payload's schema version.
    pub event_version: u32,
    /// When the producer recorded it.
    pub recorded_at: DateTime<Utc>,
    /// The correlation id, if it had one.
    pub correlation_id: Option<Uuid>,
    /// The causation id, if it had one.
    pub causation_id: Option<Uuid>,
    /// The trace context (`traceparent`, `tracestate`) it carried.
    pub trace: BTreeMap<String, String>,
    /// The payload.
    pub payload: JsonPayload,
}

/// A message that is not an event in our wire format; it goes to the
/// dead-letter queue with this as its reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MalformedMessage {
    /// A required attribute is missing.
    #[error("the message has no `{0}` attribute")]
    Missing(&'static str),
    /// An attribute does not parse.
    #[error("the message's `{attribute}` attribute `{value}` is invalid: {reason}")]
    Invalid {
        /// The attribute.
        attribute: &'static str,
        /// Its value, shortened.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The body is not JSON.
    #[error("the message's body is not JSON: {0}")]
    Body(String),
}

impl Received {
    /// Reads a message from its attributes, named without a broker's prefix
    /// (`attribute("id")`), and its body.
    pub fn decode<'a>(
        attribute: impl Fn(&str) -> Option<&'a str>,
        body: &[u8],
    ) -> Result<Self, MalformedMessage> {
        let required = |name: &'static str| attribute(name).ok_or(MalformedMessage::Missing(name));
        let optional_id = |name: &'static str| attribute(name).map(|value| parse(name, value));
        let event_id = parse("id", required("id")?)?;
        let text =
            std::str::from_utf8(body).map_err(|error| MalformedMessage::Body(error.to_string()))?;
        serde_json::from_str::<serde::de::IgnoredAny>(text)
            .map_err(|error| MalformedMessage::Body(error.to_string()))?;
        let time = required("time")?;
        let recorded_at = DateTime::parse_from_rfc3339(time)
            .map_err(|error| invalid("time", time, error))?
            .with_timezone(&Utc);
        let mut trace = BTreeMap::new();
        for key in [TRACEPARENT, TRACESTATE] {
            if let Some(value) = attribute(key) {
                trace.insert(key.to_owned(), value.to_owned());
            }
        }
        Ok(Self {
            event_id,
            aggregate_type: nonempty("source", required("source")?)?,
            aggregate_id: nonempty("subject", required("subject")?)?,
            sequence: parse("sequence", required("sequence")?)?,
            position: parse("position", required("position")?)?,
            event_name: nonempty("type", required("type")?)?,
            event_version: attribute("eventversion")
                .map_or(Ok(1), |value| parse("eventversion", value))?,
            recorded_at,
            correlation_id: optional_id("correlationid").transpose()?,
            causation_id: optional_id("causationid").transpose()?,
            trace,
            payload: JsonPayload::from_text(text),
        })
    }
}

impl Received {
    /// The event as the receiving app's handlers take it: the producer's
    /// ids, stream, sequence, log position and time, with its correlation
    /// and causation ids and trace context in the metadata.
    pub fn envelope(&self) -> Envelope {
        Envelope {
            event_id: self.event_id,
            aggregate_type: self.aggregate_type.clone(),
            aggregate_id: self.aggregate_id.clone(),
            sequence: self.sequence,
            position: self.position,
            event_name: self.event_name.clone(),
            event_version: self.event_version,
            recorded_at: self.recorded_at,
            metadata: Metadata {
                correlation_id: self.correlation_id,
                causation_id: self.causation_id,
                values: self.trace.clone(),
                ..Metadata::default()
            },
            payload: self.payload.clone(),
        }
    }
}

/// `items` grouped by the stream of the message each holds, the streams
/// in the order they first appear and each stream's items in their order.
pub(super) fn by_stream<T>(items: Vec<T>, received: impl Fn(&T) -> &Received) -> Vec<Vec<T>> {
    let mut streams: Vec<Vec<T>> = Vec::new();
    let mut stream_of: std::collections::HashMap<(String, String), usize> =
        std::collections::HashMap::new();
    for item in items {
        let message = received(&item);
        let stream = (message.aggregate_type.clone(), message.aggregate_id.clone());
        let next = streams.len();
        let at = *stream_of.entry(stream).or_insert(next);
        if at == next {
            streams.push(Vec::new());
        }
        streams[at].push(item);
    }
    streams
}

fn parse<T: std::str::FromStr>(attribute: &'static str, value: &str) -> Result<T, MalformedMessage>
where
    T::Err: std::fmt::Display,
{
    value
        .parse()
        .map_err(|error| invalid(attribute, value, error))
}

fn nonempty(attribute: &'static str, value: &str) -> Result<String, MalformedMessage> {
    if value.is_empty() {
        return Err(invalid(attribute, value, "it is empty"));
    }
    Ok(value.to_owned())
}

fn invalid(
    attribute: &'static str,
    value: &str,
    reason: impl std::fmt::Display,
) -> MalformedMessage {
    MalformedMessage::Invalid {
        attribute,
        value: value.chars().take(64).collect(),
        reason: reason.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::Metadata;

    fn envelope() -> Envelope {
        Envelope {
            event_id: Uuid::now_v7(),
            aggregate_type: "Order".into(),
            aggregate_id: "o-1".into(),
            sequence: 3,
            position: 42,
            event_name: "OrderPlaced".into(),
            event_version: 2,
            recorded_at: Utc::now(),
            metadata: Metadata {
                correlation_id: Some(Uuid::now_v7()),
                ..Metadata::default()
            }
            .with(
                TRACEPARENT,
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            ),
            payload: JsonPayload::from_text(r#"{"total":5}"#),
        }
    }

    #[test]
    fn an_event_reads_back_from_its_attributes() {
        let envelope = envelope();
        let outgoing = Outgoing::new(&envelope);
        assert_eq!(outgoing.routing_key(), "Order.OrderPlaced");
        let attributes = outgoing.attributes();
        let find = |name: &str| {
            attributes
                .iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| value.as_str())
        };
        let received = Received::decode(find, outgoing.body()).expect("decodes");
        assert_eq!(received.event_id, envelope.event_id);
        assert_eq!(received.aggregate_type, "Order");
        assert_eq!(received.aggregate_id, "o-1");
        assert_eq!((received.sequence, received.position), (3, 42));
        assert_eq!(received.event_name, "OrderPlaced");
        assert_eq!(received.event_version, 2);
        assert_eq!(received.correlation_id, envelope.metadata.correlation_id);
        assert_eq!(received.causation_id, None);
        assert_eq!(
            received.trace.get(TRACEPARENT).map(String::as_str),
            envelope.metadata.get(TRACEPARENT)
        );
        assert_eq!(received.payload, envelope.payload);
        assert_eq!(
            received.recorded_at.timestamp_micros(),
            envelope.recorded_at.timestamp_micros()
        );
    }

    #[test]
    fn a_message_with_a_bad_attribute_or_body_is_malformed() {
        let envelope = envelope();
        let attributes = Outgoing::new(&envelope).attributes();
        let without = |skip: &'static str, replace: Option<&'static str>| {
            let attributes = attributes.clone();
            move |name: &str| -> Option<String> {
                if name == skip {
                    return replace.map(str::to_owned);
                }
                attributes
                    .iter()
                    .find(|(key, _)| *key == name)
                    .map(|(_, value)| value.clone())
            }
        };
        let decode = |lookup: &dyn Fn(&str) -> Option<String>, body: &[u8]| {
            let values: Vec<(String, String)> = [
                "id",
                "source",
                "subject",
                "type",
                "time",
                "sequence",
                "position",
                "eventversion",
                "correlationid",
                "causationid",
            ]
            .iter()
            .filter_map(|name| lookup(name).map(|value| ((*name).to_owned(), value)))
            .collect();
            Received::decode(
                |name| {
                    values
                        .iter()
                        .find(|(key, _)| key == name)
                        .map(|(_, value)| value.as_str())
                },
                body,
            )
        };
        let body = br#"{"total":5}"#;
        assert_eq!(
            decode(&without("id", None), body),
            Err(MalformedMessage::Missing("id"))
        );
        assert!(matches!(
            decode(&without("sequence", Some("three")), body),
            Err(MalformedMessage::Invalid {
                attribute: "sequence",
                ..
            })
        ));
        assert!(matches!(
            decode(&without("subject", Some("")), body),
            Err(MalformedMessage::Invalid {
                attribute: "subject",
                ..
            })
        ));
        assert!(matches!(
            decode(&without("none", None), b"{not json"),
            Err(MalformedMessage::Body(_))
        ));
        assert!(decode(&without("none", None), body).is_ok());
    }
}
