//! Code generation, one file per macro. Input here is already validated.

pub(crate) mod aggregate;
pub(crate) mod aggregate_impl;
pub(crate) mod command;
pub(crate) mod deadline;
pub(crate) mod domain;
pub(crate) mod event;
pub(crate) mod event_handler;
pub(crate) mod processor;
