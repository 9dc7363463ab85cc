//! The processors' commands: `processors`, `parked`, `retry`, `skip` and
//! `reset`, read from and written to the views' tables, so the tool needs
//! none of the app's code.

use std::collections::BTreeSet;
use std::io::Write;

use cqrs_core::Cqrs;
use cqrs_core::processor::{Decision, ParkedEvent};
use serde_json::{Value, json};

use crate::Failure;

/// `processors`: each one's position (its slowest segment's), lag behind
/// the log's head, segments, live owners and parked events.
pub(crate) async fn list(app: &Cqrs, as_json: bool, out: &mut impl Write) -> Result<(), Failure> {
    let views = app.views();
    let head = app.last_position().await?;
    if !as_json {
        writeln!(
            out,
            "{:<32} {:>10} {:>8} {:>9} {:>7}  OWNERS",
            "PROCESSOR", "POSITION", "LAG", "SEGMENTS", "PARKED"
        )?;
    }
    for name in views.processors().await? {
        let segments = views.segments(&name).await?;
        let position = segments
            .iter()
            .map(|segment| segment.position)
            .min()
            .unwrap_or(0);
        let owners: BTreeSet<&str> = segments
            .iter()
            .filter(|segment| !segment.expired)
            .filter_map(|segment| segment.owner.as_deref())
            .collect();
        let parked: u64 = segments.iter().map(|segment| segment.parked).sum();
        let lag = head.saturating_sub(position);
        if as_json {
            let row = json!({
                "processor": name,
                "position": position,
                "lag": lag,
                "segments": segments.iter().map(|segment| json!({
                    "segment": segment.segment,
                    "position": segment.position,
                    "owner": segment.owner.as_deref().filter(|_| !segment.expired),
                    "parked": segment.parked,
                })).collect::<Vec<Value>>(),
                "parked": parked,
            });
            writeln!(out, "{row}")?;
        } else {
            let owners = if owners.is_empty() {
                "-".to_owned()
            } else {
                owners.into_iter().collect::<Vec<_>>().join(", ")
            };
            writeln!(
                out,
                "{name:<32} {position:>10} {lag:>8} {:>9} {parked:>7}  {owners}",
                segments.len()
            )?;
        }
    }
    Ok(())
}

fn parked_json(event: &ParkedEvent) -> Value {
    json!({
        "position": event.position,
        "segment": event.segment,
        "aggregate_type": event.aggregate_type,
        "aggregate_id": event.aggregate_id,
        "event_id": event.event_id,
        "event_name": event.event_name,
        "state": event.state.as_str(),
        "attempts": event.attempts,
        "error": event.error,
        "parked_at": event.parked_at.to_rfc3339(),
        "decided_at": event.decided_at.map(|at| at.to_rfc3339()),
    })
}

/// `parked PROCESSOR`: its parked events, decided ones included.
pub(crate) async fn parked(
    app: &Cqrs,
    processor: &str,
    as_json: bool,
    out: &mut impl Write,
) -> Result<(), Failure> {
    known(app, processor).await?;
    let parked = app.views().parked(processor).await?;
    if !as_json {
        writeln!(
            out,
            "{:>10} {:<9} {:>8}  {:<40} ERROR",
            "POSITION", "STATE", "ATTEMPTS", "EVENT"
        )?;
    }
    for event in &parked {
        if as_json {
            writeln!(out, "{}", parked_json(event))?;
        } else {
            let what = format!(
                "{}/{} {}",
                event.aggregate_type, event.aggregate_id, event.event_name
            );
            writeln!(
                out,
                "{:>10} {:<9} {:>8}  {what:<40} {}",
                event.position,
                event.state.as_str(),
                event.attempts,
                event.error.as_deref().unwrap_or("-")
            )?;
        }
    }
    Ok(())
}

/// `retry PROCESSOR POSITION` or `skip PROCESSOR POSITION`.
pub(crate) async fn decide(
    app: &Cqrs,
    processor: &str,
    position: u64,
    decision: Decision,
    out: &mut impl Write,
) -> Result<(), Failure> {
    known(app, processor).await?;
    let views = app.views();
    let (decided, done) = match decision {
        Decision::Retry => (
            views.retry_parked(processor, position).await?,
            format!("the stream of position {position} will be retried by its segment's owner"),
        ),
        Decision::Skip => (
            views.skip_parked(processor, position).await?,
            format!("position {position} skipped"),
        ),
        other => return Err(Failure::Error(format!("the tool cannot decide {other:?}"))),
    };
    if !decided {
        return Err(Failure::Error(format!(
            "{processor} has no event parked at position {position}"
        )));
    }
    writeln!(out, "{processor}: {done}")?;
    Ok(())
}

/// `reset PROCESSOR POSITION`.
pub(crate) async fn reset(
    app: &Cqrs,
    processor: &str,
    position: u64,
    out: &mut impl Write,
) -> Result<(), Failure> {
    known(app, processor).await?;
    if app.views().is_projection(processor).await? {
        return Err(Failure::Error(format!(
            "{processor} is a projection: its views would get events they hold again; rebuild it from the app's binary (cqrs_cli::main_with) instead"
        )));
    }
    let head = app.last_position().await?;
    if position > head {
        return Err(Failure::Error(format!(
            "position {position} is past the log's head, {head}"
        )));
    }
    app.views().set_checkpoint(processor, position).await?;
    writeln!(out, "{processor}: every segment at position {position}")?;
    Ok(())
}

/// Fails unless `processor` has segments in the store.
async fn known(app: &Cqrs, processor: &str) -> Result<(), Failure> {
    let names = app.views().processors().await?;
    if names.iter().any(|name| name == processor) {
        Ok(())
    } else {
        Err(Failure::Error(format!(
            "no processor `{processor}` in this store (there are: {})",
            names.join(", ")
        )))
    }
}
