//! [`Target`]: the store a command line names.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use cqrs_core::store::{PostgresOptions, SqliteOptions, TablePrefix};
use cqrs_core::{Cqrs, CqrsBuilder};

use crate::Failure;

/// `--sqlite FILE` or `--postgres URL`, the tables' `--prefix`, and the
/// read side's database if the app keeps it apart (`--views-sqlite FILE`
/// or `--views-postgres URL`).
#[derive(Debug, Clone, Args)]
pub struct Target {
    /// A SQLite file (it must exist).
    #[arg(
        long,
        value_name = "FILE",
        required_unless_present = "postgres",
        conflicts_with = "postgres"
    )]
    pub sqlite: Option<PathBuf>,
    /// A PostgreSQL URL.
    #[arg(long, value_name = "URL")]
    pub postgres: Option<String>,
    /// The tables' prefix, if the app chose one.
    #[arg(long, global = true, default_value = "cqrs_")]
    pub prefix: String,
    /// The read side's SQLite file (views, checkpoints, parked events), if
    /// the app keeps it apart from the events.
    #[arg(long, value_name = "FILE", conflicts_with = "views_postgres")]
    pub views_sqlite: Option<PathBuf>,
    /// The read side's PostgreSQL URL, if the app keeps it apart from the
    /// events.
    #[arg(long, value_name = "URL")]
    pub views_postgres: Option<String>,
}

impl Target {
    /// An app builder over the store, and its read side if it is apart.
    pub async fn builder(&self) -> Result<CqrsBuilder, Failure> {
        let builder = self.store().await?;
        let prefix = TablePrefix::new(self.prefix.clone())?;
        match (&self.views_sqlite, &self.views_postgres) {
            (Some(path), _) => {
                if !path.exists() {
                    return Err(Failure::Error(format!("{}: no such file", path.display())));
                }
                let views = SqliteOptions::file(path)
                    .prefix(prefix)
                    .open_views()
                    .await?;
                Ok(builder.views(views))
            }
            (None, Some(url)) => {
                let views = PostgresOptions::new(url.as_str())
                    .prefix(prefix)
                    .max_connections(2)
                    .acquire_timeout(Duration::from_secs(5))
                    .connect_views()
                    .await?;
                Ok(builder.views(views))
            }
            (None, None) => Ok(builder),
        }
    }

    async fn store(&self) -> Result<CqrsBuilder, Failure> {
        let prefix = TablePrefix::new(self.prefix.clone())?;
        match (&self.sqlite, &self.postgres) {
            (Some(path), _) => {
                if !path.exists() {
                    return Err(Failure::Error(format!("{}: no such file", path.display())));
                }
                let store = SqliteOptions::file(path).prefix(prefix).open().await?;
                Ok(Cqrs::builder(store))
            }
            (None, Some(url)) => {
                let store = PostgresOptions::new(url.as_str())
                    .prefix(prefix)
                    .max_connections(2)
                    .acquire_timeout(Duration::from_secs(5))
                    .connect()
                    .await?;
                Ok(Cqrs::builder(store))
            }
            (None, None) => Err(Failure::Error(
                "name a store: --sqlite FILE or --postgres URL".into(),
            )),
        }
    }
}
