//! A PostgreSQL database of a process scenario's own, on the server at
//! `CQRS_POSTGRES_URL`, dropped afterwards: the process suites include it
//! by path.

use sqlx::Connection;

/// A database of the scenario's own on the server at `CQRS_POSTGRES_URL`.
pub struct Database {
    server: String,
    name: String,
    pub url: String,
}

impl Database {
    /// A fresh database named after the scenario and this process; `None`
    /// when `CQRS_POSTGRES_URL` is not set.
    pub async fn create(scenario: &str) -> Result<Option<Self>, String> {
        let Ok(server) = std::env::var("CQRS_POSTGRES_URL") else {
            return Ok(None);
        };
        let name = format!("cqrs_{scenario}_{}", std::process::id());
        let (base, _) = server
            .rsplit_once('/')
            .ok_or("CQRS_POSTGRES_URL has no database")?;
        let database = Self {
            url: format!("{base}/{name}"),
            server,
            name,
        };
        database
            .admin(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                database.name
            ))
            .await?;
        database
            .admin(&format!("CREATE DATABASE {}", database.name))
            .await?;
        Ok(Some(database))
    }

    async fn admin(&self, statement: &str) -> Result<(), String> {
        let mut connection = sqlx::PgConnection::connect(&self.server)
            .await
            .map_err(|error| error.to_string())?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(statement.to_owned()))
            .execute(&mut connection)
            .await
            .map_err(|error| format!("{statement}: {error}"))?;
        Ok(())
    }

    /// Drops the database, and with it the scenario's connections.
    pub async fn drop(self) {
        if let Err(error) = self
            .admin(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .await
        {
            eprintln!("dropping the scenario's database: {error}");
        }
    }
}
