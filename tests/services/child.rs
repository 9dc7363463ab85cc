//! A service as a child process: `child orders|shipping --database FILE
//! --namespace NAME (--rabbitmq URL | --nats URL) [--orders N]`. It prints
//! `ready`, `placed N` as it places orders (orders only, skipping those an
//! earlier run placed) and every 200 ms `status DELIVERIES RECORDED
//! DUPLICATES DEAD`, its consumer's counts, until asked to stop. On stderr
//! it says each time its consumer's or its gateway's state changes, so a
//! scenario that stalls can say which side stopped.

use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::Duration;

use cqrs_core::broker::ConsumerStatus;
use cqrs_core::{CommandError, Cqrs};
use cqrs_examples::services::{PlaceOrder, Role, Service, ServiceConfig};

use super::process::stop_requested;

pub fn main(args: &[String]) -> ExitCode {
    let role = match args.first().map(String::as_str) {
        Some("orders") => Role::Orders,
        Some("shipping") => Role::Shipping,
        other => {
            eprintln!("child: unknown role {other:?}");
            return ExitCode::from(2);
        }
    };
    let config = match ServiceConfig::from_args(role, &args[1..]) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("child: {error}");
            return ExitCode::from(2);
        }
    };
    let orders: usize = args
        .windows(2)
        .find(|pair| pair[0] == "--orders")
        .and_then(|pair| pair[1].parse().ok())
        .unwrap_or(0);
    let stop = stop_requested();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async move {
        let service = Service::start(&config).await.expect("the service starts");
        println!("ready");
        let reporter = {
            let stop = stop.clone();
            let consumer = service.consumer();
            let app = service.app.clone();
            tokio::spawn(async move {
                let mut state = String::new();
                while !stop.load(Ordering::SeqCst) {
                    let status = consumer.status();
                    println!(
                        "status {} {} {} {}",
                        status.deliveries, status.recorded, status.duplicates, status.dead_lettered
                    );
                    let now = describe(&status, &app);
                    if now != state {
                        eprintln!("state {now}");
                        state = now;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            })
        };
        for n in 0..orders {
            if stop.load(Ordering::SeqCst) {
                break;
            }
            let place = PlaceOrder {
                item: "teapot".into(),
                quantity: 1 + (n % 3) as u32,
            };
            loop {
                match service
                    .app
                    .execute(&format!("order-{n}"), place.clone())
                    .await
                {
                    Ok(_) | Err(CommandError::AlreadyExists { .. }) => break,
                    Err(error) => {
                        eprintln!("child: placing order-{n}: {error}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
            if (n + 1) % 100 == 0 || n + 1 == orders {
                println!("placed {}", n + 1);
            }
        }
        while !stop.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = reporter.await;
        service.stop().await;
    });
    ExitCode::SUCCESS
}

/// The consumer's and the gateway's state, without their counts.
fn describe(consumer: &ConsumerStatus, app: &Cqrs) -> String {
    let gateway = app
        .processors()
        .status()
        .into_iter()
        .find(|processor| processor.name.ends_with(".gateway"))
        .map(|gateway| {
            let owned = gateway
                .segments
                .iter()
                .filter(|segment| segment.owned_here)
                .count();
            let failure = gateway.failure.map(|failure| failure.to_string());
            format!("owns {owned} segment(s), failure {failure:?}")
        });
    format!(
        "consumer active {} connected {} error {:?}; gateway {gateway:?}",
        consumer.active, consumer.connected, consumer.last_error
    )
}
