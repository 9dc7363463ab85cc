//! [`WriteTransaction`]: SQLite's `BEGIN IMMEDIATE`, never handing a
//! half-finished connection back to the pool.

use sqlx::Sqlite;
use sqlx::pool::PoolConnection;
use sqlx::sqlite::{SqliteConnection, SqlitePool};

use super::file::{DatabaseFile, Turn};
use crate::store::StoreError;
use crate::store::sql::DriverResult;
use crate::store::sql::acquire;

/// A pooled connection inside `BEGIN IMMEDIATE`, holding SQLite's write lock.
///
/// It goes back to the pool only after a `COMMIT`, or a `ROLLBACK` of a
/// batch the store refused (a conflict); however else it ends (an error, a
/// failed commit, a future dropped at any await) the connection is closed,
/// which rolls back what it had open. A connection handed back after a
/// failure used to refuse every later transaction (sqlx counted one SQLite
/// had already ended), and one opened while the file could not be written
/// stays read-only for life: fresh connections work as soon as the file does.
///
/// The one connection of a database in memory is never closed (that would
/// drop the database); it is rolled back instead.
pub(crate) struct WriteTransaction {
    /// Until the transaction ended.
    connection: Option<PoolConnection<Sqlite>>,
    in_memory: bool,
    /// This process's turn to write, given back after the connection.
    _turn: Turn,
}

/// A `COMMIT` that failed, and whether it may have committed anyway.
pub(crate) struct CommitFailed {
    pub(crate) error: sqlx::Error,
    /// An I/O error while SQLite writes and syncs its log: the commit record
    /// may be on disk.
    pub(crate) outcome_unknown: bool,
}

impl WriteTransaction {
    /// Takes the write lock: a connection, then this process's turn (see
    /// [`Writers`]), then SQLite's lock, each waiting up to the busy
    /// timeout. The connection comes first, as before there was a turn: a
    /// writer with its turn never waits for a connection (taking the turn
    /// first measured 9% fewer commands per second under `wrk`).
    ///
    /// [`Writers`]: super::file::Writers
    pub(crate) async fn begin(pool: &SqlitePool, file: &DatabaseFile) -> Result<Self, StoreError> {
        file.check()?;
        let connection = acquire(pool).await.db()?;
        let turn = file.writers().turn().await?;
        // Guarded before `BEGIN` is sent: a future dropped while it waits for
        // the lock may still leave the transaction open.
        let mut transaction = Self {
            connection: Some(connection),
            in_memory: file.in_memory(),
            _turn: turn,
        };
        sqlx::raw_sql("BEGIN IMMEDIATE")
            .execute(transaction.connection())
            .await
            .db()?;
        Ok(transaction)
    }

    /// The connection, to run the transaction's statements on.
    pub(crate) fn connection(&mut self) -> &mut SqliteConnection {
        // Only `commit`, `rollback` and `drop` take it, and they consume self.
        self.connection
            .as_deref_mut()
            .unwrap_or_else(|| unreachable!("a write transaction is used after it ended"))
    }

    pub(crate) async fn commit(mut self) -> Result<(), CommitFailed> {
        // The connection stays in `self` across the await: a future dropped
        // while the commit is written closes it (see `Drop`).
        let committed = sqlx::raw_sql("COMMIT").execute(self.connection()).await;
        let Some(connection) = self.connection.take() else {
            return Ok(());
        };
        let Err(error) = committed else {
            return Ok(());
        };
        // A busy or locked database refused the commit outright; anything
        // else failed while the commit was being written.
        let refused = matches!(&error, sqlx::Error::Database(database)
            if database.code().and_then(|code| code.parse::<i32>().ok())
                .is_some_and(|code| matches!(code & 0xff, 5 | 6)));
        end(connection, !self.in_memory).await;
        Err(CommitFailed {
            error,
            outcome_unknown: !refused,
        })
    }

    /// Undoes a batch the store refused; the connection stays in the pool.
    pub(crate) async fn rollback(mut self) {
        let rolled_back = sqlx::raw_sql("ROLLBACK").execute(self.connection()).await;
        if let Some(mut connection) = self.connection.take()
            && rolled_back.is_err()
            && !self.in_memory
        {
            connection.close_on_drop();
        }
    }
}

impl Drop for WriteTransaction {
    fn drop(&mut self) {
        let Some(mut connection) = self.connection.take() else {
            return;
        };
        if !self.in_memory {
            // Closing a connection rolls back what it has open.
            connection.close_on_drop();
        } else if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(end(connection, false));
        } else {
            connection.close_on_drop();
        }
    }
}

/// Whether SQLite refused to write because the connection or the file is
/// read-only (`SQLITE_READONLY` and its extended codes). A connection opened
/// while the file could not be written stays read-only for life; `BEGIN
/// IMMEDIATE` succeeds on it and the first write fails.
pub(crate) fn read_only(error: &StoreError) -> bool {
    matches!(error, StoreError::Database(database)
        if database.code().and_then(|code| code.parse::<i32>().ok()).is_some_and(|code| code & 0xff == 8))
}

/// Rolls back whatever `connection` has open and lets it go back to the
/// pool, or closes it when that fails or `close` asks for it.
async fn end(mut connection: PoolConnection<Sqlite>, close: bool) {
    if close {
        connection.close_on_drop();
        return;
    }
    let clean = match sqlx::raw_sql("ROLLBACK").execute(&mut *connection).await {
        Ok(_) => true,
        Err(sqlx::Error::Database(error)) => error.message().contains("no transaction is active"),
        Err(_) => false,
    };
    if !clean {
        connection.close_on_drop();
    }
}
