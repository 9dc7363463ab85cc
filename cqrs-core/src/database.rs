//! [`DatabaseError`]: a failure of the database behind a store or views,
//! without the driver's types.

use std::error::Error;
use std::fmt;
use std::sync::Arc;

/// A failure of the database behind a store or its views, without the
/// driver's types: its message and source chain, the database's own error
/// code when it sent one (a PostgreSQL SQLSTATE, a SQLite extended result
/// code), and whether it is transient. Cheap to clone.
#[derive(Clone)]
pub struct DatabaseError {
    source: Arc<dyn Error + Send + Sync>,
    code: Option<Arc<str>>,
    transient: bool,
}

impl DatabaseError {
    /// A failure that may heal by itself (a lost connection, a busy or
    /// read-only database), for a store or view backend of your own.
    pub fn transient(source: impl Into<Box<dyn Error + Send + Sync>>) -> Self {
        Self::new(source.into(), None, true)
    }

    /// A failure that will not heal by waiting (a malformed query, a
    /// missing table).
    pub fn permanent(source: impl Into<Box<dyn Error + Send + Sync>>) -> Self {
        Self::new(source.into(), None, false)
    }

    pub(crate) fn new(
        source: Box<dyn Error + Send + Sync>,
        code: Option<&str>,
        transient: bool,
    ) -> Self {
        Self {
            source: Arc::from(source),
            code: code.map(Arc::from),
            transient,
        }
    }

    /// Whether trying again later may succeed with nothing changed.
    pub fn is_transient(&self) -> bool {
        self.transient
    }

    /// The database's error code, when it sent one.
    pub fn code(&self) -> Option<&str> {
        self.code.as_deref()
    }
}

impl fmt::Display for DatabaseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.source, f)?;
        if let Some(code) = &self.code {
            write!(f, " (code {code})")?;
        }
        Ok(())
    }
}

impl fmt::Debug for DatabaseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatabaseError")
            .field("source", &self.source)
            .field("code", &self.code)
            .field("transient", &self.transient)
            .finish()
    }
}

impl Error for DatabaseError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.source.source()
    }
}
