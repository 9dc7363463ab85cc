//! [`DatabaseFile`]: the file a SQLite store opened, checked before writes.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use sqlx::Row as _;
use sqlx::sqlite::SqlitePool;

use crate::database::DatabaseError;
use crate::future::Race;
use crate::store::StoreError;
use crate::store::sql::DriverResult;

/// The file a store opened, to notice when it is deleted or replaced while
/// connections still write to the old one (whose data would be lost).
#[derive(Debug, Clone)]
pub(crate) struct DatabaseFile {
    /// The path and the file's identity when opened; `None` in memory.
    opened: Option<(PathBuf, Identity)>,
    /// No file at all: the database lives in its one connection.
    in_memory: bool,
    /// This process's writers of the file, one at a time, in turn.
    writers: Writers,
}

/// This process's writers of one file (the store's appends and the views'
/// batches alike), let through one at a time in the order they came.
///
/// SQLite writes one transaction at a time and makes the others poll its
/// lock with growing sleeps, up to 100 ms each: under load a command could
/// wait behind several sleeps of other writers of its own process (the
/// processors' batches) for half a second. Queued here, a writer waits
/// only for the writes before it; only other processes' writers still meet
/// SQLite's busy handler.
#[derive(Debug, Clone)]
pub(crate) struct Writers {
    turn: Arc<async_lock::Mutex<()>>,
    /// As long as a writer waits for SQLite's lock (the busy timeout).
    patience: Duration,
}

/// One writer's turn: the next waits until it is dropped.
pub(crate) type Turn = async_lock::MutexGuardArc<()>;

impl Writers {
    /// Waits for this writer's turn, failing (as a busy database) after the
    /// busy timeout, as SQLite would.
    pub(crate) async fn turn(&self) -> Result<Turn, StoreError> {
        let mut turn = None;
        let taken = async {
            turn = Some(self.turn.lock_arc().await);
        };
        Race(vec![
            Box::pin(taken),
            Box::pin(futures_timer::Delay::new(self.patience)),
        ])
        .await;
        turn.ok_or_else(|| {
            StoreError::Database(DatabaseError::transient(
                "another write of this process held the database for longer than the busy timeout",
            ))
        })
    }
}

impl DatabaseFile {
    /// The main database file of `pool`, as SQLite reports it.
    /// `busy_timeout` bounds the wait for a writer's turn.
    pub(crate) async fn of(pool: &SqlitePool, busy_timeout: Duration) -> Result<Self, StoreError> {
        let path: String = sqlx::query("SELECT file FROM pragma_database_list WHERE name = 'main'")
            .fetch_optional(pool)
            .await
            .db()?
            .and_then(|row| row.try_get::<String, _>(0).ok())
            .unwrap_or_default();
        let in_memory = path.is_empty();
        let opened = (!in_memory)
            .then(|| PathBuf::from(path))
            .and_then(|path| Identity::of(&path).ok().map(|identity| (path, identity)));
        let writers = Writers {
            turn: Arc::default(),
            patience: busy_timeout,
        };
        Ok(Self {
            opened,
            in_memory,
            writers,
        })
    }

    pub(crate) fn in_memory(&self) -> bool {
        self.in_memory
    }

    /// This process's writers of the file.
    pub(crate) fn writers(&self) -> &Writers {
        &self.writers
    }

    /// Fails once the path names another file than the one opened, or none.
    pub(crate) fn check(&self) -> Result<(), StoreError> {
        let Some((path, identity)) = &self.opened else {
            return Ok(());
        };
        match Identity::of(path) {
            Ok(now) if now != *identity => Err(StoreError::FileReplaced { path: path.clone() }),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                Err(StoreError::FileReplaced { path: path.clone() })
            }
            // Only a missing or another file is certain: a path that cannot
            // be looked at now is no reason to stop writing.
            _ => Ok(()),
        }
    }
}

/// What tells two files apart on one machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Identity {
    device: u64,
    inode: u64,
}

impl Identity {
    #[cfg(unix)]
    fn of(path: &std::path::Path) -> std::io::Result<Self> {
        use std::os::unix::fs::MetadataExt;
        let metadata = std::fs::metadata(path)?;
        Ok(Self {
            device: metadata.dev(),
            inode: metadata.ino(),
        })
    }

    #[cfg(not(unix))]
    fn of(path: &std::path::Path) -> std::io::Result<Self> {
        // Without inodes, only a deleted file can be noticed.
        std::fs::metadata(path).map(|_| Self {
            device: 0,
            inode: 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn writers_take_turns_and_give_up_after_the_busy_timeout() {
        let writers = Writers {
            turn: Arc::default(),
            patience: Duration::from_millis(50),
        };
        let first = writers.turn().await.expect("the first turn");
        // Another writer of the process waits, then fails as a busy
        // database would: transient, so the caller's retries apply.
        let waiting = writers.turn().await;
        assert!(
            matches!(&waiting, Err(error) if error.is_transient()),
            "{waiting:?}"
        );
        drop(first);
        let second = writers.turn().await;
        assert!(second.is_ok(), "the turn is free again");
    }
}
