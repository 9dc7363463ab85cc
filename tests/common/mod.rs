//! The bank domain of the README, shared by the behaviour tests.

#![allow(dead_code)]

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

#[derive(Debug, Default, Aggregate)]
#[aggregate(name = "account", command = AccountCommand, event = AccountEvent, error = AccountError)]
pub struct Account {
    pub owner: String,
    pub balance: u64,
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
    fn opened(&mut self, e: &AccountOpened) {
        self.owner = e.owner.clone();
    }

    #[apply]
    fn deposited(&mut self, e: &MoneyDeposited) {
        self.balance = e.balance;
    }

    #[apply]
    fn withdrawn(&mut self, e: &MoneyWithdrawn) {
        self.balance = e.balance;
    }
}
