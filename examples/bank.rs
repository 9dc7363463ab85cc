//! A bank account, the walk-through of the README: open an account, deposit,
//! have a withdrawal rejected, replay the state from the log, query a view,
//! and watch two event handlers that registered themselves: a durable one
//! that follows the log from its checkpoint, and an inline one that runs
//! right after each commit. The domain is `cqrs_examples::bank` (in
//! `src/bank.rs`).
//!
//! The accounts live in `bank.sqlite` in the current directory, so a second
//! run continues where the first stopped. Delete the file to start over.
//!
//! ```text
//! cargo run --example bank                              # SQLite file bank.sqlite
//! cargo run --example bank -- --sqlite /tmp/other.db    # another file
//! cargo run --example bank -- --postgres postgres://user@127.0.0.1/bank
//! CQRS_POSTGRES_URL=postgres://... cargo run --example bank
//! ```

use cqrs_core::prelude::*;
use cqrs_core::{BuildError, LoadError, PostgresStore, SqliteStore};
use cqrs_examples::bank::*;

/// Durable (the default): follows the log from its own checkpoint, at least
/// once, so a withdrawal committed just before a crash is audited after the
/// restart; it runs while the app's processors do.
#[event_handler]
fn audit_withdrawal(event: &MoneyWithdrawn, envelope: &Envelope<AccountEvent>) {
    println!(
        "  [audit] {} withdrew {} (event {} at position {})",
        envelope.aggregate_id, event.amount, envelope.event_id, envelope.position
    );
}

/// Inline: runs right after the commit, in this process, at most once (a
/// crash in between loses it); its failures come back in `Committed`.
#[event_handler(inline)]
fn notify_deposit(event: &MoneyDeposited, envelope: &Envelope<AccountEvent>) {
    println!(
        "  [notify] {} received {}",
        envelope.aggregate_id, event.amount
    );
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let option = |name: &str| {
        args.windows(2)
            .find(|pair| pair[0] == name)
            .map(|pair| pair[1].clone())
    };
    let postgres = option("--postgres").or_else(|| std::env::var("CQRS_POSTGRES_URL").ok());
    match postgres {
        Some(url) => {
            println!("store: PostgreSQL at {url}");
            run(app(PostgresStore::connect(&url).await?)?).await
        }
        None => {
            let path = option("--sqlite").unwrap_or_else(|| "bank.sqlite".to_owned());
            println!("store: SQLite file {path} (delete it to start over)");
            run(app(SqliteStore::open(&path).await?)?).await
        }
    }
}

/// The bank's app. A program with one domain needs only `Cqrs::new(store)`;
/// this crate holds four example domains, so the app names its own.
fn app(store: impl EventStore) -> Result<Cqrs, BuildError> {
    Cqrs::builder(store).host::<Bank>().build()
}

async fn run(app: Cqrs) -> Result<(), Box<dyn std::error::Error>> {
    let id = "acc-1";
    match app.load::<Account>(id).await {
        Ok(account) => println!(
            "{id} already exists with balance {}: continuing from the log",
            account.balance
        ),
        Err(LoadError::NotFound { .. }) => {
            let done = app
                .execute(
                    id,
                    OpenAccount {
                        owner: "ada".into(),
                    },
                )
                .await?;
            println!("opened {id} for ada: version {}", done.version);
        }
        Err(error) => return Err(error.into()),
    }

    let done = app.execute(id, DepositMoney { amount: 100 }).await?;
    println!("deposited 100: version {}", done.version);

    match app.execute(id, WithdrawMoney { amount: 500 }).await {
        Err(CommandError::Domain(error)) => println!("withdrawing 500 was rejected: {error}"),
        Ok(done) => println!("withdrew 500: version {}", done.version),
        Err(error) => return Err(error.into()),
    }

    let done = app.execute(id, WithdrawMoney { amount: 30 }).await?;
    println!("withdrew 30: version {}", done.version);

    let account: Account = app.load(id).await?;
    println!("replayed from the log: {account:?}");

    // The durable handler and the projection follow the log: a service runs
    // them with `app.processors().run()`, a short program catches them up.
    println!("catching up the processors:");
    app.processors().catch_up().await?;
    if let Some(balance) = app.views().get::<Balance>(id).await? {
        println!(
            "the balances view: {id} holds {} after {} events",
            balance.balance, balance.events
        );
    }

    let log = app.read_all(1, usize::MAX).await?;
    println!("the log holds {} events; the newest:", log.len());
    for envelope in log.iter().rev().take(5).rev() {
        println!(
            "  #{} {}/{} seq {} {} v{} {}",
            envelope.position,
            envelope.aggregate_type,
            envelope.aggregate_id,
            envelope.sequence,
            envelope.event_name,
            envelope.event_version,
            envelope.payload
        );
    }
    Ok(())
}
