//! The deadlines' commands: `deadlines`, `cancel-deadline` and
//! `retry-deadline`, on the store's deadline table, so the tool needs none
//! of the app's code. An owner is an aggregate type or a process manager's
//! name, with its id.

use std::io::Write;

use chrono::{DateTime, Utc};
use cqrs_core::store::{DeadlineFilter, StoredDeadline};
use cqrs_core::{Cancelled, Cqrs, Uuid};
use serde_json::{Value, json};

use crate::Failure;

/// Which deadlines `deadlines` lists.
pub(crate) struct Listing {
    pub(crate) owner_type: Option<String>,
    pub(crate) owner_id: Option<String>,
    pub(crate) due_before: Option<DateTime<Utc>>,
    pub(crate) limit: usize,
    pub(crate) json: bool,
}

/// `deadlines`: the pending ones, parked ones too, earliest due first.
pub(crate) async fn list(
    app: &Cqrs,
    listing: Listing,
    out: &mut impl Write,
) -> Result<(), Failure> {
    if listing.owner_id.is_some() && listing.owner_type.is_none() {
        return Err(Failure::Error("--id needs --owner".into()));
    }
    let mut filter = DeadlineFilter::new(listing.limit);
    filter.owner_type = listing.owner_type;
    filter.owner_id = listing.owner_id;
    filter.due_before = listing.due_before;
    let deadlines = app.deadlines().list(filter).await?;
    if !listing.json {
        writeln!(
            out,
            "{:<27} {:<40} {:<32} {:>8}  {:<7} DEADLINE_ID",
            "DUE_AT", "OWNER", "NAME[KEY]", "ATTEMPTS", "STATE"
        )?;
    }
    for stored in &deadlines {
        if listing.json {
            writeln!(out, "{}", deadline_json(stored))?;
        } else {
            let deadline = &stored.deadline;
            let owner = format!("{}/{}", stored.aggregate_type, stored.aggregate_id);
            let name = if deadline.key.is_empty() {
                deadline.name.clone()
            } else {
                format!("{}[{}]", deadline.name, deadline.key)
            };
            writeln!(
                out,
                "{:<27} {owner:<40} {name:<32} {:>8}  {:<7} {}",
                deadline
                    .due_at
                    .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
                stored.attempts,
                state(stored),
                deadline.deadline_id
            )?;
        }
    }
    Ok(())
}

fn state(stored: &StoredDeadline) -> &'static str {
    if stored.parked { "parked" } else { "pending" }
}

fn deadline_json(stored: &StoredDeadline) -> Value {
    let deadline = &stored.deadline;
    let value: Value = serde_json::from_str(deadline.payload.as_str()).unwrap_or(Value::Null);
    json!({
        "owner_type": stored.aggregate_type,
        "owner_id": stored.aggregate_id,
        "name": deadline.name,
        "key": deadline.key,
        "deadline_id": deadline.deadline_id,
        "due_at": deadline.due_at,
        "version": deadline.version,
        "value": value,
        "metadata": deadline.metadata,
        "attempts": stored.attempts,
        "last_error": stored.last_error,
        "state": state(stored),
    })
}

/// `cancel-deadline`: cancels one, as its owner's handler would; one that
/// is not pending is not an error.
pub(crate) async fn cancel(
    app: &Cqrs,
    (owner_type, owner_id): (&str, &str),
    name: &str,
    key: &str,
    out: &mut impl Write,
) -> Result<(), Failure> {
    let deadline = if key.is_empty() {
        format!("{name} of {owner_type}/{owner_id}")
    } else {
        format!("{name}[{key}] of {owner_type}/{owner_id}")
    };
    match app
        .deadlines()
        .cancel(owner_type, owner_id, name, key)
        .await?
    {
        Cancelled::Cancelled(stored) => writeln!(
            out,
            "cancelled {deadline} (due at {})",
            stored.deadline.due_at.to_rfc3339()
        )?,
        Cancelled::Firing => {
            writeln!(out, "not cancelled: {deadline} is being fired")?;
        }
        _ => writeln!(
            out,
            "nothing to cancel: no {deadline} is pending (fired, cancelled, or never scheduled)"
        )?,
    }
    Ok(())
}

/// `retry-deadline`: fires a pending or parked deadline again as soon as
/// the runner looks, its attempts forgotten.
pub(crate) async fn retry(
    app: &Cqrs,
    (owner_type, owner_id): (&str, &str),
    deadline_id: Uuid,
    out: &mut impl Write,
) -> Result<(), Failure> {
    if !app
        .deadlines()
        .retry_of(owner_type, owner_id, deadline_id)
        .await?
    {
        return Err(Failure::Error(format!(
            "no deadline {deadline_id} of {owner_type}/{owner_id} is pending"
        )));
    }
    writeln!(
        out,
        "deadline {deadline_id} of {owner_type}/{owner_id} fires again"
    )?;
    Ok(())
}
