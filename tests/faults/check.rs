//! What every fault run must end with: every acknowledged command in the
//! log, no command that was told "nothing recorded" in it, positions and
//! stream sequences dense, no event twice, and the projection equal to the
//! log: each event applied once.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use cqrs_core::store::ReadLimit;
use cqrs_core::{EventStore, Uuid, ViewStore};

use super::process::Line;
use super::totals::Totals;

/// What the children were told, by command id.
#[derive(Debug, Default)]
pub struct Outcomes {
    pub acknowledged: HashSet<Uuid>,
    pub definite: HashMap<Uuid, String>,
    pub unknown: HashSet<Uuid>,
    pub cancelled: HashSet<Uuid>,
    /// Errors told to a patient writer (role `p..`), with their text.
    pub patient_errors: Vec<String>,
    pub patient_acknowledged: u64,
    pub probes: Vec<String>,
}

impl Outcomes {
    pub fn add(&mut self, lines: &[Line]) {
        for line in lines {
            let mut words = line.text.splitn(4, ' ');
            let (kind, role, id) = (words.next(), words.next(), words.next());
            let rest = words.next().unwrap_or_default();
            if kind == Some("probe") {
                self.probes.push(line.text.clone());
                continue;
            }
            let (Some(kind), Some(role), Some(Ok(id))) = (kind, role, id.map(str::parse::<Uuid>))
            else {
                continue;
            };
            let patient = role.starts_with('p');
            match kind {
                "ack" => {
                    self.acknowledged.insert(id);
                    self.patient_acknowledged += u64::from(patient);
                }
                "definite" => {
                    // Domain answers (an account a restart forgot) are true
                    // and expected; only store errors count as failures.
                    let domain = ["not found", "already exists", "nothing decided"]
                        .iter()
                        .any(|answer| rest.starts_with(answer));
                    if patient && !domain {
                        self.patient_errors.push(rest.to_owned());
                    }
                    self.definite.insert(id, rest.to_owned());
                }
                "unknown" => {
                    if patient {
                        self.patient_errors.push(rest.to_owned());
                    }
                    self.unknown.insert(id);
                }
                "cancelled" => {
                    self.cancelled.insert(id);
                }
                _ => {}
            }
        }
    }
}

/// The figures of one verified run.
#[derive(Debug, Default)]
pub struct Verified {
    pub events: u64,
    pub acknowledged: u64,
    pub unknown_landed: u64,
    pub unknown_lost: u64,
    pub cancelled_landed: u64,
}

/// Reads the whole log and the projection and checks them against what the
/// children were told. Streams named in `corrupted` were edited by hand and
/// are exempt from the sequence check.
pub async fn verify<S: EventStore>(
    store: &S,
    views: &ViewStore,
    outcomes: &Outcomes,
    corrupted: &[&str],
) -> Result<Verified, String> {
    let mut log = Vec::new();
    loop {
        let from = log.len() as u64 + 1;
        let page = store
            .read_all(from, ReadLimit::events(20_000))
            .await
            .map_err(|error| format!("reading the log from {from}: {error}"))?;
        if page.is_empty() {
            break;
        }
        log.extend(page);
    }
    let mut event_ids = HashSet::new();
    let mut commands = HashSet::new();
    let mut streams: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for (envelope, position) in log.iter().zip(1u64..) {
        if envelope.position != position {
            return Err(format!("position {position} holds {}", envelope.position));
        }
        if !event_ids.insert(envelope.event_id) {
            return Err(format!("event {} is stored twice", envelope.event_id));
        }
        commands.extend(envelope.metadata.command_id);
        streams
            .entry(envelope.aggregate_id.clone())
            .or_default()
            .push(envelope.sequence);
    }
    for (stream, sequences) in &streams {
        if corrupted.contains(&stream.as_str()) {
            continue;
        }
        if *sequences != (1..=sequences.len() as u64).collect::<Vec<_>>() {
            return Err(format!("stream {stream} has sequences {sequences:?}"));
        }
    }
    let missing = outcomes
        .acknowledged
        .iter()
        .filter(|id| !commands.contains(id))
        .count();
    if missing > 0 {
        return Err(format!(
            "{missing} acknowledged commands are not in the log"
        ));
    }
    if let Some((id, error)) = outcomes
        .definite
        .iter()
        .find(|(id, _)| commands.contains(id))
    {
        return Err(format!(
            "command {id} was told \"{error}\" but is in the log"
        ));
    }
    let totals: BTreeMap<String, Totals> = views
        .all::<Totals>()
        .await
        .map_err(|error| format!("reading the projection: {error}"))?
        .into_iter()
        .collect();
    let checkpoint = views
        .checkpoint(super::totals::TOTALS)
        .await
        .map_err(|error| error.to_string())?;
    if checkpoint != log.len() as u64 {
        return Err(format!(
            "the projection is at {checkpoint} of {}",
            log.len()
        ));
    }
    for (stream, sequences) in &streams {
        let applied = totals.get(stream).map_or(0, |totals| totals.events);
        if applied != sequences.len() as u64 {
            return Err(format!(
                "{stream}: {} events, {applied} applied",
                sequences.len()
            ));
        }
    }
    let landed = |ids: &HashSet<Uuid>| ids.iter().filter(|id| commands.contains(id)).count() as u64;
    let unknown_landed = landed(&outcomes.unknown);
    Ok(Verified {
        events: log.len() as u64,
        acknowledged: outcomes.acknowledged.len() as u64,
        unknown_landed,
        unknown_lost: outcomes.unknown.len() as u64 - unknown_landed,
        cancelled_landed: landed(&outcomes.cancelled),
    })
}

/// The ledger's table projection, in the read side's own database, holds
/// each of the log's `events` events once, its checkpoint at the end and
/// nothing parked.
pub async fn verify_ledger(views: &ViewStore, events: u64) -> Result<(), String> {
    let positions = super::ledger::positions(views).await?;
    if positions != (1..=events).collect::<Vec<_>>() {
        let missing = (1..=events)
            .filter(|position| !positions.contains(position))
            .count();
        return Err(format!(
            "the ledger holds {} rows for {events} events ({missing} missing)",
            positions.len()
        ));
    }
    let checkpoint = views
        .checkpoint(super::ledger::LEDGER)
        .await
        .map_err(|error| error.to_string())?;
    let parked = views
        .parked(super::ledger::LEDGER)
        .await
        .map_err(|error| error.to_string())?;
    if checkpoint != events || !parked.is_empty() {
        return Err(format!(
            "the ledger is at {checkpoint} of {events}, with {} events parked",
            parked.len()
        ));
    }
    Ok(())
}

/// Command ids seen more than once would mean a child reused one.
pub fn distinct(outcomes: &Outcomes) -> bool {
    let all: BTreeSet<&Uuid> = outcomes
        .acknowledged
        .iter()
        .chain(outcomes.definite.keys())
        .chain(&outcomes.unknown)
        .collect();
    all.len() == outcomes.acknowledged.len() + outcomes.definite.len() + outcomes.unknown.len()
}
