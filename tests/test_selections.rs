//! Gateways and consumers select aggregates and events by Rust type; names
//! given as strings are checked against the registry, and one that selects
//! nothing is a `BuildError` naming the closest known name.

use std::sync::{Arc, Mutex};

use cqrs_core::broker::{
    Consumer, Gateway, JetStream, Outgoing, PublishFailure, Publisher, RabbitMq, SelectionKind,
    Subscription, UnknownSelection,
};
use cqrs_core::{BoxFuture, BuildError, Cqrs, MemoryStore};
use cqrs_examples::bank::{Bank, DepositMoney, MoneyDeposited, OpenAccount};
use cqrs_examples::services::{Order, OrderPlaced};

/// Keeps the routing key of every event it is given.
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<String>>>);

impl Publisher for Recorder {
    fn publish<'a>(
        &'a self,
        batch: &'a [Outgoing<'a>],
    ) -> BoxFuture<'a, Result<(), PublishFailure>> {
        let mut published = self.0.lock().unwrap();
        published.extend(batch.iter().map(Outgoing::routing_key));
        Box::pin(std::future::ready(Ok(())))
    }
}

fn app_with(gateway: Gateway) -> Result<Cqrs, BuildError> {
    Cqrs::builder(MemoryStore::new())
        .host::<Bank>()
        .without_event_handlers()
        .without_processors()
        .gateway(gateway)
        .build()
}

fn unknown(error: BuildError) -> UnknownSelection {
    match error {
        BuildError::UnknownSelection(unknown) => unknown,
        other => panic!("expected an unknown selection, got {other:?}"),
    }
}

#[test]
fn a_gateway_name_that_selects_nothing_stops_the_build() {
    let error =
        app_with(Gateway::new("bank.gateway", Recorder::default()).aggregate_types(["Account"]))
            .unwrap_err();
    assert_eq!(
        error.to_string(),
        "gateway `bank.gateway` selects aggregate type `Account`, which no registered \
         aggregate is stored as; did you mean `account`?"
    );
    let error = unknown(
        app_with(Gateway::new("bank.gateway", Recorder::default()).events(["account.depositd"]))
            .unwrap_err(),
    );
    assert_eq!(error.kind, SelectionKind::Event);
    assert_eq!(error.name, "account.depositd");
    assert_eq!(error.closest.as_deref(), Some("account.deposited"));

    let known = Gateway::new("bank.gateway", Recorder::default())
        .aggregate_types(["account"])
        .events(["account.deposited"]);
    assert!(app_with(known).is_ok());
}

#[tokio::test]
async fn a_typed_gateway_publishes_what_it_names() {
    let recorder = Recorder::default();
    let app =
        app_with(Gateway::new("bank.gateway", recorder.clone()).event::<MoneyDeposited>()).unwrap();
    app.execute(
        "a-1",
        OpenAccount {
            owner: "ada".into(),
        },
    )
    .await
    .unwrap();
    app.execute("a-1", DepositMoney { amount: 5 })
        .await
        .unwrap();
    app.processors().catch_up().await.unwrap();
    assert_eq!(
        *recorder.0.lock().unwrap(),
        ["account.account.deposited"],
        "the opening is not published"
    );
}

#[tokio::test]
async fn a_binding_that_matches_nothing_refuses_the_consumer() {
    let app = app_with(Gateway::new("bank.gateway", Recorder::default())).unwrap();
    let url = "amqp://guest:guest@127.0.0.1:5672/%2f";

    let error = Consumer::new(
        "shipping",
        &app,
        RabbitMq::new(url, "shop").bind(["Order.OrderPlacd"]),
    )
    .err()
    .map(unknown)
    .expect("refused");
    assert_eq!(error.kind, SelectionKind::Binding);
    assert_eq!(error.owner, "consumer `shipping`");
    assert_eq!(error.closest.as_deref(), Some("Order.OrderPlaced"));
    let nats = JetStream::new("nats://127.0.0.1:4222", "SHOP", "shop").bind(["order.>"]);
    assert!(matches!(
        Consumer::new("shipping", &app, nats),
        Err(BuildError::UnknownSelection(_))
    ));

    // Patterns that match, and typed bindings.
    for patterns in [["Order.*"], ["Order.#"], ["#.OrderPlaced"], ["account.#"]] {
        let rabbit = RabbitMq::new(url, "shop").bind(patterns);
        assert!(
            Consumer::new("shipping", &app, rabbit).is_ok(),
            "{patterns:?}"
        );
    }
    let typed = RabbitMq::new(url, "shop")
        .event::<OrderPlaced>()
        .aggregate::<Order>();
    assert_eq!(typed.bindings(), ["Order.OrderPlaced", "Order.#"]);
    assert!(Consumer::new("shipping", &app, typed).is_ok());
    let typed = JetStream::new("nats://127.0.0.1:4222", "SHOP", "shop")
        .event::<OrderPlaced>()
        .aggregate::<Order>();
    assert_eq!(typed.bindings(), ["Order.OrderPlaced", "Order.>"]);
    assert!(Consumer::new("shipping", &app, typed).is_ok());
}
