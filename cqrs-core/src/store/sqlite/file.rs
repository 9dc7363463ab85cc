//! [`DatabaseFile`]: the file a SQLite store opened, checked before writes.

use std::path::PathBuf;

use sqlx::Row as _;
use sqlx::sqlite::SqlitePool;

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
}

impl DatabaseFile {
    /// The main database file of `pool`, as SQLite reports it.
    pub(crate) async fn of(pool: &SqlitePool) -> Result<Self, StoreError> {
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
        Ok(Self { opened, in_memory })
    }

    pub(crate) fn in_memory(&self) -> bool {
        self.in_memory
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
