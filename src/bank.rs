//! A bank account, the domain of the README: open, deposit, and withdraw
//! no more than the balance; and a view of each account's balance.

use cqrs_core::prelude::*;
use serde::{Deserialize, Serialize};

/// The bank's domain: an app hosts it with `CqrsBuilder::host::<Bank>()`.
#[derive(Domain)]
pub struct Bank;

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
    pub owner: String,
    pub balance: u64,
}

#[aggregate_impl]
impl Account {
    #[command_handler(create)]
    fn open(&self, command: OpenAccount) -> Result<AccountOpened, AccountError> {
        Ok(AccountOpened {
            owner: command.owner,
        })
    }

    #[command_handler]
    fn deposit(&self, command: DepositMoney) -> Result<MoneyDeposited, AccountError> {
        Ok(MoneyDeposited {
            amount: command.amount,
            balance: self.balance + command.amount,
        })
    }

    #[command_handler]
    fn withdraw(&self, command: WithdrawMoney) -> Result<MoneyWithdrawn, AccountError> {
        if command.amount > self.balance {
            return Err(AccountError::InsufficientFunds {
                balance: self.balance,
                requested: command.amount,
            });
        }
        Ok(MoneyWithdrawn {
            amount: command.amount,
            balance: self.balance - command.amount,
        })
    }

    #[apply]
    fn opened(&mut self, event: &AccountOpened) {
        self.owner.clone_from(&event.owner);
    }

    #[apply]
    fn deposited(&mut self, event: &MoneyDeposited) {
        self.balance = event.balance;
    }

    #[apply]
    fn withdrawn(&mut self, event: &MoneyWithdrawn) {
        self.balance = event.balance;
    }
}

/// One view per account: its balance and how many events it has seen.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Balance {
    pub balance: u64,
    pub events: u64,
}

#[projection(name = "bank.balances")]
impl Balance {
    #[event_handler]
    fn opened(_: &AccountOpened, envelope: &Envelope, views: &mut Views<'_, Self>) {
        views.insert(
            envelope.aggregate_id.clone(),
            Balance {
                balance: 0,
                events: 1,
            },
        );
    }

    #[event_handler]
    async fn deposited(
        event: &MoneyDeposited,
        envelope: &Envelope,
        views: &mut Views<'_, Self>,
    ) -> Result<(), ViewError> {
        Self::record(views, envelope, event.balance).await
    }

    #[event_handler]
    async fn withdrawn(
        event: &MoneyWithdrawn,
        envelope: &Envelope,
        views: &mut Views<'_, Self>,
    ) -> Result<(), ViewError> {
        Self::record(views, envelope, event.balance).await
    }
}

impl Balance {
    async fn record(
        views: &mut Views<'_, Self>,
        envelope: &Envelope,
        balance: u64,
    ) -> Result<(), ViewError> {
        let account = views.get_or_default(&envelope.aggregate_id).await?;
        account.balance = balance;
        account.events += 1;
        Ok(())
    }
}
