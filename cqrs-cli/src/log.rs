//! The log's commands: `streams`, `stream` and `tail`.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use cqrs_core::{Cqrs, Envelope};
use serde_json::{Value, json};

use crate::Failure;

/// How many events one read of the log takes.
const PAGE: usize = 1000;

/// An event as JSON: its envelope, with the payload as JSON (or as the
/// stored text if it is not).
pub(crate) fn to_json(event: &Envelope) -> Value {
    let payload = serde_json::from_str::<Value>(event.payload.as_str())
        .unwrap_or_else(|_| Value::String(event.payload.as_str().to_owned()));
    json!({
        "position": event.position,
        "aggregate_type": event.aggregate_type,
        "aggregate_id": event.aggregate_id,
        "sequence": event.sequence,
        "event_id": event.event_id,
        "event_name": event.event_name,
        "event_version": event.event_version,
        "recorded_at": event.recorded_at.to_rfc3339(),
        "metadata": event.metadata,
        "payload": payload,
    })
}

/// One line for a person: position, time, stream and sequence, name,
/// payload.
fn line(event: &Envelope) -> String {
    format!(
        "{:>8}  {}  {}/{}#{}  {}  {}",
        event.position,
        event.recorded_at.format("%Y-%m-%d %H:%M:%S%.3f"),
        event.aggregate_type,
        event.aggregate_id,
        event.sequence,
        event.event_name,
        event.payload.as_str()
    )
}

/// `streams`: per aggregate type, its streams and events; with a type,
/// each of its streams with its events and last position.
pub(crate) async fn streams(
    app: &Cqrs,
    aggregate_type: Option<&str>,
    out: &mut impl Write,
) -> Result<(), Failure> {
    // (streams, events) per type, or (events, last position) per stream.
    let mut types: BTreeMap<String, BTreeMap<String, (u64, u64)>> = BTreeMap::new();
    let mut from = 1;
    loop {
        let page = app.read_all(from, PAGE).await?;
        let Some(last) = page.last() else { break };
        from = last.position + 1;
        for event in &page {
            if aggregate_type.is_some_and(|wanted| wanted != event.aggregate_type) {
                continue;
            }
            let stream = types
                .entry(event.aggregate_type.clone())
                .or_default()
                .entry(event.aggregate_id.clone())
                .or_default();
            stream.0 += 1;
            stream.1 = event.position;
        }
    }
    match aggregate_type {
        None => {
            writeln!(out, "{:<32} {:>10} {:>12}", "TYPE", "STREAMS", "EVENTS")?;
            for (name, streams) in &types {
                let events: u64 = streams.values().map(|(events, _)| events).sum();
                writeln!(out, "{name:<32} {:>10} {events:>12}", streams.len())?;
            }
        }
        Some(name) => {
            let Some(streams) = types.get(name) else {
                return Err(Failure::Error(format!("no stream of type `{name}`")));
            };
            writeln!(out, "{:<40} {:>8} {:>12}", "STREAM", "EVENTS", "LAST")?;
            for (id, (events, last)) in streams {
                writeln!(out, "{id:<40} {events:>8} {last:>12}")?;
            }
        }
    }
    Ok(())
}

/// `stream TYPE ID`: its events.
pub(crate) async fn stream(
    app: &Cqrs,
    aggregate_type: &str,
    aggregate_id: &str,
    json: bool,
    out: &mut impl Write,
) -> Result<(), Failure> {
    let events = app.read_stream(aggregate_type, aggregate_id, 1).await?;
    if events.is_empty() {
        return Err(Failure::Error(format!(
            "stream {aggregate_type}/{aggregate_id} has no events"
        )));
    }
    for event in &events {
        if json {
            writeln!(out, "{}", to_json(event))?;
        } else {
            writeln!(out, "{}", serde_json::to_string_pretty(&to_json(event))?)?;
        }
    }
    Ok(())
}

/// `tail`: the last events, or those from a position, then with `follow`
/// each event appended after, until the process is interrupted.
pub(crate) async fn tail(
    app: &Cqrs,
    from: Option<u64>,
    last: u64,
    follow: bool,
    json: bool,
    out: &mut impl Write,
) -> Result<(), Failure> {
    let mut next = match from {
        Some(position) => position.max(1),
        None => app.last_position().await?.saturating_sub(last) + 1,
    };
    loop {
        let page = app.read_all(next, PAGE).await?;
        for event in &page {
            if json {
                writeln!(out, "{}", to_json(event))?;
            } else {
                writeln!(out, "{}", line(event))?;
            }
        }
        out.flush()?;
        match page.last() {
            Some(event) => next = event.position + 1,
            None if follow => tokio::time::sleep(Duration::from_millis(200)).await,
            None => return Ok(()),
        }
    }
}
