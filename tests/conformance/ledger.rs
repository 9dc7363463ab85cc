//! A ledger with snapshots every 5 events and an event at its second schema
//! version, for the snapshot, upcasting and bad-data checks.

use cqrs_core::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Open {
    pub owner: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Credit {
    pub amount: u64,
}

#[derive(Debug, Clone, Command)]
pub enum LedgerCommand {
    Open(Open),
    Credit(Credit),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Opened {
    pub owner: String,
}

/// Version 2: whole units.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Credited {
    pub amount: u64,
}

/// Version 1 counted cents.
#[derive(Debug, Clone, Deserialize)]
pub struct CreditedInCents {
    pub cents: u64,
}

impl From<CreditedInCents> for Credited {
    fn from(old: CreditedInCents) -> Self {
        Credited {
            amount: old.cents / 100,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Event)]
pub enum LedgerEvent {
    #[event(name = "ledger.opened")]
    Opened(Opened),
    #[event(name = "ledger.credited", version = 2, upcast(1 = CreditedInCents))]
    Credited(Credited),
}

#[derive(Debug, thiserror::Error)]
#[error("never")]
pub struct Never;

#[derive(Debug, Default, Serialize, Deserialize, Aggregate)]
#[aggregate(
    name = "ledger",
    command = LedgerCommand,
    event = LedgerEvent,
    error = Never,
    snapshot_every = 5,
    snapshot_version = 2
)]
pub struct Ledger {
    pub balance: u64,
    /// How many events this instance applied itself, not restored from a
    /// snapshot: shows how much of the stream a load replayed.
    #[serde(skip)]
    pub replayed: u64,
}

#[aggregate_impl]
impl Ledger {
    #[command_handler(create)]
    fn open(&self, command: Open) -> Result<Opened, Never> {
        Ok(Opened {
            owner: command.owner,
        })
    }

    #[command_handler]
    fn credit(&self, command: Credit) -> Result<Credited, Never> {
        Ok(Credited {
            amount: command.amount,
        })
    }

    #[apply]
    fn opened(&mut self, _: &Opened) {
        self.replayed += 1;
    }

    #[apply]
    fn credited(&mut self, event: &Credited) {
        self.balance += event.amount;
        self.replayed += 1;
    }
}
