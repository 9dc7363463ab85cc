//! A service as a child process: `child orders|shipping --database FILE
//! --namespace NAME (--rabbitmq URL | --nats URL) [--orders N]`. It prints
//! `ready`, `placed N` as it places orders (orders only, skipping those an
//! earlier run placed) and every 200 ms `status DELIVERIES RECORDED
//! DUPLICATES DEAD`, its consumer's counts, until asked to stop.

use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::Duration;

use cqrs_core::CommandError;
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
            tokio::spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    let status = consumer.status();
                    println!(
                        "status {} {} {} {}",
                        status.deliveries, status.recorded, status.duplicates, status.dead_lettered
                    );
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
