//! An app hosts the domains it names. This binary links every example
//! domain (the bank, the shop, the two services) and one of its own that
//! needs services: an app hosting the shop runs the shop's processors only,
//! also on events another service's gateway sent it, asks for no other
//! domain's services, and refuses commands for other domains' aggregates.
//! RabbitMQ comes from CQRS_RABBITMQ_URL (scripts/with-brokers); without it
//! the broker test is skipped, except under CI=true, where it fails.

mod support;

use std::time::{Duration, Instant};

use cqrs_core::broker::{Consumer, Gateway, RabbitMq};
use cqrs_core::prelude::*;
use cqrs_core::{BuildError, SqliteStore, Uuid};
use cqrs_examples::bank::{Account, Balance, Bank, DepositMoney, OpenAccount};
use cqrs_examples::shop::{AddProduct, OrderSummary, PlaceOrder, Shop};
use serde::{Deserialize, Serialize};
use support::{delete_exchange, server};

/// A domain whose aggregate needs services.
mod billing {
    use cqrs_core::prelude::*;
    use serde::{Deserialize, Serialize};

    #[derive(Domain)]
    pub struct Billing;

    /// What invoicing needs from outside.
    pub struct Tax {
        pub percent: u64,
    }

    #[derive(Debug, Clone, Serialize, Deserialize)]
    pub struct Issue {
        pub net: u64,
    }

    #[derive(Debug, Clone, Command)]
    pub enum InvoiceCommand {
        Issue(Issue),
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct Issued {
        pub gross: u64,
    }

    #[derive(Debug, Clone, PartialEq, Event)]
    pub enum InvoiceEvent {
        #[event(name = "billing.issued")]
        Issued(Issued),
    }

    #[derive(Debug, thiserror::Error)]
    #[error("never")]
    pub struct Never;

    #[derive(Debug, Default, Aggregate)]
    #[aggregate(name = "billing.invoice", command = InvoiceCommand, event = InvoiceEvent, error = Never, services = Tax)]
    pub struct Invoice;

    #[aggregate_impl]
    impl Invoice {
        #[command_handler(create)]
        fn issue(&self, command: Issue, tax: &Tax) -> Result<Issued, Never> {
            Ok(Issued {
                gross: command.net * (100 + tax.percent) / 100,
            })
        }

        #[apply]
        fn issued(&mut self, _: &Issued) {}
    }
}

/// Units ordered, counted by this test's own code, outside every domain: hosted by
/// every app.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct OrdersSeen {
    pub units: u64,
}

#[projection(name = "test.orders_seen")]
impl OrdersSeen {
    #[event_handler]
    async fn placed(
        event: &cqrs_examples::shop::OrderPlaced,
        views: &mut Views<'_, Self>,
    ) -> Result<(), ViewError> {
        views.get_or_default("all").await?.units += u64::from(event.quantity);
        Ok(())
    }
}

fn shop_app(store: impl EventStore) -> Cqrs {
    Cqrs::builder(store)
        .host::<Shop>()
        .without_event_handlers()
        .poll_interval(Duration::from_millis(20))
        .build()
        .expect("the shop's app needs no other domain's services")
}

fn order(n: u32) -> PlaceOrder {
    PlaceOrder {
        customer: "ada".into(),
        sku: "teapot".into(),
        quantity: n,
        unit_price: 10,
        card: "4242".into(),
    }
}

#[tokio::test]
async fn an_app_runs_and_commands_only_the_domains_it_hosts() {
    let app = shop_app(MemoryStore::new());
    let mut names = app.processors().names();
    names.sort_unstable();
    // `cqrs.deadlines` fires the deadlines of the hosted aggregates (the
    // shop's orders have one); an app hosting none runs none.
    assert_eq!(
        names,
        [
            "cqrs.deadlines",
            "shop.checkout",
            "shop.order_summary",
            "shop.stock_level",
            "test.orders_seen"
        ]
    );
    let bank = Cqrs::builder(MemoryStore::new())
        .host::<Bank>()
        .without_event_handlers()
        .build()
        .unwrap();
    assert!(!bank.processors().names().contains(&"cqrs.deadlines"));

    let refused = app
        .execute(
            "acc-1",
            OpenAccount {
                owner: "ada".into(),
            },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            refused,
            CommandError::NotHosted {
                aggregate_type: "account",
                domain: "Bank"
            }
        ),
        "{refused:?}"
    );
    assert_eq!(
        refused.to_string(),
        "aggregate `account` belongs to domain `Bank`, which this app does not host: \
         add `.host::<Bank>()` to its `CqrsBuilder`"
    );
    let refused = app
        .execute("inv-1", billing::Issue { net: 100 })
        .await
        .unwrap_err();
    assert!(matches!(
        refused,
        CommandError::NotHosted {
            domain: "Billing",
            ..
        }
    ));
    assert_eq!(app.last_position().await.unwrap(), 0, "nothing recorded");

    app.execute("teapot", AddProduct { quantity: 5 })
        .await
        .unwrap();
    app.execute("o-1", order(1)).await.unwrap();
    app.processors().catch_up().await.unwrap();
    let seen: OrdersSeen = app.views().get("all").await.unwrap().unwrap();
    assert_eq!(seen.units, 1, "code outside every domain is hosted");
}

#[tokio::test]
async fn services_are_asked_for_only_for_hosted_aggregates() {
    let app = Cqrs::builder(MemoryStore::new())
        .host::<billing::Billing>()
        .build()
        .unwrap_err();
    assert!(
        matches!(
            app,
            BuildError::MissingServices {
                aggregate: "billing.invoice",
                ..
            }
        ),
        "{app:?}"
    );
    let app = Cqrs::builder(MemoryStore::new())
        .host::<billing::Billing>()
        .host::<Bank>()
        .services::<billing::Invoice>(billing::Tax { percent: 20 })
        .build()
        .unwrap();
    let issued = app
        .execute("inv-1", billing::Issue { net: 100 })
        .await
        .unwrap();
    assert_eq!(
        issued.events[0].payload,
        billing::InvoiceEvent::Issued(billing::Issued { gross: 120 })
    );
    app.execute(
        "acc-1",
        OpenAccount {
            owner: "ada".into(),
        },
    )
    .await
    .unwrap();
}

#[test]
fn an_app_that_would_run_several_domains_must_name_them() {
    let refused = Cqrs::new(MemoryStore::new()).unwrap_err();
    let BuildError::DomainsNotNamed { domains } = &refused else {
        panic!("{refused:?}");
    };
    assert_eq!(
        domains,
        &[
            "`Bank`",
            "`NotifierService`",
            "`OrdersService`",
            "`ShippingService`",
            "`Shop`"
        ]
    );
    assert!(
        refused
            .to_string()
            .ends_with("name the domains it hosts with `CqrsBuilder::host::<..>()`"),
        "{refused}"
    );
    // One domain's processors, as a filter leaves them, are no ambiguity.
    Cqrs::builder(MemoryStore::new())
        .processors(|processor| processor.name.starts_with("shop."))
        .without_event_handlers()
        .services::<billing::Invoice>(billing::Tax { percent: 0 })
        .build()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn received_events_reach_only_the_processors_of_hosted_domains() {
    let Some(url) = server("CQRS_RABBITMQ_URL") else {
        return;
    };
    let exchange = format!("cqrs-test-domains-{}", Uuid::now_v7().simple());
    let queue = format!("{exchange}.shop");

    // The bank publishes its accounts' events.
    let bank = Cqrs::builder(MemoryStore::new())
        .host::<Bank>()
        .gateway(
            Gateway::new("bank.gateway", RabbitMq::new(&url, &exchange)).aggregate::<Account>(),
        )
        .build()
        .unwrap();
    // The shop records them in its own log, and records its own orders.
    let file = std::env::temp_dir().join(format!("{exchange}.sqlite"));
    let shop = shop_app(SqliteStore::open(&file).await.unwrap());
    let unnamed = Cqrs::builder(MemoryStore::new())
        .without_processors()
        .without_event_handlers()
        .services::<billing::Invoice>(billing::Tax { percent: 0 })
        .build()
        .unwrap();
    assert!(matches!(
        Consumer::new(&queue, &unnamed, RabbitMq::new(&url, &exchange)),
        Err(BuildError::DomainsNotNamed { .. })
    ));
    let consumer = Consumer::new(
        &queue,
        &shop,
        RabbitMq::new(&url, &exchange).aggregate::<Account>(),
    )
    .unwrap();
    consumer.declare().await.unwrap();
    let consuming = consumer.run();
    let consumer_shutdown = consuming.shutdown();
    let consuming = tokio::spawn(consuming);
    let publishing = bank.processors().run();
    let bank_shutdown = publishing.shutdown();
    let publishing = tokio::spawn(publishing);
    let processing = shop.processors().run();
    let shop_shutdown = processing.shutdown();
    let processing = tokio::spawn(processing);

    for n in 0..5 {
        let id = format!("acc-{n}");
        bank.execute(&id, OpenAccount { owner: id.clone() })
            .await
            .unwrap();
        bank.execute(&id, DepositMoney { amount: 10 })
            .await
            .unwrap();
    }
    shop.execute("teapot", AddProduct { quantity: 5 })
        .await
        .unwrap();
    shop.execute("o-1", order(2)).await.unwrap();
    let started = Instant::now();
    while consumer.status().recorded < 10 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the bank's events reach the shop's log: {:?}",
            consumer.status()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let head = shop.last_position().await.unwrap();
    shop.processors().wait_for_all(head).await.unwrap();

    let log = shop.read_all(1, 100).await.unwrap();
    assert_eq!(
        log.iter()
            .filter(|event| event.aggregate_type == "account")
            .count(),
        10,
        "the bank's events are in the shop's log"
    );
    // The shop's processors handled its order; no bank projection ran on
    // the bank's events, on this app's views.
    let summary: OrderSummary = shop.views().get("o-1").await.unwrap().unwrap();
    assert_eq!(summary.quantity, 2);
    for n in 0..5 {
        let balance: Option<Balance> = shop.views().get(&format!("acc-{n}")).await.unwrap();
        assert!(balance.is_none(), "acc-{n} has no balance view in the shop");
    }
    assert!(
        shop.processors()
            .status()
            .iter()
            .all(|processor| !processor.name.starts_with("bank.")),
        "no bank processor is hosted"
    );
    // And the bank's app still refuses the shop's commands.
    assert!(matches!(
        bank.execute("o-2", order(1)).await,
        Err(CommandError::NotHosted { domain: "Shop", .. })
    ));

    consumer_shutdown.now().await;
    consuming.await.unwrap().unwrap();
    shop_shutdown.now().await;
    bank_shutdown.now().await;
    processing.await.unwrap().unwrap();
    publishing.await.unwrap().unwrap();
    let dead_letters = format!("{queue}.dead-letter");
    delete_exchange(&url, &exchange, &[&queue, &dead_letters]).await;
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", file.display()));
    }
}
