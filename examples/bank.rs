//! A bank account, the walk-through of the README: open an account, deposit,
//! have a withdrawal rejected, replay the state from the log, and watch an
//! event handler that registered itself.
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
use cqrs_core::{LoadError, PostgresStore, SqliteStore};
use serde::{Deserialize, Serialize};

// Commands: plain structs, gathered in one enum per aggregate.

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OpenAccount {
    pub owner: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DepositMoney {
    pub amount: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WithdrawMoney {
    pub amount: u64,
}

#[derive(Debug, Clone, Command)]
pub enum AccountCommand {
    Open(OpenAccount),
    Deposit(DepositMoney),
    Withdraw(WithdrawMoney),
}

// Events: what happened, kept forever under a stored name.

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccountOpened {
    pub owner: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MoneyDeposited {
    pub amount: u64,
    pub balance: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MoneyWithdrawn {
    pub amount: u64,
    pub balance: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Event)]
pub enum AccountEvent {
    Opened(AccountOpened),
    #[event(name = "account.deposited", version = 1)]
    Deposited(MoneyDeposited),
    Withdrawn(MoneyWithdrawn),
}

#[derive(Debug, PartialEq, thiserror::Error)]
pub enum AccountError {
    #[error("insufficient funds: balance {balance}, requested {requested}")]
    InsufficientFunds { balance: u64, requested: u64 },
}

// The aggregate: state, command handlers that decide, and #[apply] methods
// that change the state. Leave out a handler and the build fails.

#[derive(Debug, Default, Aggregate)]
#[aggregate(name = "account", command = AccountCommand, event = AccountEvent, error = AccountError)]
pub struct Account {
    balance: u64,
}

#[aggregate_impl]
impl Account {
    #[command_handler(create)]
    fn open(&self, cmd: OpenAccount) -> Result<AccountOpened, AccountError> {
        Ok(AccountOpened { owner: cmd.owner })
    }

    #[command_handler]
    fn deposit(&self, cmd: DepositMoney) -> Result<MoneyDeposited, AccountError> {
        Ok(MoneyDeposited {
            amount: cmd.amount,
            balance: self.balance + cmd.amount,
        })
    }

    #[command_handler]
    fn withdraw(&self, cmd: WithdrawMoney) -> Result<Vec<AccountEvent>, AccountError> {
        if cmd.amount > self.balance {
            return Err(AccountError::InsufficientFunds {
                balance: self.balance,
                requested: cmd.amount,
            });
        }
        Ok(vec![
            MoneyWithdrawn {
                amount: cmd.amount,
                balance: self.balance - cmd.amount,
            }
            .into(),
        ])
    }

    #[apply]
    fn opened(&mut self, _e: &AccountOpened) {}

    #[apply]
    fn deposited(&mut self, e: &MoneyDeposited) {
        self.balance = e.balance;
    }

    #[apply]
    fn withdrawn(&mut self, e: &MoneyWithdrawn) {
        self.balance = e.balance;
    }
}

// Registered through inventory: no wiring code anywhere.
#[event_handler]
fn audit_withdrawal(e: &MoneyWithdrawn, envelope: &Envelope<AccountEvent>) {
    println!(
        "  [audit] {} withdrew {} (event {} at position {})",
        envelope.aggregate_id, e.amount, envelope.event_id, envelope.position
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
            run(Cqrs::new(PostgresStore::connect(&url).await?)?).await
        }
        None => {
            let path = option("--sqlite").unwrap_or_else(|| "bank.sqlite".to_owned());
            println!("store: SQLite file {path} (delete it to start over)");
            run(Cqrs::new(SqliteStore::open(&path).await?)?).await
        }
    }
}

async fn run<S: EventStore>(app: Cqrs<S>) -> Result<(), Box<dyn std::error::Error>> {
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

    println!("withdrawing 30:");
    let done = app.execute(id, WithdrawMoney { amount: 30 }).await?;
    println!("withdrew 30: version {}", done.version);

    let account: Account = app.load(id).await?;
    println!("replayed from the log: {account:?}");

    let log = app.store().read_all(1, usize::MAX).await?;
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
