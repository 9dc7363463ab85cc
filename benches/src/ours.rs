//! The bank account of the README, on this framework.

use cqrs_core::prelude::*;
use serde::{Deserialize, Serialize};

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

#[derive(Debug, Clone, PartialEq, Event)]
pub enum AccountEvent {
    #[event(name = "bank.opened")]
    Opened(AccountOpened),
    #[event(name = "bank.deposited")]
    Deposited(MoneyDeposited),
    #[event(name = "bank.withdrawn")]
    Withdrawn(MoneyWithdrawn),
}

#[derive(Debug, PartialEq, thiserror::Error)]
pub enum AccountError {
    #[error("insufficient funds: balance {balance}, requested {requested}")]
    InsufficientFunds { balance: u64, requested: u64 },
}

#[derive(Debug, Default, Aggregate)]
#[aggregate(name = "bank.account", command = AccountCommand, event = AccountEvent, error = AccountError)]
pub struct Account {
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
    fn opened(&mut self, _: &AccountOpened) {}

    #[apply]
    fn deposited(&mut self, event: &MoneyDeposited) {
        self.balance = event.balance;
    }

    #[apply]
    fn withdrawn(&mut self, event: &MoneyWithdrawn) {
        self.balance = event.balance;
    }
}

/// One document per account, for the rebuild benchmark.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Balance {
    pub balance: u64,
    pub events: u64,
}

#[projection(name = "bench.balances")]
impl Balance {
    #[event_handler]
    async fn opened(
        _: &AccountOpened,
        envelope: &Envelope,
        views: &mut Views<'_, Self>,
    ) -> Result<(), ViewError> {
        views.insert(
            envelope.aggregate_id.clone(),
            Balance {
                balance: 0,
                events: 1,
            },
        );
        Ok(())
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
