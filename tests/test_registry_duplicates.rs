//! What the compiler cannot see, the app checks when it is built: two
//! aggregates stored under one name, one event name in two event enums.
//! A binary of its own, so the duplicates do not reach other tests.

use cqrs_core::BuildError;
use cqrs_core::prelude::*;
use cqrs_core::registry::{Registry, RegistryError};
use serde::{Deserialize, Serialize};

mod billing {
    use super::*;

    #[derive(Debug, Clone, Serialize, Deserialize)]
    pub struct Bill;
    #[derive(Debug, Clone, Command)]
    pub enum InvoiceCommand {
        Bill(Bill),
    }
    #[derive(Debug, Clone, Serialize, Deserialize)]
    pub struct Created;
    #[derive(Debug, Clone, Event)]
    pub enum InvoiceEvent {
        #[event(name = "document.created")]
        Created(Created),
    }
    #[derive(Debug, thiserror::Error)]
    #[error("never")]
    pub struct Never;

    #[derive(Debug, Default, Aggregate)]
    #[aggregate(name = "document", command = InvoiceCommand, event = InvoiceEvent, error = Never)]
    pub struct Invoice;

    #[aggregate_impl]
    impl Invoice {
        #[command_handler(create)]
        fn bill(&self, _: Bill) -> Result<Created, Never> {
            Ok(Created)
        }
        #[apply]
        fn created(&mut self, _: &Created) {}
    }
}

mod shipping {
    use super::*;

    #[derive(Debug, Clone, Serialize, Deserialize)]
    pub struct Ship;
    #[derive(Debug, Clone, Command)]
    pub enum ParcelCommand {
        Ship(Ship),
    }
    #[derive(Debug, Clone, Serialize, Deserialize)]
    pub struct Created;
    #[derive(Debug, Clone, Event)]
    pub enum ParcelEvent {
        #[event(name = "document.created")]
        Created(Created),
    }
    #[derive(Debug, thiserror::Error)]
    #[error("never")]
    pub struct Never;

    #[derive(Debug, Default, Aggregate)]
    #[aggregate(name = "document", command = ParcelCommand, event = ParcelEvent, error = Never)]
    pub struct Parcel;

    #[aggregate_impl]
    impl Parcel {
        #[command_handler(create)]
        fn ship(&self, _: Ship) -> Result<Created, Never> {
            Ok(Created)
        }
        #[apply]
        fn created(&mut self, _: &Created) {}
    }
}

#[test]
fn duplicate_aggregate_names_stop_the_app_from_building() {
    let err = Cqrs::new(MemoryStore::new()).unwrap_err();
    assert_eq!(
        err,
        BuildError::Registry(RegistryError::DuplicateAggregate {
            name: "document",
            first: "test_registry_duplicates::billing::Invoice",
            second: "test_registry_duplicates::shipping::Parcel",
        })
    );
    assert_eq!(
        err.to_string(),
        "aggregates `test_registry_duplicates::billing::Invoice` and \
         `test_registry_duplicates::shipping::Parcel` are both stored as `document`; \
         give one a different #[aggregate(name = ..)]"
    );
}

#[test]
fn every_problem_is_listed_with_both_sides() {
    let problems = Registry::global().problems();
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert_eq!(
        problems[1],
        RegistryError::DuplicateEvent {
            name: "document.created",
            first: "test_registry_duplicates::billing::InvoiceEvent(Created)".into(),
            second: "test_registry_duplicates::shipping::ParcelEvent(Created)".into(),
        }
    );
    assert_eq!(
        problems[1].to_string(),
        "events `test_registry_duplicates::billing::InvoiceEvent(Created)` and \
         `test_registry_duplicates::shipping::ParcelEvent(Created)` are both stored as \
         `document.created`; give one a different #[event(name = ..)]"
    );
}
