//! The same bank account on cqrs-es 0.5, the most used Rust CQRS crate, and
//! an in-memory `PersistedEventRepository` for its serde_json path (the one
//! its database stores use).

use std::collections::HashMap;
use std::sync::Mutex;

use cqrs_es::event_sink::EventSink;
use cqrs_es::mem_store::MemStore;
use cqrs_es::persist::{
    PersistedEventRepository, PersistenceError, ReplayStream, SerializedEvent, SerializedSnapshot,
};
use cqrs_es::{Aggregate, DomainEvent, EventEnvelope};
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Clone, Deserialize)]
pub enum BankCommand {
    Open { owner: String },
    Deposit { amount: u64 },
    Withdraw { amount: u64 },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum BankEvent {
    Opened { owner: String },
    Deposited { amount: u64, balance: u64 },
    Withdrawn { amount: u64, balance: u64 },
}

impl DomainEvent for BankEvent {
    fn event_type(&self) -> String {
        match self {
            BankEvent::Opened { .. } => "Opened",
            BankEvent::Deposited { .. } => "Deposited",
            BankEvent::Withdrawn { .. } => "Withdrawn",
        }
        .to_owned()
    }

    fn event_version(&self) -> String {
        "1".to_owned()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("insufficient funds")]
pub struct BankError;

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct BankAccount {
    pub balance: u64,
}

impl Aggregate for BankAccount {
    const TYPE: &'static str = "account";
    type Command = BankCommand;
    type Event = BankEvent;
    type Error = BankError;
    type Services = ();

    async fn handle(
        &mut self,
        command: BankCommand,
        _: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), BankError> {
        let event = match command {
            BankCommand::Open { owner } => BankEvent::Opened { owner },
            BankCommand::Deposit { amount } => BankEvent::Deposited {
                amount,
                balance: self.balance + amount,
            },
            BankCommand::Withdraw { amount } => {
                if amount > self.balance {
                    return Err(BankError);
                }
                BankEvent::Withdrawn {
                    amount,
                    balance: self.balance - amount,
                }
            }
        };
        sink.write(event, self).await;
        Ok(())
    }

    fn apply(&mut self, event: BankEvent) {
        match event {
            BankEvent::Opened { .. } => {}
            BankEvent::Deposited { balance, .. } | BankEvent::Withdrawn { balance, .. } => {
                self.balance = balance
            }
        }
    }
}

/// Serialized events per aggregate id in memory, with the same optimistic
/// check a database gives through its primary key.
#[derive(Debug, Default)]
pub struct MemoryRepository {
    streams: Mutex<HashMap<String, Vec<SerializedEvent>>>,
}

impl PersistedEventRepository for MemoryRepository {
    async fn get_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        let streams = self.streams.lock().expect("not poisoned");
        Ok(streams.get(aggregate_id).cloned().unwrap_or_default())
    }

    async fn get_last_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
        last_sequence: usize,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        let streams = self.streams.lock().expect("not poisoned");
        Ok(streams
            .get(aggregate_id)
            .map(|events| {
                events
                    .iter()
                    .filter(|event| event.sequence > last_sequence)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default())
    }

    async fn get_snapshot<A: Aggregate>(
        &self,
        _: &str,
    ) -> Result<Option<SerializedSnapshot>, PersistenceError> {
        Ok(None)
    }

    async fn persist<A: Aggregate>(
        &self,
        events: &[SerializedEvent],
        _: Option<(String, Value, usize)>,
    ) -> Result<(), PersistenceError> {
        let Some(first) = events.first() else {
            return Ok(());
        };
        let mut streams = self.streams.lock().expect("not poisoned");
        let stream = streams.entry(first.aggregate_id.clone()).or_default();
        if stream.len() + 1 != first.sequence {
            return Err(PersistenceError::OptimisticLockError);
        }
        stream.extend(events.iter().cloned());
        Ok(())
    }

    async fn stream_events<A: Aggregate>(&self, _: &str) -> Result<ReplayStream, PersistenceError> {
        Err(PersistenceError::UnknownError(
            "not used by the benchmarks".into(),
        ))
    }

    async fn stream_all_events<A: Aggregate>(&self) -> Result<ReplayStream, PersistenceError> {
        Err(PersistenceError::UnknownError(
            "not used by the benchmarks".into(),
        ))
    }
}

/// A stream of `events` events: the account opened, then deposits of 1.
pub fn peer_events(events: usize) -> Vec<BankEvent> {
    let mut stream = vec![BankEvent::Opened {
        owner: "bench".into(),
    }];
    stream.extend((1..events).map(|n| BankEvent::Deposited {
        amount: 1,
        balance: n as u64,
    }));
    stream
}

/// `aggregates` streams of `events` events each, written straight into a
/// `MemStore`'s map.
#[allow(deprecated)]
pub fn preload_mem_store(store: &MemStore<BankAccount>, aggregates: &[String], events: usize) {
    let stream = peer_events(events);
    let map = store.get_events();
    let mut map = map.write().expect("not poisoned");
    for id in aggregates {
        let envelopes = stream
            .iter()
            .enumerate()
            .map(|(sequence, event)| EventEnvelope {
                aggregate_id: id.clone(),
                sequence: sequence + 1,
                payload: event.clone(),
                metadata: HashMap::new(),
            })
            .collect();
        map.insert(id.clone(), envelopes);
    }
}
