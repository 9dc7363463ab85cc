//! What the SQL backends share: the table prefix, connections a caller's
//! cancellation cannot wedge, integers as the databases store them, and
//! (in the submodules) driver errors, rows, schema migrations, and the
//! views backend both dialects share.

pub(crate) mod boundary;
mod deadline;
mod error;
mod migrate;
pub(crate) mod query;
pub(crate) mod read;
mod row;
pub(crate) mod tables;
pub(crate) mod view_backend;
pub(crate) mod views;

use std::fmt;

pub(crate) use deadline::{
    DEADLINE_COLUMNS, DeadlineRow, DeadlineTransaction, change_deadlines, stored_origin,
};
#[cfg(feature = "postgres")]
pub(crate) use error::outcome_unknown;
pub(crate) use error::{DriverResult, database_error};
pub(crate) use migrate::{Schema, upgrade};
pub(crate) use row::{Row, column, dense_stream, read_log};

pub(crate) use super::is_stream;
use crate::view::ViewError;

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
/// use cqrs_core::store::TablePrefix;
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
    #[cfg(feature = "postgres")]
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

/// A connection from `pool`, acquired by a task of its own that the caller's
/// cancellation does not reach.
///
/// sqlx 0.9's pool stops lending connections once `acquire` futures are
/// dropped half-way, as a command under a request timeout is: measured
/// here, four tasks that give up after 0.1 to 2.8 ms got 220 connections
/// and then none for seconds, while the same tasks with the acquire shielded
/// got 7,000 in 6 s. A connection the task gets after its caller left goes
/// back to the pool. Outside a tokio runtime the pool is asked directly.
pub(crate) async fn acquire<DB: sqlx::Database>(
    pool: &sqlx::Pool<DB>,
) -> Result<sqlx::pool::PoolConnection<DB>, sqlx::Error> {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return pool.acquire().await;
    };
    let pool = pool.clone();
    runtime
        .spawn(async move { pool.acquire().await })
        .await
        // The task panicked or its runtime is shutting down: worth another try.
        .unwrap_or(Err(sqlx::Error::WorkerCrashed))
}

/// A caller's `u64` as the database's signed integer, for a value that
/// cannot exist beyond `i64::MAX`; `None` when it is out of that range.
pub(crate) fn stored(value: u64) -> Option<i64> {
    i64::try_from(value).ok()
}

/// The positions or sequences `first + 1 ..= first + count` of an append, if
/// they fit in the database's integers.
#[cfg(feature = "sqlite")]
pub(crate) fn following(first: i64, count: usize) -> Option<i64> {
    i64::try_from(count)
        .ok()
        .and_then(|count| first.checked_add(count))
}

/// A checkpoint as the database stores it, as a position.
pub(crate) fn checkpoint_of(processor: &str, stored: Option<i64>) -> Result<u64, ViewError> {
    match stored {
        None => Ok(0),
        Some(position) => u64::try_from(position).map_err(|_| ViewError::Corrupt {
            processor: processor.to_owned(),
            reason: format!("position {position} is negative"),
        }),
    }
}

/// A position as the database stores it.
pub(crate) fn stored_position(processor: &str, position: u64) -> Result<i64, ViewError> {
    i64::try_from(position).map_err(|_| ViewError::Corrupt {
        processor: processor.to_owned(),
        reason: format!("position {position} is beyond any the log can hold"),
    })
}

/// Which database a SQL text or an error code is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    Postgres,
    #[cfg_attr(not(feature = "sqlite"), allow(dead_code))]
    Sqlite,
}
