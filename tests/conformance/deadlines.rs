//! The promises every store keeps about deadlines: they are written with
//! their batch or not at all, one pending per stream, name and key, found by
//! due time, and a fire consumes its deadline once however many try.

use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use cqrs_core::processor::segment_of;
use cqrs_core::store::{
    DeadlineChanges, DeadlineFailure, DeadlineWrite, DueQuery, ScheduledDeadline, StoreError,
    StreamAppend,
};
use cqrs_core::{EventStore, JsonPayload, Metadata, Uuid};

use super::numbered;

fn start() -> DateTime<Utc> {
    "2026-01-01T00:00:00Z".parse().unwrap()
}

fn minutes(n: i64) -> DateTime<Utc> {
    start() + TimeDelta::minutes(n)
}

fn scheduled(name: &str, key: &str, due_at: DateTime<Utc>) -> ScheduledDeadline {
    ScheduledDeadline {
        name: name.to_owned(),
        key: key.to_owned(),
        deadline_id: Uuid::now_v7(),
        due_at,
        version: 1,
        payload: JsonPayload::from_text(format!(r#"{{"key":"{key}"}}"#)),
        metadata: Metadata::default().with("tenant", "t-1"),
    }
}

fn schedule(deadline: &ScheduledDeadline) -> DeadlineWrite {
    DeadlineWrite::Schedule(deadline.clone())
}

fn consume(deadline: &ScheduledDeadline) -> DeadlineWrite {
    DeadlineWrite::Consume {
        name: deadline.name.clone(),
        key: deadline.key.clone(),
        deadline_id: deadline.deadline_id,
    }
}

fn cancel(name: &str, key: &str) -> DeadlineWrite {
    DeadlineWrite::Cancel {
        name: name.to_owned(),
        key: key.to_owned(),
    }
}

/// One batch's outcome.
async fn append<S: EventStore>(
    store: &S,
    id: &str,
    version: u64,
    events: usize,
    writes: Vec<DeadlineWrite>,
) -> Result<usize, StoreError> {
    let append = StreamAppend::new("t", id, version, numbered(events)).with_deadlines(writes);
    let mut outcomes = store.append_streams(vec![append]).await;
    assert_eq!(outcomes.len(), 1);
    outcomes.remove(0).map(|events| events.len())
}

/// A stream's pending deadlines, comparable across backends: PostgreSQL
/// keeps a value as JSONB, which does not keep its text.
async fn pending<S: EventStore>(store: &S, id: &str) -> Vec<Comparable> {
    let stored = store.load_deadlines("t", id).await.unwrap();
    comparable(stored.into_iter().map(|stored| stored.deadline))
}

type Comparable = (
    String,
    String,
    Uuid,
    DateTime<Utc>,
    u32,
    serde_json::Value,
    Metadata,
);

fn comparable(deadlines: impl IntoIterator<Item = ScheduledDeadline>) -> Vec<Comparable> {
    deadlines
        .into_iter()
        .map(|deadline| {
            let value = serde_json::from_str(deadline.payload.as_str()).unwrap();
            (
                deadline.name,
                deadline.key,
                deadline.deadline_id,
                deadline.due_at,
                deadline.version,
                value,
                deadline.metadata,
            )
        })
        .collect()
}

pub async fn deadlines_ride_their_batch<S: EventStore>(store: S) {
    let due = scheduled("hold.expires", "", minutes(15));
    assert_eq!(
        append(&store, "a", 0, 1, vec![schedule(&due)])
            .await
            .unwrap(),
        1
    );
    assert_eq!(pending(&store, "a").await, comparable([due.clone()]));
    // Every store keeps a due time to the microsecond.
    let precise = scheduled(
        "precise",
        "",
        minutes(15) + TimeDelta::nanoseconds(1_234_567),
    );
    append(&store, "a", 1, 0, vec![schedule(&precise)])
        .await
        .unwrap();
    let kept = store.load_deadlines("t", "a").await.unwrap();
    assert_eq!(
        kept[1].deadline.due_at,
        minutes(15) + TimeDelta::microseconds(1_234)
    );
    append(&store, "a", 1, 0, vec![cancel("precise", "")])
        .await
        .unwrap();

    let found = store
        .due_deadlines(DueQuery::new(minutes(15), 10))
        .await
        .unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(
        (
            found[0].aggregate_type.as_str(),
            found[0].aggregate_id.as_str()
        ),
        ("t", "a")
    );
    assert_eq!(
        comparable([found[0].deadline.clone()]),
        comparable([due]),
        "kept as written, metadata too"
    );
    let early = minutes(15) - TimeDelta::microseconds(1);
    assert!(
        store
            .due_deadlines(DueQuery::new(early, 10))
            .await
            .unwrap()
            .is_empty()
    );
}

pub async fn a_refused_batch_writes_no_deadline<S: EventStore>(store: S) {
    let mut first = numbered(1);
    let command_id = Uuid::now_v7();
    first[0].metadata.command_id = Some(command_id);
    store.append("t", "a", 0, first).await.unwrap();

    // A stale version.
    let stale = scheduled("stale", "", minutes(1));
    let conflict = append(&store, "a", 0, 1, vec![schedule(&stale)]).await;
    assert!(
        matches!(conflict, Err(StoreError::Conflict(_))),
        "{conflict:?}"
    );
    // A command the stream already recorded.
    let mut again = numbered(1);
    again[0].metadata.command_id = Some(command_id);
    let repeated = StreamAppend::new("t", "a", 1, again)
        .with_deadlines(vec![schedule(&scheduled("repeated", "", minutes(1)))]);
    let outcome = store.append_streams(vec![repeated]).await.remove(0);
    assert!(
        matches!(outcome, Err(StoreError::DuplicateCommand { .. })),
        "{outcome:?}"
    );
    // An event no store accepts.
    let mut not_json = numbered(1);
    not_json[0].payload = JsonPayload::from_text("{".to_owned());
    let bad = StreamAppend::new("t", "a", 1, not_json).with_deadlines(vec![schedule(&scheduled(
        "bad",
        "",
        minutes(1),
    ))]);
    let outcome = store.append_streams(vec![bad]).await.remove(0);
    assert!(
        matches!(outcome, Err(StoreError::Rejected { .. })),
        "{outcome:?}"
    );
    // A deadline no store accepts, with good events.
    let mut nul = scheduled("nul", "", minutes(1));
    nul.name = "with\0nul".to_owned();
    let outcome = append(&store, "a", 1, 1, vec![schedule(&nul)]).await;
    assert!(
        matches!(outcome, Err(StoreError::Rejected { .. })),
        "{outcome:?}"
    );
    let mut not_json = scheduled("not_json", "", minutes(1));
    not_json.payload = JsonPayload::from_text("{".to_owned());
    let outcome = append(&store, "a", 1, 1, vec![schedule(&not_json)]).await;
    assert!(
        matches!(outcome, Err(StoreError::Rejected { .. })),
        "{outcome:?}"
    );

    assert!(pending(&store, "a").await.is_empty());
    assert!(
        store
            .due_deadlines(DueQuery::new(minutes(60), 10))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.last_position().await.unwrap(), 1, "no event either");
}

pub async fn scheduling_again_replaces_and_cancelling_removes<S: EventStore>(store: S) {
    let first = scheduled("reminder", "5", minutes(10));
    let other_key = scheduled("reminder", "1", minutes(14));
    let other_name = scheduled("hold.expires", "5", minutes(15));
    let writes = vec![
        schedule(&first),
        schedule(&other_key),
        schedule(&other_name),
    ];
    assert_eq!(append(&store, "a", 0, 1, writes).await.unwrap(), 1);
    assert_eq!(pending(&store, "a").await.len(), 3);

    let second = scheduled("reminder", "5", minutes(12));
    assert_eq!(
        append(&store, "a", 1, 0, vec![schedule(&second)])
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        pending(&store, "a").await,
        comparable([second.clone(), other_key.clone(), other_name.clone()]),
        "the second replaced the first, earliest first"
    );

    // Cancelling one that is not pending is not an error.
    let writes = vec![
        cancel("reminder", "1"),
        cancel("never", ""),
        cancel("reminder", "1"),
    ];
    assert_eq!(append(&store, "a", 1, 0, writes).await.unwrap(), 0);
    assert_eq!(pending(&store, "a").await, comparable([second, other_name]));
    // Another stream's deadlines are its own.
    assert!(pending(&store, "b").await.is_empty());
}

pub async fn a_batch_of_deadlines_alone_checks_the_version<S: EventStore>(store: S) {
    store.append("t", "a", 0, numbered(2)).await.unwrap();
    let due = scheduled("hold.expires", "", minutes(15));
    let stale = append(&store, "a", 1, 0, vec![schedule(&due)]).await;
    assert!(
        matches!(&stale, Err(StoreError::Conflict(conflict)) if conflict.actual == 2),
        "{stale:?}"
    );
    assert!(pending(&store, "a").await.is_empty());
    assert_eq!(
        append(&store, "a", 2, 0, vec![schedule(&due)])
            .await
            .unwrap(),
        0
    );
    assert_eq!(pending(&store, "a").await, comparable([due]));
    assert_eq!(
        store.last_position().await.unwrap(),
        2,
        "no event was added"
    );
    assert_eq!(store.load("t", "a", 1).await.unwrap().len(), 2);
    // On a stream with no events, too, without making one.
    let lone = scheduled("lone", "", minutes(1));
    assert_eq!(
        append(&store, "new", 0, 0, vec![schedule(&lone)])
            .await
            .unwrap(),
        0
    );
    assert!(store.load("t", "new", 1).await.unwrap().is_empty());
    assert_eq!(pending(&store, "new").await, comparable([lone]));
}

pub async fn a_fire_consumes_its_deadline_once<S: EventStore>(store: S) {
    let due = scheduled("hold.expires", "", minutes(15));
    append(&store, "a", 0, 1, vec![schedule(&due)])
        .await
        .unwrap();

    assert_eq!(
        append(&store, "a", 1, 1, vec![consume(&due)])
            .await
            .unwrap(),
        1
    );
    assert!(pending(&store, "a").await.is_empty());
    let again = append(&store, "a", 2, 1, vec![consume(&due)]).await;
    assert!(
        matches!(&again, Err(StoreError::DeadlineGone { name, .. }) if name == "hold.expires"),
        "{again:?}"
    );
    assert_eq!(
        store.last_position().await.unwrap(),
        2,
        "the refused fire recorded nothing"
    );

    // A deadline scheduled again is another: the old one's fire is refused,
    // and the new one stays pending.
    let old = scheduled("reminder", "", minutes(5));
    append(&store, "a", 2, 0, vec![schedule(&old)])
        .await
        .unwrap();
    let new = scheduled("reminder", "", minutes(9));
    append(&store, "a", 2, 0, vec![schedule(&new)])
        .await
        .unwrap();
    let stale = append(&store, "a", 2, 1, vec![consume(&old)]).await;
    assert!(
        matches!(stale, Err(StoreError::DeadlineGone { .. })),
        "{stale:?}"
    );
    assert_eq!(pending(&store, "a").await, comparable([new.clone()]));
    // A cancelled one's fire too.
    append(&store, "a", 2, 0, vec![cancel("reminder", "")])
        .await
        .unwrap();
    let cancelled = append(&store, "a", 2, 0, vec![consume(&new)]).await;
    assert!(
        matches!(cancelled, Err(StoreError::DeadlineGone { .. })),
        "{cancelled:?}"
    );

    // A refused fire leaves the other batches of its call be.
    let next = scheduled("next", "", minutes(20));
    append(&store, "b", 0, 1, vec![schedule(&next)])
        .await
        .unwrap();
    let outcomes = store
        .append_streams(vec![
            StreamAppend::new("t", "a", 2, numbered(1)).with_deadlines(vec![consume(&new)]),
            StreamAppend::new("t", "b", 1, numbered(1)).with_deadlines(vec![consume(&next)]),
        ])
        .await;
    assert!(matches!(outcomes[0], Err(StoreError::DeadlineGone { .. })));
    assert_eq!(outcomes[1].as_ref().unwrap().len(), 1);
    assert!(pending(&store, "b").await.is_empty());
}

pub async fn concurrent_fires_of_one_deadline_take_effect_once<S: EventStore>(store: S) {
    let store = Arc::new(store);
    let mut deadlines = Vec::new();
    for n in 0..10 {
        let id = format!("s-{n}");
        let due = scheduled("hold.expires", "", minutes(n));
        append(&*store, &id, 0, 1, vec![schedule(&due)])
            .await
            .unwrap();
        deadlines.push((id, due));
    }
    // Eight fires of each at once, half with an event (the version decides
    // between them), half with none (only the consume does).
    let mut fires = Vec::new();
    for (id, due) in &deadlines {
        for attempt in 0..8 {
            let (store, id, due) = (Arc::clone(&store), id.clone(), due.clone());
            fires.push(tokio::spawn(async move {
                let events = attempt % 2;
                append(&*store, &id, 1, events, vec![consume(&due)]).await
            }));
        }
    }
    let mut fired = 0;
    for fire in fires {
        match fire.await.unwrap() {
            Ok(_) => fired += 1,
            Err(StoreError::DeadlineGone { .. } | StoreError::Conflict(_)) => {}
            Err(other) => panic!("a fire failed otherwise: {other:?}"),
        }
    }
    assert_eq!(fired, 10, "each deadline fired exactly once");
    assert!(
        store
            .due_deadlines(DueQuery::new(minutes(60), 100))
            .await
            .unwrap()
            .is_empty()
    );
}

pub async fn due_deadlines_come_earliest_first_up_to_the_limit<S: EventStore>(store: S) {
    let mut all = Vec::new();
    for (n, at) in [30, 5, 20, 5, 10].into_iter().enumerate() {
        let due = scheduled("d", &n.to_string(), minutes(at));
        all.push(due.clone());
        let id = format!("s-{}", n % 2);
        let version = store.load("t", &id, 1).await.unwrap().len() as u64;
        append(&store, &id, version, 1, vec![schedule(&due)])
            .await
            .unwrap();
    }
    all.sort_by_key(|due| (due.due_at, due.deadline_id));
    let found = store
        .due_deadlines(DueQuery::new(minutes(20), 100))
        .await
        .unwrap();
    assert_eq!(
        comparable(found.into_iter().map(|stored| stored.deadline)),
        comparable(all[..4].to_vec())
    );
    let of_types = |types: &[&str]| DueQuery::new(minutes(60), 100).of(types.iter().copied());
    let others = store.due_deadlines(of_types(&["other"])).await.unwrap();
    assert!(others.is_empty(), "{others:?}");
    let ours = store
        .due_deadlines(of_types(&["other", "t"]))
        .await
        .unwrap();
    assert_eq!(ours.len(), 5);
    let limited = store
        .due_deadlines(DueQuery::new(minutes(60), 2))
        .await
        .unwrap();
    assert_eq!(
        comparable(limited.into_iter().map(|stored| stored.deadline)),
        comparable(all[..2].to_vec())
    );
}

pub async fn a_failed_fire_waits_then_parks_until_retried<S: EventStore>(store: S) {
    let due = scheduled("hold.expires", "", minutes(15));
    append(&store, "a", 0, 1, vec![schedule(&due)])
        .await
        .unwrap();
    let failure = |retry_at: Option<DateTime<Utc>>| DeadlineFailure {
        aggregate_type: "t".to_owned(),
        aggregate_id: "a".to_owned(),
        deadline_id: due.deadline_id,
        error: "the handler failed".to_owned(),
        retry_at,
    };

    store
        .deadline_failed(failure(Some(minutes(20))))
        .await
        .unwrap();
    assert!(
        due_at(&store, minutes(19)).await.is_empty(),
        "waits for its retry"
    );
    assert_eq!(
        due_at(&store, minutes(20)).await,
        vec![(due.deadline_id, 1)]
    );
    let stored = store.load_deadlines("t", "a").await.unwrap();
    assert_eq!(stored[0].last_error.as_deref(), Some("the handler failed"));
    assert_eq!(
        stored[0].deadline.due_at,
        minutes(15),
        "still due when it was"
    );

    store.deadline_failed(failure(None)).await.unwrap();
    assert!(
        due_at(&store, minutes(600)).await.is_empty(),
        "a parked deadline is never due"
    );
    let stored = store.load_deadlines("t", "a").await.unwrap();
    assert_eq!((stored[0].attempts, stored[0].parked), (2, true));

    assert!(
        store
            .retry_deadline("t", "a", due.deadline_id, minutes(30))
            .await
            .unwrap()
    );
    assert_eq!(
        due_at(&store, minutes(30)).await,
        vec![(due.deadline_id, 0)]
    );
    let stored = store.load_deadlines("t", "a").await.unwrap();
    assert_eq!(
        (stored[0].parked, stored[0].last_error.clone()),
        (false, None)
    );
    assert!(
        !store
            .retry_deadline("t", "a", Uuid::now_v7(), minutes(30))
            .await
            .unwrap()
    );
    // A failure reported for a deadline no longer pending changes nothing.
    append(&store, "a", 1, 0, vec![consume(&due)])
        .await
        .unwrap();
    store
        .deadline_failed(failure(Some(minutes(40))))
        .await
        .unwrap();
    assert!(store.load_deadlines("t", "a").await.unwrap().is_empty());

    // Scheduling again starts afresh.
    let again = scheduled("reminder", "", minutes(5));
    append(&store, "a", 1, 0, vec![schedule(&again)])
        .await
        .unwrap();
    let failure = DeadlineFailure {
        deadline_id: again.deadline_id,
        ..failure(None)
    };
    store.deadline_failed(failure).await.unwrap();
    let replaced = scheduled("reminder", "", minutes(6));
    append(&store, "a", 1, 0, vec![schedule(&replaced)])
        .await
        .unwrap();
    let stored = store.load_deadlines("t", "a").await.unwrap();
    assert_eq!((stored[0].attempts, stored[0].parked), (0, false));
    assert_eq!(
        due_at(&store, minutes(6)).await,
        vec![(replaced.deadline_id, 0)]
    );
}

pub async fn due_deadlines_come_by_segment<S: EventStore>(store: S) {
    let mut all = Vec::new();
    for n in 0..24 {
        let id = format!("s-{n}");
        let due = scheduled("d", "", minutes(n));
        append(&store, &id, 0, 1, vec![schedule(&due)])
            .await
            .unwrap();
        all.push((id, due.deadline_id));
    }
    let mut seen = Vec::new();
    for segment in 0..4 {
        let query = DueQuery::new(minutes(60), 100).in_segment(segment, 4);
        for stored in store.due_deadlines(query).await.unwrap() {
            assert_eq!(
                segment_of(&stored.aggregate_type, &stored.aggregate_id, 4),
                segment,
                "{} in segment {segment}",
                stored.aggregate_id
            );
            seen.push((stored.aggregate_id, stored.deadline.deadline_id));
        }
    }
    seen.sort();
    all.sort();
    assert_eq!(seen, all, "each in exactly one segment");
}

/// The ids and attempts of the deadlines due at `at`.
async fn due_at<S: EventStore>(store: &S, at: DateTime<Utc>) -> Vec<(Uuid, u32)> {
    store
        .due_deadlines(DueQuery::new(at, 10))
        .await
        .unwrap()
        .into_iter()
        .map(|stored| (stored.deadline.deadline_id, stored.attempts))
        .collect()
}

/// One owner's changes outside an append, at an origin.
async fn change<S: EventStore>(
    store: &S,
    id: &str,
    origin: Option<u64>,
    writes: Vec<DeadlineWrite>,
) -> Result<(), StoreError> {
    store
        .change_deadlines(DeadlineChanges {
            owner_type: "t".to_owned(),
            owner_id: id.to_owned(),
            origin,
            writes,
        })
        .await
}

/// A process manager's changes arrive out of order (its segments run
/// apart) or again (it handles an event twice after a crash): the origin,
/// the handled event's position, decides, so nothing cancelled or fired
/// since comes back.
pub async fn owned_changes_follow_their_origin<S: EventStore>(store: S) {
    // A cancel handled before the schedule it follows in the log wins.
    let early = scheduled("payment_due", "", minutes(15));
    change(&store, "a", Some(10), vec![cancel("payment_due", "")])
        .await
        .unwrap();
    change(&store, "a", Some(4), vec![schedule(&early)])
        .await
        .unwrap();
    assert!(pending(&store, "a").await.is_empty());
    // A later schedule applies, and handling it again changes nothing.
    let later = scheduled("payment_due", "", minutes(30));
    change(&store, "a", Some(12), vec![schedule(&later)])
        .await
        .unwrap();
    change(&store, "a", Some(12), vec![schedule(&later)])
        .await
        .unwrap();
    assert_eq!(pending(&store, "a").await, comparable([later.clone()]));
    // An earlier event handled again does not replace it.
    change(&store, "a", Some(4), vec![schedule(&early)])
        .await
        .unwrap();
    assert_eq!(pending(&store, "a").await, comparable([later.clone()]));

    // Once fired, its schedule handled again does not revive it.
    change(&store, "a", Some(13), vec![consume(&later)])
        .await
        .unwrap();
    change(&store, "a", Some(12), vec![schedule(&later)])
        .await
        .unwrap();
    assert!(pending(&store, "a").await.is_empty());

    // Cancel then schedule in one handler schedules; a consume of a gone
    // deadline refuses every write beside it.
    let again = scheduled("payment_due", "", minutes(45));
    change(
        &store,
        "a",
        Some(20),
        vec![cancel("payment_due", ""), schedule(&again)],
    )
    .await
    .unwrap();
    assert_eq!(pending(&store, "a").await, comparable([again.clone()]));
    let other = scheduled("reminder", "", minutes(40));
    let refused = change(
        &store,
        "a",
        Some(21),
        vec![consume(&later), schedule(&other)],
    )
    .await;
    assert!(
        matches!(refused, Err(StoreError::DeadlineGone { .. })),
        "{refused:?}"
    );
    assert_eq!(pending(&store, "a").await, comparable([again.clone()]));

    // Without an origin (an operator's), a change applies and orders none.
    change(&store, "a", None, vec![cancel("payment_due", "")])
        .await
        .unwrap();
    assert!(pending(&store, "a").await.is_empty());
    let revived = scheduled("payment_due", "", minutes(50));
    change(&store, "a", Some(20), vec![schedule(&revived)])
        .await
        .unwrap();
    assert!(
        pending(&store, "a").await.is_empty(),
        "origin 20 was settled by the cancel before the operator's"
    );
    change(&store, "a", Some(21), vec![schedule(&revived)])
        .await
        .unwrap();
    assert_eq!(pending(&store, "a").await, comparable([revived]));
    // Owners keep their own: another instance's deadline is untouched.
    assert!(pending(&store, "b").await.is_empty());
}

/// A claimed deadline (a process manager's, being fired) is not cancelled,
/// nor claimed again until its claim runs out.
pub async fn a_claimed_deadline_is_fired_not_cancelled<S: EventStore>(store: S) {
    let due = scheduled("payment_due", "", minutes(15));
    change(&store, "a", Some(2), vec![schedule(&due)])
        .await
        .unwrap();
    let id = due.deadline_id;
    assert!(
        !store
            .claim_deadline("t", "a", id, minutes(14), minutes(16))
            .await
            .unwrap(),
        "not due yet"
    );
    assert!(
        store
            .claim_deadline("t", "a", id, minutes(15), minutes(16))
            .await
            .unwrap()
    );
    assert!(
        !store
            .claim_deadline("t", "a", id, minutes(15), minutes(17))
            .await
            .unwrap(),
        "claimed until 16"
    );
    assert!(
        store
            .due_deadlines(DueQuery::new(minutes(15), 10))
            .await
            .unwrap()
            .is_empty(),
        "a claimed deadline is not due until its claim runs out"
    );
    // A cancel meanwhile is a cancel after the fire: it leaves it be.
    change(&store, "a", Some(3), vec![cancel("payment_due", "")])
        .await
        .unwrap();
    assert_eq!(pending(&store, "a").await, comparable([due.clone()]));
    // The claimant died: the deadline is due again, and claimed again.
    assert_eq!(
        store
            .due_deadlines(DueQuery::new(minutes(16), 10))
            .await
            .unwrap()
            .len(),
        1
    );
    assert!(
        store
            .claim_deadline("t", "a", id, minutes(16), minutes(17))
            .await
            .unwrap()
    );
    change(&store, "a", Some(5), vec![consume(&due)])
        .await
        .unwrap();
    assert!(pending(&store, "a").await.is_empty());
    assert!(
        !store
            .claim_deadline("t", "a", id, minutes(20), minutes(21))
            .await
            .unwrap()
    );
}
