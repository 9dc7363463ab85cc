//! Consistency boundaries across streams: tagged events read by query, and
//! appends on the condition that nothing the query matches came after the
//! position read; then the races that broke other stores' boundaries
//! (Marten #4591: racers that all passed a check made before any of them
//! committed; Marten #5300: a read whose events and head came from two
//! moments), each run for `CQRS_RACE_ROUNDS` rounds (default 25) of
//! concurrent writers.

use std::collections::BTreeSet;
use std::sync::Arc;

use cqrs_core::boundary::{AppendCondition, EventQuery, Tag};
use cqrs_core::store::NewEvent;
use cqrs_core::{Envelope, EventStore, Metadata, StoreError, Uuid};
use serde_json::json;
use tokio::sync::Barrier;

use crate::support::new_event;

fn tag(key: &str, value: impl std::fmt::Display) -> Tag {
    Tag::new(key, value).expect("a valid tag")
}

fn tagged(name: &'static str, tags: &[&Tag]) -> NewEvent {
    NewEvent {
        tags: tags.iter().map(|&tag| tag.clone()).collect(),
        ..new_event(
            name,
            1,
            json!({ "tags": tags.iter().map(|t| t.as_str()).collect::<Vec<_>>() }),
        )
    }
}

/// Whether a conditional append landed; false when its boundary changed.
fn landed(outcome: Result<Vec<Envelope>, StoreError>) -> bool {
    match outcome {
        Ok(_) => true,
        Err(StoreError::BoundaryChanged { .. }) => false,
        Err(other) => panic!("{other:?}"),
    }
}

/// How many of the writers' appends landed.
async fn winners(writers: Vec<tokio::task::JoinHandle<bool>>) -> usize {
    let mut won = 0;
    for writer in writers {
        won += usize::from(writer.await.unwrap());
    }
    won
}

fn rounds() -> usize {
    std::env::var("CQRS_RACE_ROUNDS")
        .ok()
        .and_then(|rounds| rounds.parse().ok())
        .unwrap_or(25)
}

/// Queries select by name, by tag, by all of several tags, by either of
/// two items, after a position; the head is the log's last position.
pub async fn tagged_events_are_read_by_query<S: EventStore>(store: S) {
    let (c1, c2, s1) = (tag("course", 1), tag("course", 2), tag("student", 1));
    store
        .append("course", "1", 0, vec![tagged("CourseOpened", &[&c1])])
        .await
        .unwrap();
    store
        .append("course", "2", 0, vec![tagged("CourseOpened", &[&c2])])
        .await
        .unwrap();
    store
        .append("other", "x", 0, vec![new_event("Untagged", 1, json!({}))])
        .await
        .unwrap();
    store
        .append(
            "subscription",
            "1-1",
            0,
            vec![tagged("Subscribed", &[&c1, &s1]), tagged("Noted", &[&s1])],
        )
        .await
        .unwrap();
    let positions = |query: EventQuery, after: u64| {
        let store = &store;
        async move {
            let matching = store.read_matching(query, after).await.unwrap();
            assert_eq!(matching.head, 5, "the head is the log's last position");
            matching
                .events
                .iter()
                .map(|event| event.position)
                .collect::<Vec<_>>()
        }
    };
    let none: [Tag; 0] = [];
    let names: [&str; 0] = [];
    assert_eq!(
        positions(EventQuery::new().item(names, [c1.clone()]), 0).await,
        [1, 4]
    );
    assert_eq!(
        positions(EventQuery::new().item(["CourseOpened"], none.clone()), 0).await,
        [1, 2]
    );
    assert_eq!(
        positions(EventQuery::new().item(["Untagged"], none.clone()), 0).await,
        [3],
        "an untagged event is found by its name"
    );
    assert_eq!(
        positions(EventQuery::new().item(names, [c1.clone(), s1.clone()]), 0).await,
        [4],
        "an item's tags are all required"
    );
    assert_eq!(
        positions(
            EventQuery::new()
                .item(["CourseOpened"], [c1.clone()])
                .item(names, [s1.clone()]),
            0
        )
        .await,
        [1, 4, 5],
        "items are either-or, each event once, in log order"
    );
    assert_eq!(
        positions(EventQuery::new().item(names, [s1.clone()]), 4).await,
        [5]
    );
    assert_eq!(
        positions(EventQuery::new().item(["Subscribed"], [c2.clone()]), 0).await,
        Vec::<u64>::new()
    );
    assert_eq!(positions(EventQuery::new(), 0).await, Vec::<u64>::new());
    let read = store
        .read_matching(EventQuery::new().item(names, [s1.clone()]), 0)
        .await
        .unwrap();
    assert_eq!(read.events[0].aggregate_type, "subscription");
    assert_eq!(read.events[0].sequence, 1);
    assert_eq!(read.events[1].event_name, "Noted");
    // Tags come from the events' fields: the payload is stored unchanged.
    let payload: serde_json::Value = read.events[1].payload.decode().unwrap();
    assert_eq!(payload, json!({ "tags": ["student:1"] }));
}

/// A condition holds while nothing it matches came after its position
/// (exclusive), whatever else was appended; a conditional append goes to
/// the end of its stream.
pub async fn a_condition_fails_only_on_a_matching_event_after_it<S: EventStore>(store: S) {
    let (seat, other) = (tag("seat", "1a"), tag("seat", "2b"));
    let query = EventQuery::new().item(["SeatReserved", "SeatReleased"], [seat.clone()]);
    let read = store.read_matching(query.clone(), 0).await.unwrap();
    assert!(read.events.is_empty());
    assert_eq!(read.head, 0);
    let condition = |after| AppendCondition {
        query: query.clone(),
        after,
    };
    let first = store
        .append_if(
            "seat",
            "1a",
            vec![tagged("SeatReserved", &[&seat])],
            condition(0),
        )
        .await
        .unwrap();
    assert_eq!((first[0].position, first[0].sequence), (1, 1));
    // Unrelated events after it do not fail a condition read before them.
    store
        .append("seat", "2b", 0, vec![tagged("SeatReserved", &[&other])])
        .await
        .unwrap();
    store
        .append("seat", "1a", 1, vec![tagged("SeatInspected", &[&seat])])
        .await
        .unwrap();
    let released = store
        .append_if(
            "seat",
            "1a",
            vec![tagged("SeatReleased", &[&seat])],
            condition(1),
        )
        .await
        .unwrap();
    assert_eq!(
        (released[0].position, released[0].sequence),
        (4, 3),
        "appended at the stream's end, whatever its version"
    );
    // A decision made on the read at 1 again: the release came after it.
    match store
        .append_if(
            "seat",
            "1a",
            vec![tagged("SeatReserved", &[&seat])],
            condition(1),
        )
        .await
    {
        Err(StoreError::BoundaryChanged { after, position }) => {
            assert_eq!((after, position), (1, 4));
        }
        other => panic!("expected BoundaryChanged, got {other:?}"),
    }
    // An aggregate's plain append the query matches fails it as well.
    store
        .append("seat", "1a", 3, vec![tagged("SeatReserved", &[&seat])])
        .await
        .unwrap();
    let read = store.read_matching(query.clone(), 0).await.unwrap();
    assert_eq!(
        read.events.iter().map(|e| e.position).collect::<Vec<_>>(),
        [1, 4, 5]
    );
    assert!(matches!(
        store
            .append_if(
                "seat",
                "1a",
                vec![tagged("SeatReleased", &[&seat])],
                condition(4)
            )
            .await,
        Err(StoreError::BoundaryChanged { position: 5, .. })
    ));
    let log = store.read_all(1, 100).await.unwrap();
    assert_eq!(log.len(), 5, "a failed condition records nothing");
    // The command id of a conditional batch is recorded like any other.
    let command_id = Uuid::now_v7();
    let with_id = |event: NewEvent| NewEvent {
        metadata: Metadata {
            command_id: Some(command_id),
            ..Metadata::default()
        },
        ..event
    };
    store
        .append_if(
            "seat",
            "1a",
            vec![with_id(tagged("SeatReleased", &[&seat]))],
            condition(read.head),
        )
        .await
        .unwrap();
    assert!(matches!(
        store
            .append_if(
                "seat",
                "1a",
                vec![with_id(tagged("SeatReleased", &[&seat]))],
                AppendCondition {
                    query: EventQuery::new(),
                    after: 6,
                },
            )
            .await,
        Err(StoreError::DuplicateCommand { .. })
    ));
    assert_eq!(
        store
            .load_command("seat", "1a", command_id)
            .await
            .unwrap()
            .len(),
        1
    );
}

/// Eight writers read one boundary, wait for each other, and append on
/// their reads, each to a stream of its own (no stream version to catch
/// them): exactly one wins each round.
pub async fn one_writer_wins_each_round_through_one_boundary<S: EventStore>(store: S) {
    const WRITERS: usize = 8;
    let store = Arc::new(store);
    for round in 0..rounds() {
        let slot = tag("slot", round);
        let barrier = Arc::new(Barrier::new(WRITERS));
        let writers: Vec<_> = (0..WRITERS)
            .map(|writer| {
                let (store, barrier, slot) = (store.clone(), barrier.clone(), slot.clone());
                tokio::spawn(async move {
                    let query = EventQuery::new().item(["SlotTaken"], [slot.clone()]);
                    let read = store.read_matching(query.clone(), 0).await.unwrap();
                    assert!(read.events.is_empty());
                    barrier.wait().await;
                    let id = format!("{round}-{writer}");
                    let condition = AppendCondition {
                        query,
                        after: read.head,
                    };
                    landed(
                        store
                            .append_if("taker", &id, vec![tagged("SlotTaken", &[&slot])], condition)
                            .await,
                    )
                })
            })
            .collect();
        let won = winners(writers).await;
        assert_eq!(
            won, 1,
            "round {round}: {won} of {WRITERS} writers took the slot"
        );
    }
}

/// Write skew: one writer's query selects by name alone, the other's by
/// tag alone, and each appends an event the other's query matches. Both
/// read before either appends; one of them must fail.
pub async fn a_query_by_name_and_one_by_tag_exclude_each_other<S: EventStore>(store: S) {
    let store = Arc::new(store);
    let names: [&str; 0] = [];
    for round in 0..rounds() {
        let room = tag("room", format!("r{round}"));
        // Every round's bookings share the name: only what came after the
        // read counts.
        let by_name = EventQuery::new().item(["Booked"], [] as [Tag; 0]);
        let by_tag = EventQuery::new().item(names, [room.clone()]);
        let barrier = Arc::new(Barrier::new(2));
        let writers: Vec<_> = [by_name, by_tag]
            .into_iter()
            .enumerate()
            .map(|(writer, query)| {
                let (store, barrier, room) = (store.clone(), barrier.clone(), room.clone());
                tokio::spawn(async move {
                    let read = store.read_matching(query.clone(), 0).await.unwrap();
                    barrier.wait().await;
                    let condition = AppendCondition {
                        query,
                        after: read.head,
                    };
                    let id = format!("{round}-{writer}");
                    landed(
                        store
                            .append_if("booker", &id, vec![tagged("Booked", &[&room])], condition)
                            .await,
                    )
                })
            })
            .collect();
        let won = winners(writers).await;
        assert_eq!(won, 1, "round {round}: {won} of 2 writers booked the room");
    }
}

/// A course of 5 seats, 8 students deciding at once, each retrying on a
/// changed boundary: exactly 5 subscribe, and every decision that landed
/// had seen every subscription before it (no stale read). Disjoint
/// courses run beside it and never fail.
pub async fn retried_decisions_keep_a_capacity<S: EventStore>(store: S) {
    const SEATS: usize = 5;
    const STUDENTS: usize = 8;
    let store = Arc::new(store);
    let mut retries = 0;
    for round in 0..rounds() {
        let course = tag("course", format!("c{round}"));
        let barrier = Arc::new(Barrier::new(STUDENTS * 2));
        let mut students = Vec::new();
        for student in 0..STUDENTS {
            let (deciding, waiting, course) = (store.clone(), barrier.clone(), course.clone());
            students.push(tokio::spawn(async move {
                let (store, barrier) = (deciding, waiting);
                let query = EventQuery::new().item(["Subscribed"], [course.clone()]);
                let mut retries = 0;
                let mut first = true;
                loop {
                    let read = store.read_matching(query.clone(), 0).await.unwrap();
                    if first {
                        barrier.wait().await;
                        first = false;
                    }
                    if read.events.len() >= SEATS {
                        return (false, retries);
                    }
                    let me = tag("student", format!("{round}-{student}"));
                    let condition = AppendCondition {
                        query: query.clone(),
                        after: read.head,
                    };
                    let id = format!("{round}-{student}");
                    match store
                        .append_if(
                            "subscription",
                            &id,
                            vec![tagged("Subscribed", &[&course, &me])],
                            condition,
                        )
                        .await
                    {
                        Ok(_) => return (true, retries),
                        Err(StoreError::BoundaryChanged { .. }) => retries += 1,
                        Err(other) => panic!("{other:?}"),
                    }
                }
            }));
            // A writer on a boundary of its own, at the same moment: it
            // never fails.
            let (store, barrier) = (store.clone(), barrier.clone());
            students.push(tokio::spawn(async move {
                let own = tag("course", format!("own-{round}-{student}"));
                let query = EventQuery::new().item(["Subscribed"], [own.clone()]);
                let read = store.read_matching(query.clone(), 0).await.unwrap();
                barrier.wait().await;
                let condition = AppendCondition {
                    query,
                    after: read.head,
                };
                let id = format!("own-{round}-{student}");
                store
                    .append_if(
                        "subscription",
                        &id,
                        vec![tagged("Subscribed", &[&own])],
                        condition,
                    )
                    .await
                    .expect("a disjoint boundary never conflicts");
                (false, 0)
            }));
        }
        let mut subscribed = 0;
        for student in students {
            let (landed, tries) = student.await.unwrap();
            subscribed += usize::from(landed);
            retries += tries;
        }
        assert_eq!(
            subscribed, SEATS,
            "round {round}: {subscribed} of {SEATS} seats taken"
        );
        let read = store
            .read_matching(EventQuery::new().item(["Subscribed"], [course.clone()]), 0)
            .await
            .unwrap();
        assert_eq!(read.events.len(), SEATS, "round {round}");
    }
    assert!(
        retries > 0,
        "the students never raced: the test proved nothing"
    );
}

/// Plain appends race a decider: whenever a conditional append lands, no
/// event its query matches was recorded between the head it read and its
/// own position.
pub async fn appends_racing_a_read_never_slip_past_it<S: EventStore>(store: S) {
    const FEEDERS: usize = 4;
    let store = Arc::new(store);
    let account = tag("account", "hot");
    let feeds = rounds() * 4;
    let feeders: Vec<_> = (0..FEEDERS)
        .map(|feeder| {
            let (store, account) = (store.clone(), account.clone());
            tokio::spawn(async move {
                for n in 0..feeds {
                    let id = format!("feeder-{feeder}-{n}");
                    store
                        .append("feed", &id, 0, vec![tagged("Credited", &[&account])])
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    let query = EventQuery::new().item(["Credited", "Checked"], [account.clone()]);
    let mut decided = Vec::new();
    let mut failed = 0;
    for n in 0..rounds() * 2 {
        let read = store.read_matching(query.clone(), 0).await.unwrap();
        let seen: BTreeSet<u64> = read.events.iter().map(|event| event.position).collect();
        assert!(read.events.iter().all(|event| event.position <= read.head));
        let condition = AppendCondition {
            query: query.clone(),
            after: read.head,
        };
        match store
            .append_if(
                "checker",
                "hot",
                vec![tagged("Checked", &[&account])],
                condition,
            )
            .await
        {
            Ok(appended) => decided.push((read.head, seen.len(), appended[0].position)),
            Err(StoreError::BoundaryChanged { position, after }) => {
                assert!(position > after);
                failed += 1;
            }
            Err(other) => panic!("round {n}: {other:?}"),
        }
    }
    for feeder in feeders {
        feeder.await.unwrap();
    }
    // A writer that takes turns with the feeders may lose every race
    // while they run; once they are done its decision lands.
    if decided.is_empty() {
        let read = store.read_matching(query.clone(), 0).await.unwrap();
        let condition = AppendCondition {
            query: query.clone(),
            after: read.head,
        };
        let appended = store
            .append_if(
                "checker",
                "hot",
                vec![tagged("Checked", &[&account])],
                condition,
            )
            .await
            .expect("nothing races a decision once the feeders are done");
        decided.push((read.head, read.events.len(), appended[0].position));
    }
    let all = store.read_matching(query, 0).await.unwrap();
    for (head, seen, position) in &decided {
        let before: Vec<u64> = all
            .events
            .iter()
            .map(|event| event.position)
            .filter(|p| p < position)
            .collect();
        assert!(
            before.iter().all(|p| p <= head),
            "a decision at {position} read up to {head} but {before:?} matched before it"
        );
        assert_eq!(
            before.len(),
            *seen,
            "the read at {head} missed a matching event"
        );
    }
    eprintln!(
        "{} decisions landed, {failed} met a changed boundary",
        decided.len()
    );
}
