//! What the SQL backends share: the table prefix, schema versioning, and
//! turning rows into envelopes without trusting them.

use std::fmt;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::StoreError;
use crate::envelope::{Envelope, JsonPayload, Metadata};

/// The prefix of every table (and function) a SQL store creates, so several
/// stores can share one database.
///
/// Lowercase ASCII letters, digits and `_`, starting with a letter, at most 32
/// characters; the default is `cqrs_`. It is the only text a store puts into
/// SQL that the caller chose, which is why it is checked.
///
/// # Examples
///
/// ```
/// use cqrs_core::TablePrefix;
///
/// assert_eq!(TablePrefix::default().as_str(), "cqrs_");
/// assert!(TablePrefix::new("billing_").is_ok());
/// assert!(TablePrefix::new("x; DROP TABLE users").is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TablePrefix(String);

/// A table prefix that is not a safe SQL identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid table prefix `{prefix}`: use lowercase ASCII letters, digits and `_`, starting with a letter, at most 32 characters"
)]
pub struct InvalidTablePrefix {
    /// The rejected prefix.
    pub prefix: String,
}

impl TablePrefix {
    /// Checks `prefix`.
    pub fn new(prefix: impl Into<String>) -> Result<Self, InvalidTablePrefix> {
        let prefix = prefix.into();
        let valid = prefix.len() <= 32
            && prefix.starts_with(|c: char| c.is_ascii_lowercase())
            && prefix
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if valid {
            Ok(Self(prefix))
        } else {
            Err(InvalidTablePrefix { prefix })
        }
    }

    /// The prefix.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A stable number for this prefix, for locks that must be shared by
    /// every process using the same tables (FNV-1a).
    pub(crate) fn lock_key(&self, purpose: &str) -> i64 {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in purpose.bytes().chain(self.0.bytes()) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        i64::from_ne_bytes(hash.to_ne_bytes())
    }

    /// Replaces `{p}` in a SQL template with the prefix.
    pub(crate) fn expand(&self, template: &str) -> String {
        template.replace("{p}", &self.0)
    }
}

impl Default for TablePrefix {
    fn default() -> Self {
        Self("cqrs_".to_owned())
    }
}

impl fmt::Display for TablePrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        StoreError::Database(error)
    }
}

/// One stored event as the database returns it, before any of it is trusted.
pub(crate) struct Row {
    pub(crate) position: i64,
    pub(crate) aggregate_type: String,
    pub(crate) aggregate_id: String,
    pub(crate) sequence: i64,
    pub(crate) event_id: Uuid,
    pub(crate) event_name: String,
    pub(crate) event_version: i64,
    pub(crate) recorded_at: DateTime<Utc>,
    pub(crate) metadata: String,
    pub(crate) payload: String,
}

impl Row {
    pub(crate) fn into_envelope(self) -> Result<Envelope, StoreError> {
        let position = u64::try_from(self.position).map_err(|_| StoreError::Corrupt {
            position: 0,
            reason: format!("negative position {}", self.position),
        })?;
        let corrupt = |reason: String| StoreError::Corrupt { position, reason };
        let sequence = u64::try_from(self.sequence)
            .ok()
            .filter(|&sequence| sequence > 0)
            .ok_or_else(|| corrupt(format!("invalid sequence {}", self.sequence)))?;
        let event_version = u32::try_from(self.event_version)
            .map_err(|_| corrupt(format!("invalid event version {}", self.event_version)))?;
        let metadata: Metadata = serde_json::from_str(&self.metadata)
            .map_err(|error| corrupt(format!("metadata is not valid: {error}")))?;
        Ok(Envelope {
            event_id: self.event_id,
            aggregate_type: self.aggregate_type,
            aggregate_id: self.aggregate_id,
            sequence,
            position,
            event_name: self.event_name,
            event_version,
            recorded_at: self.recorded_at,
            metadata,
            payload: JsonPayload::from_text(self.payload),
        })
    }
}

/// A `u64` the caller passed, as the database's signed integer.
pub(crate) fn to_i64(value: u64, what: &str) -> Result<i64, StoreError> {
    i64::try_from(value).map_err(|_| StoreError::Rejected {
        aggregate_type: String::new(),
        aggregate_id: String::new(),
        reason: format!("{what} {value} is out of range"),
    })
}
