//! Decisions over consistency boundaries (`src/courses.rs`): the fixture,
//! and on every backend concurrent decisions through one boundary from two
//! apps with connections of their own, disjoint ones that never retry, an
//! aggregate's event that changes a decision, idempotent commands, and
//! decided events seen by the rest of the app.

mod support;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use cqrs_core::prelude::*;
use cqrs_core::testing::DecisionFixture;
use cqrs_core::{EventStore, Uuid};
use cqrs_examples::courses::*;
use support::backends::Backend;

fn opened(course_id: &str, capacity: u32) -> CourseOpened {
    CourseOpened {
        course_id: course_id.into(),
        title: format!("course {course_id}"),
        capacity,
    }
}

fn subscribed(course_id: &str, student_id: &str) -> StudentSubscribed {
    StudentSubscribed {
        course_id: course_id.into(),
        student_id: student_id.into(),
    }
}

// ------------------------------------------------------------------ fixture

#[test]
fn a_student_joins_an_open_course_with_a_seat() {
    DecisionFixture::new(Subscription::of("c1", "s1"))
        .given([opened("c1", 2)])
        .given([subscribed("c1", "s2")])
        .when(Subscribe)
        .then_expect_events([subscribed("c1", "s1")]);
}

#[test]
fn a_full_course_and_a_missing_one_refuse() {
    DecisionFixture::new(Subscription::of("c1", "s1"))
        .given([opened("c1", 1)])
        .given([subscribed("c1", "s2")])
        .when(Subscribe)
        .then_expect_error(SubscriptionError::CourseFull("c1".into()));
    DecisionFixture::new(Subscription::of("c1", "s1"))
        .given([opened("c2", 5)])
        .when(Subscribe)
        .then_expect_error(SubscriptionError::NoSuchCourse("c1".into()));
}

#[test]
fn the_course_aggregate_changes_the_capacity_a_decision_sees() {
    DecisionFixture::new(Subscription::of("c1", "s1"))
        .given([opened("c1", 1)])
        .given([subscribed("c1", "s2")])
        .given([CapacityChanged {
            course_id: "c1".into(),
            capacity: 2,
        }])
        .when(Subscribe)
        .then_expect_events([subscribed("c1", "s1")]);
}

#[test]
fn a_student_takes_a_limited_number_of_courses_once_each() {
    let mut fixture = DecisionFixture::new(Subscription::of("c9", "s1")).given([opened("c9", 50)]);
    for course in 0..MAX_COURSES {
        let course = format!("c{course}");
        fixture = fixture
            .given([opened(&course, 5)])
            .given([subscribed(&course, "s1")]);
    }
    fixture
        .when(Subscribe)
        .then_expect_error(SubscriptionError::TooManyCourses);
    DecisionFixture::new(Subscription::of("c1", "s1"))
        .given([opened("c1", 5)])
        .given([subscribed("c1", "s1")])
        .when(Subscribe)
        .then_expect_error(SubscriptionError::AlreadySubscribed("c1".into()));
}

#[test]
fn events_of_other_boundaries_are_not_applied() {
    DecisionFixture::new(Subscription::of("c1", "s1"))
        .given([opened("c1", 1)])
        // Another course's and another student's subscriptions.
        .given([subscribed("c2", "s2"), subscribed("c3", "s3")])
        .when(Subscribe)
        .then_expect_events([subscribed("c1", "s1")])
        .then_expect_state(|state| assert_eq!(state.course_id, "c1"));
}

#[test]
fn a_username_is_claimed_once() {
    let claimed = |name: &str, user: &str| UsernameClaimed {
        username: name.into(),
        user_id: user.into(),
    };
    DecisionFixture::new(Username::of("ada"))
        .given([claimed("grace", "u2")])
        .when(ClaimUsername {
            user_id: "u1".into(),
        })
        .then_expect_events([claimed("ada", "u1")]);
    DecisionFixture::new(Username::of("ada"))
        .given([claimed("ada", "u2")])
        .when(ClaimUsername {
            user_id: "u1".into(),
        })
        .then_expect_error(UsernameError::Taken("ada".into()));
}

// ------------------------------------------------------------------ apps

fn app<S: EventStore>(store: S) -> Cqrs {
    Cqrs::builder(store)
        .without_processors()
        .build()
        .expect("registry")
}

/// Two apps on the backend's data, the second with connections of its own.
async fn two_apps<S: EventStore + Clone>(backend: &Backend<S>) -> [Cqrs; 2] {
    let (other_store, _) = backend.reopen().await;
    [app(backend.store.clone()), app(other_store)]
}

/// Runs `racer(app, n)` for each `n` below `count` at once, the two apps
/// taking turns; their outcomes in order.
async fn race<T, F>(apps: &[Cqrs; 2], count: usize, racer: impl Fn(Cqrs, usize) -> F) -> Vec<T>
where
    F: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let racers: Vec<_> = (0..count)
        .map(|n| tokio::spawn(racer(apps[n % 2].clone(), n)))
        .collect();
    let mut outcomes = Vec::with_capacity(count);
    for racer in racers {
        outcomes.push(racer.await.unwrap());
    }
    outcomes
}

/// Twelve students race for four seats from two apps, each with
/// connections of its own: four get in, every other one is told the course
/// is full, and the seats were decided one after the other (retries).
async fn a_course_fills_up_once_under_racing_decisions<S>(backend: Backend<S>)
where
    S: EventStore + Clone,
{
    let apps = two_apps(&backend).await;
    apps[0]
        .execute(
            "c1",
            OpenCourse {
                title: "Rust".into(),
                capacity: 4,
            },
        )
        .await
        .unwrap();
    let outcomes = race(&apps, 12, |app, student| async move {
        let student = format!("s{student}");
        app.decide(Subscription::of("c1", &student), Subscribe)
            .await
    })
    .await;
    let (mut joined, mut full, mut retries) = (0, 0, 0);
    for outcome in outcomes {
        match outcome {
            Ok(committed) => {
                joined += 1;
                retries += committed.retries;
                assert_eq!(committed.aggregate_id.split('/').count(), 2);
            }
            Err(CommandError::Domain(SubscriptionError::CourseFull(_))) => full += 1,
            Err(other) => panic!("{other}"),
        }
    }
    assert_eq!((joined, full), (4, 8));
    let log = backend.store.read_all(1, 1_000).await.unwrap();
    let subscriptions = log
        .iter()
        .filter(|event| event.event_name == "course.student_subscribed")
        .count();
    assert_eq!(subscriptions, 4, "one event per seat, none over capacity");
    eprintln!("4 seats taken by 12 racing students, {retries} retries");
}

/// A student subscribing to six courses at once, three from each app,
/// gets exactly the limit: the boundaries overlap on the student's tag.
async fn a_students_limit_holds_across_courses<S>(backend: Backend<S>)
where
    S: EventStore + Clone,
{
    let apps = two_apps(&backend).await;
    for course in 0..6 {
        apps[0]
            .execute(
                &format!("c{course}"),
                OpenCourse {
                    title: "any".into(),
                    capacity: 10,
                },
            )
            .await
            .unwrap();
    }
    let outcomes = race(&apps, 6, |app, course| async move {
        let course = format!("c{course}");
        app.decide(Subscription::of(&course, "s1"), Subscribe).await
    })
    .await;
    let (mut joined, mut refused) = (0, 0);
    for outcome in outcomes {
        match outcome {
            Ok(_) => joined += 1,
            Err(CommandError::Domain(SubscriptionError::TooManyCourses)) => refused += 1,
            Err(other) => panic!("{other}"),
        }
    }
    assert_eq!((joined, refused), (MAX_COURSES, 6 - MAX_COURSES));
}

/// Many usernames claimed at once on disjoint boundaries: none retries;
/// one name claimed by eight users: one owns it.
async fn usernames_are_unique_and_disjoint_claims_never_retry<S>(backend: Backend<S>)
where
    S: EventStore + Clone,
{
    let apps = two_apps(&backend).await;
    let claim = |user: usize| ClaimUsername {
        user_id: format!("u{user}"),
    };
    let disjoint = race(&apps, 16, |app, user| async move {
        let name = format!("name-{user}");
        app.decide(Username::of(&name), claim(user)).await
    })
    .await;
    for committed in disjoint {
        assert_eq!(
            committed.unwrap().retries,
            0,
            "disjoint boundaries never conflict"
        );
    }
    let one_name = race(&apps, 8, |app, user| async move {
        app.decide(Username::of("ada"), claim(user)).await
    })
    .await;
    let mut owners = Vec::new();
    for outcome in one_name {
        match outcome {
            Ok(committed) => owners.push(committed.events[0].payload.clone()),
            Err(CommandError::Domain(UsernameError::Taken(name))) => assert_eq!(name, "ada"),
            Err(other) => panic!("{other}"),
        }
    }
    assert_eq!(owners.len(), 1, "{owners:?}");
}

/// A decision's kept state catches up with what others recorded: a
/// capacity the course aggregate raised after this app's last decision,
/// and a seat another app took.
async fn kept_states_catch_up_with_other_writers<S>(backend: Backend<S>)
where
    S: EventStore + Clone,
{
    let [first, second] = two_apps(&backend).await;
    first
        .execute(
            "c1",
            OpenCourse {
                title: "Rust".into(),
                capacity: 1,
            },
        )
        .await
        .unwrap();
    first
        .decide(Subscription::of("c1", "s1"), Subscribe)
        .await
        .unwrap();
    assert!(matches!(
        first.decide(Subscription::of("c1", "s2"), Subscribe).await,
        Err(CommandError::Domain(SubscriptionError::CourseFull(_)))
    ));
    second
        .execute("c1", ChangeCapacity { capacity: 3 })
        .await
        .unwrap();
    second
        .decide(Subscription::of("c1", "s3"), Subscribe)
        .await
        .unwrap();
    first
        .decide(Subscription::of("c1", "s2"), Subscribe)
        .await
        .expect("the raised capacity is seen");
    assert!(matches!(
        first.decide(Subscription::of("c1", "s4"), Subscribe).await,
        Err(CommandError::Domain(SubscriptionError::CourseFull(_)))
    ));
}

/// The same command id decided twice records once and answers the first
/// run's events; a tag no store can keep is refused before anything is
/// read.
async fn decisions_are_idempotent_and_check_their_tags<S>(backend: Backend<S>)
where
    S: EventStore + Clone,
{
    let app = app(backend.store.clone());
    let metadata = Metadata {
        command_id: Some(Uuid::now_v7()),
        ..Metadata::default()
    };
    let claim = || ClaimUsername {
        user_id: "u1".into(),
    };
    let first = app
        .decide_with(Username::of("ada"), claim(), metadata.clone())
        .await
        .unwrap();
    let again = app
        .decide_with(Username::of("ada"), claim(), metadata)
        .await
        .unwrap();
    assert!(again.duplicate);
    assert_eq!(
        again.events[0].event_id, first.events[0].event_id,
        "the first run's event"
    );
    assert!(matches!(
        app.decide(Username::of("nul\0name"), claim()).await,
        Err(CommandError::InvalidTag(_))
    ));
    let log = backend.store.read_all(1, 100).await.unwrap();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].aggregate_type, "user.username");
    assert_eq!(log[0].aggregate_id, "username:ada");
}

static SUBSCRIPTIONS_SEEN: AtomicUsize = AtomicUsize::new(0);

/// Counts the subscriptions to the course of the test below alone: the
/// other tests of this binary subscribe too, at the same time.
#[event_handler(inline)]
fn count_subscription(event: &StudentSubscribed) {
    if event.course_id == "handled" {
        SUBSCRIPTIONS_SEEN.fetch_add(1, Ordering::SeqCst);
    }
}

/// A decision's events are ordinary events: an inline handler runs on
/// them, and they load as their stream's events.
#[tokio::test]
async fn decided_events_reach_handlers_and_streams() {
    let store = Arc::new(MemoryStore::new());
    let app = app(store.clone());
    app.execute(
        "handled",
        OpenCourse {
            title: "Rust".into(),
            capacity: 3,
        },
    )
    .await
    .unwrap();
    let committed = app
        .decide(Subscription::of("handled", "s1"), Subscribe)
        .await
        .unwrap();
    assert_eq!(SUBSCRIPTIONS_SEEN.load(Ordering::SeqCst), 1);
    assert_eq!(committed.version, 1);
    let stream = store
        .load("course.subscription", &committed.aggregate_id, 1)
        .await
        .unwrap();
    assert_eq!(stream.len(), 1);
    assert_eq!(stream[0].event_name, "course.student_subscribed");
}

on_every_backend!(
    a_course_fills_up_once_under_racing_decisions,
    a_students_limit_holds_across_courses,
    usernames_are_unique_and_disjoint_claims_never_retry,
    kept_states_catch_up_with_other_writers,
    decisions_are_idempotent_and_check_their_tags,
);
