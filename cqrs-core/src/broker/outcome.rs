//! What became of one message a consumer received, whether it records
//! messages into the log or reacts to them through its inbox.

use crate::store::StoreError;

pub(super) enum Outcome {
    /// Recorded in the log.
    Recorded,
    /// Handled by the inbox's handlers, and its id recorded.
    Handled,
    /// Taken by none of the app's handlers.
    Ignored,
    /// Its handlers kept failing (or it waits behind a message of its
    /// stream that did): parked, with its id recorded.
    Parked,
    /// Recorded or handled before.
    Duplicate,
    /// Neither the log nor the handlers can ever take it: dead-lettered.
    Refused(String),
    /// The log, the views or the broker was unavailable: delivered again
    /// after the reconnect.
    Failed(String),
}

impl Outcome {
    /// A failure of the log: for good, or until it is back.
    pub(super) fn of_store(error: StoreError) -> Self {
        if error.is_transient() || matches!(error, StoreError::Conflict(_)) {
            Self::Failed(error.to_string())
        } else {
            Self::Refused(error.to_string())
        }
    }
}
