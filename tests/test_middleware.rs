//! Command middleware on the shop of `cqrs_examples::shop`: one
//! authorization layer sees the commands a request sends and those the
//! checkout process manager sends for it, with the request's user; what it
//! rejects is not loaded or stored, and a validation layer and a metadata
//! layer run beside it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use cqrs_core::middleware::{CommandLayer, CommandRequest, Rejection};
use cqrs_core::processor::RetryPolicy;
use cqrs_core::{CommandError, Cqrs, LoadError, MemoryStore, Metadata};
use cqrs_examples::shop::*;

/// What the authorization layer saw: command, user, and whether a process
/// manager sent it (it has a causation id).
type Seen = Arc<Mutex<Vec<(&'static str, Option<String>, bool)>>>;

/// Every command needs a user; `mallory` may send none, and `bob` may not
/// pay (so his orders stop at the payment).
fn authorization(seen: Seen) -> impl CommandLayer {
    move |request: &mut CommandRequest<'_>| {
        let user = request.metadata().values.get("user").cloned();
        seen.lock().unwrap().push((
            request.command_name(),
            user.clone(),
            request.metadata().causation_id.is_some(),
        ));
        match user.as_deref() {
            None => Err(Rejection::Unauthenticated("no user".into())),
            Some("mallory") => Err(Rejection::Forbidden("mallory may send nothing".into())),
            Some("bob") if request.command_name() == "ChargeCard" => {
                Err(Rejection::Forbidden("bob may not pay".into()))
            }
            Some(_) => Ok(()),
        }
    }
}

/// Orders of no units are invalid, whoever places them.
fn validation(request: &mut CommandRequest<'_>) -> Result<(), Rejection> {
    match request.command::<OrderCommand>() {
        Some(OrderCommand::Place(place)) if place.quantity == 0 => Err(Rejection::Invalid(
            "an order needs at least one unit".into(),
        )),
        _ => Ok(()),
    }
}

/// Records the tenant on every command.
fn tenant(request: &mut CommandRequest<'_>) -> Result<(), Rejection> {
    request
        .metadata_mut()
        .values
        .insert("tenant".into(), "acme".into());
    Ok(())
}

fn as_user(user: &str) -> Metadata {
    Metadata::default().with("user", user)
}

fn place(quantity: u32) -> PlaceOrder {
    PlaceOrder {
        customer: "c-1".into(),
        sku: "teapot".into(),
        quantity,
        unit_price: 100,
        card: "4242".into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_layer_authorizes_a_requests_commands_and_its_process_managers() {
    let seen = Seen::default();
    let app = Cqrs::builder(MemoryStore::new())
        .without_event_handlers()
        .processors(|registration| registration.name == "shop.checkout")
        .retry_policy(
            RetryPolicy::default()
                .max_attempts(2)
                .delays(Duration::from_millis(10), Duration::from_millis(10)),
        )
        .layer(tenant)
        .layer(authorization(seen.clone()))
        .layer(validation)
        .build()
        .unwrap();
    let running = tokio::spawn(app.processors().run());

    app.execute_with("teapot", AddProduct { quantity: 10 }, as_user("admin"))
        .await
        .unwrap();
    // Alice's order goes through: the checkout's three commands carry her
    // user and pass the same layer.
    app.execute_with("order-1", place(2), as_user("alice"))
        .await
        .unwrap();
    let last = app.last_position().await.unwrap();
    app.processors().wait_for_all(last).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let order: Order = app.load("order-1").await.unwrap();
        if order.status == OrderStatus::Confirmed {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{order:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let alice: Vec<(&str, bool)> = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, user, _)| user.as_deref() == Some("alice"))
        .map(|(command, _, by_manager)| (*command, *by_manager))
        .collect();
    assert_eq!(
        alice,
        [
            ("PlaceOrder", false),
            ("ReserveStock", true),
            ("ChargeCard", true),
            ("ConfirmOrder", true)
        ]
    );
    // The enriched metadata is on every event of the order's commands.
    let log = app.read_all(1, 100).await.unwrap();
    assert!(
        log.iter()
            .all(|event| event.metadata.values.get("tenant").map(String::as_str) == Some("acme")),
        "{log:?}"
    );

    // Rejected before anything is loaded: nothing is stored.
    let before = app.last_position().await.unwrap();
    let rejected = [
        (Metadata::default(), place(1), "not authenticated: no user"),
        (
            as_user("mallory"),
            place(1),
            "forbidden: mallory may send nothing",
        ),
        (
            as_user("alice"),
            place(0),
            "invalid command: an order needs at least one unit",
        ),
    ];
    for (metadata, command, reason) in rejected {
        let error = app
            .execute_with("order-2", command, metadata)
            .await
            .unwrap_err();
        match &error {
            CommandError::Rejected { command, rejection } => {
                assert_eq!(*command, "PlaceOrder");
                assert_eq!(rejection.to_string(), reason);
            }
            other => panic!("not a rejection: {other:?}"),
        }
        assert_eq!(error.to_string(), format!("PlaceOrder rejected: {reason}"));
    }
    assert_eq!(app.last_position().await.unwrap(), before);
    assert!(matches!(
        app.load::<Order>("order-2").await,
        Err(LoadError::NotFound { .. })
    ));

    // Bob's order is placed and reserved, and the layer refuses the
    // checkout's payment: the event is parked and no payment is stored.
    app.execute_with("order-3", place(1), as_user("bob"))
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let parked = loop {
        let parked = app.processors().parked("shop.checkout").await.unwrap();
        if !parked.is_empty() {
            break parked;
        }
        assert!(tokio::time::Instant::now() < deadline, "nothing parked");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(parked.len(), 1);
    assert!(
        parked[0]
            .error
            .as_deref()
            .is_some_and(|error| error.contains("ChargeCard rejected: forbidden: bob may not pay")),
        "{parked:?}"
    );
    assert!(matches!(
        app.load::<Payment>("order-3").await,
        Err(LoadError::NotFound { .. })
    ));
    assert!(
        seen.lock()
            .unwrap()
            .contains(&("ChargeCard", Some("bob".to_owned()), true))
    );
    running.abort();
}
