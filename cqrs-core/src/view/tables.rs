//! Table projections: a [`TableProjection`] owns SQL tables of its own,
//! made by its migrations, and its handlers write them through [`Tables`],
//! the batch's own transaction, which commits the segment's checkpoint with
//! them.

use crate::envelope::Envelope;
use crate::future::BoxFuture;
use crate::handler::HandlerError;

/// A projection into SQL tables of its own. Implemented by
/// `#[projection(name = "..", tables(..), migrations(..))]` on an impl
/// block whose `#[event_handler]`s take `tables: &mut Tables<'_>`.
///
/// Version N of the projection owns the tables `<table>_vN`, which its
/// migrations create under those literal names and its handlers write
/// (so `sqlx::query!` checks them). Queries read `<table>`, a SQL view
/// over the serving version's table that is re-pointed when a new version
/// has caught up; the old version's tables are then dropped.
///
/// Each batch runs its handlers inside the transaction that saves its
/// segment's checkpoint, under the segment's claim: each event takes effect
/// once, whatever node or crash. A handler's error rolls the batch back;
/// the event is retried alone, then parked, like a document projection's.
///
/// # Examples
///
/// ```
/// # #[cfg(feature = "sqlite")] mod example {
/// use cqrs_core::prelude::*;
/// use cqrs_core::sqlx;
/// use serde::{Deserialize, Serialize};
/// # #[derive(Debug, Clone, Serialize, Deserialize)]
/// # pub struct Sell { pub sku: String, pub total: i64 }
/// # #[derive(Debug, Clone, Command)]
/// # pub enum SaleCommand { Sell(Sell) }
/// # #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
/// # pub struct Sold { pub sku: String, pub total: i64 }
/// # #[derive(Debug, Clone, PartialEq, Event)]
/// # pub enum SaleEvent { Sold(Sold) }
/// # #[derive(Debug, thiserror::Error)]
/// # #[error("never")]
/// # pub struct Never;
/// # #[derive(Debug, Default, Aggregate)]
/// # #[aggregate(name = "revenue_sale", command = SaleCommand, event = SaleEvent, error = Never)]
/// # pub struct Sale;
/// # #[aggregate_impl]
/// # impl Sale {
/// #     #[command_handler(create)]
/// #     fn sell(&self, c: Sell) -> Result<Sold, Never> { Ok(Sold { sku: c.sku, total: c.total }) }
/// #     #[apply]
/// #     fn sold(&mut self, _: &Sold) {}
/// # }
///
/// /// Revenue per SKU, in the table `revenue_by_sku`.
/// #[derive(Debug, Default)]
/// pub struct Revenue;
///
/// #[projection(
///     name = "revenue",
///     tables(revenue_by_sku),
///     // Paths from the crate's root; `postgres(..)` for PostgreSQL.
///     migrations(sqlite("doc/revenue-v1.sqlite.sql")),
/// )]
/// impl Revenue {
///     #[event_handler]
///     async fn sold(event: &Sold, tables: &mut Tables<'_>) -> Result<(), HandlerError> {
///         sqlx::query(
///             "INSERT INTO revenue_by_sku_v1 (sku, revenue) VALUES (?1, ?2) \
///              ON CONFLICT (sku) DO UPDATE SET revenue = revenue + excluded.revenue",
///         )
///         .bind(&event.sku)
///         .bind(event.total)
///         .execute(tables.sqlite()?)
///         .await?;
///         Ok(())
///     }
/// }
/// # }
/// ```
pub trait TableProjection: Send + Sync + 'static {
    /// The projection's name, which keys its checkpoint.
    const NAME: &'static str;

    /// Its version (`#[projection(version = N)]`, default 1): version N
    /// owns the tables `<table>_vN`.
    const VERSION: u32 = 1;

    /// How many segments it has (`#[projection(segments = N)]`, default 1).
    const SEGMENTS: u32 = 1;

    /// The tables it owns, by their serving names (`tables(..)`).
    const TABLES: &'static [&'static str];

    /// The migrations that create them, per SQL dialect (`migrations(..)`).
    const MIGRATIONS: TableMigrations;

    /// Whether the projection reads events stored under `event_name`.
    fn handles(event_name: &str) -> bool;

    /// Applies one event of the log to the tables.
    fn apply<'a>(
        envelope: &'a Envelope,
        tables: &'a mut Tables<'_>,
    ) -> BoxFuture<'a, Result<(), HandlerError>>;
}

/// The migrations of one version of a [`TableProjection`]: for each SQL
/// dialect, its steps in order, each one or more statements. A step runs
/// once per version, in one transaction with the others pending; a step
/// changed after it ran is an error. Add a step to change a version's
/// tables in place (an index); a new version starts again at step 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TableMigrations {
    /// The steps for SQLite.
    pub sqlite: &'static [&'static str],
    /// The steps for PostgreSQL.
    pub postgres: &'static [&'static str],
}

/// What the views backend needs of a table projection's version to make
/// its tables.
#[derive(Debug, Clone, Copy)]
#[cfg_attr(not(any(feature = "sqlite", feature = "postgres")), allow(dead_code))]
pub(crate) struct TableSchema {
    /// The tables' serving names.
    pub(crate) tables: &'static [&'static str],
    /// The version's migrations.
    pub(crate) migrations: TableMigrations,
    /// The version whose tables these are.
    pub(crate) version: u32,
}

impl TableSchema {
    /// The schema of `P`'s version.
    pub(crate) const fn of<P: TableProjection>() -> Self {
        Self {
            tables: P::TABLES,
            migrations: P::MIGRATIONS,
            version: P::VERSION,
        }
    }

    /// Each table's serving name, and the name of this version's table.
    #[cfg_attr(not(any(feature = "sqlite", feature = "postgres")), allow(dead_code))]
    pub(crate) fn names(&self) -> impl Iterator<Item = (&'static str, String)> + '_ {
        self.tables
            .iter()
            .map(|&table| (table, versioned(table, self.version)))
    }
}

/// The name of version `version`'s table `table`.
pub(crate) fn versioned(table: &str, version: u32) -> String {
    format!("{table}_v{version}")
}

/// A table projection's handle on its batch's transaction: the
/// connection its handlers write their tables with.
///
/// The transaction is the batch's: do not `BEGIN`, `COMMIT` or `ROLLBACK`
/// in it (a `SAVEPOINT` is fine). A handler that ends it fails the batch
/// with [`ViewError::Corrupt`](super::ViewError::Corrupt), as its rows were
/// committed without the checkpoint. On PostgreSQL the server ends a
/// transaction left idle for 2 s: handlers do SQL, not remote calls.
#[derive(Debug)]
pub struct Tables<'t> {
    connection: Connection<'t>,
    #[cfg_attr(not(any(feature = "sqlite", feature = "postgres")), allow(dead_code))]
    projection: &'static str,
    version: u32,
}

impl<'t> Tables<'t> {
    pub(crate) fn new(connection: Connection<'t>, projection: &'static str, version: u32) -> Self {
        Self {
            connection,
            projection,
            version,
        }
    }

    /// The connection, whichever database the views are in.
    pub fn connection(&mut self) -> &mut Connection<'t> {
        &mut self.connection
    }

    /// The connection to PostgreSQL, or [`TableError::Dialect`] if the
    /// views are in another database.
    #[cfg(feature = "postgres")]
    pub fn postgres(&mut self) -> Result<&mut sqlx::PgConnection, TableError> {
        let wrong = self.wrong_dialect("PostgreSQL");
        match &mut self.connection {
            Connection::Postgres(connection) => Ok(connection),
            _ => Err(wrong),
        }
    }

    /// The connection to SQLite, or [`TableError::Dialect`] if the views
    /// are in another database.
    #[cfg(feature = "sqlite")]
    pub fn sqlite(&mut self) -> Result<&mut sqlx::SqliteConnection, TableError> {
        let wrong = self.wrong_dialect("SQLite");
        match &mut self.connection {
            Connection::Sqlite(connection) => Ok(connection),
            _ => Err(wrong),
        }
    }

    #[cfg(any(feature = "sqlite", feature = "postgres"))]
    fn wrong_dialect(&self, wanted: &'static str) -> TableError {
        TableError::Dialect {
            projection: self.projection,
            wanted,
            actual: self.connection.dialect(),
        }
    }

    /// The name of this version's table `table` (`revenue` is
    /// `revenue_v2` for version 2), for SQL built at run time.
    pub fn table(&self, table: &str) -> String {
        versioned(table, self.version)
    }

    /// The version of the projection these tables belong to.
    pub fn version(&self) -> u32 {
        self.version
    }
}

/// The batch's connection, in the driver's own type.
#[derive(Debug)]
#[non_exhaustive]
pub enum Connection<'t> {
    /// A SQLite connection.
    #[cfg(feature = "sqlite")]
    Sqlite(&'t mut sqlx::SqliteConnection),
    /// A PostgreSQL connection.
    #[cfg(feature = "postgres")]
    Postgres(&'t mut sqlx::PgConnection),
    #[doc(hidden)]
    __Lifetime(std::marker::PhantomData<&'t mut ()>),
}

impl Connection<'_> {
    /// The database's name, for messages.
    #[cfg_attr(not(any(feature = "sqlite", feature = "postgres")), allow(dead_code))]
    fn dialect(&self) -> &'static str {
        match self {
            #[cfg(feature = "sqlite")]
            Self::Sqlite(_) => "SQLite",
            #[cfg(feature = "postgres")]
            Self::Postgres(_) => "PostgreSQL",
            Self::__Lifetime(_) => "no database",
        }
    }
}

/// The pool of the database the views are in, for queries over table
/// projections' tables in plain SQL; from [`ViewStore::sql`](super::ViewStore::sql).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum SqlPool {
    /// A SQLite pool.
    #[cfg(feature = "sqlite")]
    Sqlite(sqlx::SqlitePool),
    /// A PostgreSQL pool.
    #[cfg(feature = "postgres")]
    Postgres(sqlx::PgPool),
}

/// Why a table projection's handler could not have its connection.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TableError {
    /// The handler asked for one database's connection and the views are
    /// in another: write the SQL for both, matching on
    /// [`Tables::connection`].
    #[error(
        "projection {projection} asked for a {wanted} connection, but its views are in {actual}"
    )]
    Dialect {
        /// The projection.
        projection: &'static str,
        /// The database it asked for.
        wanted: &'static str,
        /// The database the views are in.
        actual: &'static str,
    },
}
