//! What a driver error means: a [`DatabaseError`], transient or not, and
//! whether a request it ended may have committed. The driver's error type
//! converts only here, so it never appears in a public signature.

use super::Dialect;
use crate::database::DatabaseError;

/// `.db()?` on a driver result: its error as a [`DatabaseError`], which
/// `?` turns into the caller's `StoreError` or `ViewError`.
pub(crate) trait DriverResult<T> {
    fn db(self) -> Result<T, DatabaseError>;
}

impl<T> DriverResult<T> for Result<T, sqlx::Error> {
    fn db(self) -> Result<T, DatabaseError> {
        self.map_err(database_error)
    }
}

/// A driver error as the public, driver-free type, classified.
pub(crate) fn database_error(error: sqlx::Error) -> DatabaseError {
    let code = match &error {
        sqlx::Error::Database(database) => database.code().map(|code| code.into_owned()),
        _ => None,
    };
    let transient = is_transient(&error);
    DatabaseError::new(Box::new(error), code.as_deref(), transient)
}

/// Which database sent an error: their codes overlap (a PostgreSQL SQLSTATE
/// such as `25006` is digits too).
fn dialect(database: &dyn sqlx::error::DatabaseError) -> Option<Dialect> {
    #[cfg(feature = "postgres")]
    if database
        .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
        .is_some()
    {
        return Some(Dialect::Postgres);
    }
    #[cfg(feature = "sqlite")]
    if database
        .try_downcast_ref::<sqlx::sqlite::SqliteError>()
        .is_some()
    {
        return Some(Dialect::Sqlite);
    }
    None
}

/// Whether the same request may succeed later with nothing changed on our
/// side: the connection, the server's state or its resources failed, not the
/// request.
fn is_transient(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(database) => match (dialect(&**database), database.code()) {
            (Some(dialect), Some(code)) => is_transient_code(dialect, &code),
            _ => false,
        },
        _ => false,
    }
}

/// PostgreSQL SQLSTATEs and SQLite result codes that describe the server,
/// the file or the connection rather than the request.
fn is_transient_code(dialect: Dialect, code: &str) -> bool {
    match dialect {
        // The primary result code is the low byte of the extended one.
        Dialect::Sqlite => code.parse::<i32>().is_ok_and(|code| {
            matches!(
                code & 0xff,
                5   // SQLITE_BUSY
                | 6   // SQLITE_LOCKED
                | 7   // SQLITE_NOMEM
                | 8   // SQLITE_READONLY: the file cannot be written, for now
                | 10  // SQLITE_IOERR
                | 13  // SQLITE_FULL
                | 14  // SQLITE_CANTOPEN
                | 15 // SQLITE_PROTOCOL
            )
        }),
        Dialect::Postgres => {
            code.starts_with("08") // connection exception
                || code.starts_with("53") // insufficient resources: disk, memory, connections
                || code.starts_with("57P") // the server is shutting down or starting
                || code.starts_with("58") // system error: I/O
                || matches!(
                    code,
                    "25006" // read-only transaction: a standby, or default_transaction_read_only
                    | "40001" // serialization failure
                    | "40P01" // deadlock
                    | "55P03" // lock not available
                    | "57014" // query cancelled (statement timeout)
                )
        }
    }
}

/// Whether an error that arrived after a request was sent leaves its
/// outcome unknown: the connection broke, or the server ended the session
/// (an error of severity FATAL, such as a shutdown, may follow a commit).
/// An error the server reports at severity ERROR rolled the request back.
#[cfg(feature = "postgres")]
pub(crate) fn outcome_unknown(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(database) => {
            dialect(&**database) == Some(Dialect::Postgres)
                && database
                    .code()
                    .is_some_and(|code| code.starts_with("08") || code.starts_with("57P"))
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The codes of both databases, each read as its own: a SQLSTATE made
    /// of digits used to be read as a SQLite result code.
    #[test]
    fn codes_are_classified_by_the_database_that_sent_them() {
        let postgres = |code| is_transient_code(Dialect::Postgres, code);
        let sqlite = |code| is_transient_code(Dialect::Sqlite, code);
        for transient in [
            "25006", "40001", "40P01", "08006", "08000", "53300", "53100", "57P01", "57014",
            "58030",
        ] {
            assert!(postgres(transient), "{transient}");
        }
        for permanent in ["42501", "23505", "22P05", "42P01", "22003"] {
            assert!(!postgres(permanent), "{permanent}");
        }
        for transient in [
            "5", "261", "6", "8", "1032", "10", "266", "3338", "13", "14",
        ] {
            assert!(sqlite(transient), "{transient}");
        }
        for permanent in ["1", "11", "19", "2067", "1555", "26", "18"] {
            assert!(!sqlite(permanent), "{permanent}");
        }
    }

    /// Real errors of both databases, classified by the database that sent
    /// them: a PostgreSQL SQLSTATE made of digits (read-only `25006`) used to
    /// be read as a SQLite code and called permanent, and a permission error
    /// (`42501`) transient. The PostgreSQL half needs `CQRS_POSTGRES_URL`
    /// (`scripts/with-postgres` sets it; in CI it must be set).
    #[cfg(all(feature = "sqlite", feature = "postgres"))]
    #[tokio::test]
    async fn real_errors_are_classified_by_the_database_that_sent_them() {
        fn transient<T>(result: Result<T, sqlx::Error>) -> bool {
            match result {
                Err(error) => database_error(error).is_transient(),
                Ok(_) => panic!("the statement was meant to fail"),
            }
        }
        let options: sqlx::sqlite::SqliteConnectOptions =
            "sqlite::memory:".parse().expect("an in-memory database");
        let sqlite = sqlx::sqlite::SqlitePoolOptions::new()
            .connect_with(options.read_only(true))
            .await
            .expect("SQLite opens");
        let create = sqlx::query("CREATE TABLE t (x INTEGER)")
            .execute(&sqlite)
            .await;
        assert!(transient(create), "SQLITE_READONLY is transient");
        let syntax = sqlx::query("SELEC 1").execute(&sqlite).await;
        assert!(!transient(syntax), "a syntax error is permanent");

        let Ok(url) = std::env::var("CQRS_POSTGRES_URL") else {
            assert!(
                std::env::var("CI").map_or(true, |ci| ci != "true"),
                "CQRS_POSTGRES_URL is not set; CI runs the tests through scripts/with-postgres"
            );
            eprintln!("skipped the PostgreSQL half: CQRS_POSTGRES_URL is not set");
            return;
        };
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .connect(&url)
            .await
            .expect("the test server");
        let mut connection = pool.acquire().await.expect("a connection");
        sqlx::query("SET default_transaction_read_only = on")
            .execute(&mut *connection)
            .await
            .expect("a session setting");
        let create = sqlx::query("CREATE TEMPORARY TABLE t (x INTEGER)")
            .execute(&mut *connection)
            .await;
        assert!(transient(create), "25006 (read-only) is transient");
        connection.close().await.expect("closes");
        let mut connection = pool.acquire().await.expect("a connection");
        let missing = sqlx::query("SELECT * FROM no_such_table_here")
            .execute(&mut *connection)
            .await;
        assert!(!transient(missing), "42P01 (no such table) is permanent");
        let raise = |code: &str| {
            format!("DO $$ BEGIN RAISE EXCEPTION 'e' USING ERRCODE = '{code}'; END $$")
        };
        let serialization = sqlx::raw_sql(sqlx::AssertSqlSafe(raise("serialization_failure")))
            .execute(&mut *connection)
            .await;
        assert!(transient(serialization), "40001 is transient");
        let denied = sqlx::raw_sql(sqlx::AssertSqlSafe(raise("insufficient_privilege")))
            .execute(&mut *connection)
            .await;
        assert!(!transient(denied), "42501 is permanent");
    }
}
