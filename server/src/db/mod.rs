//! All SQL: the connection pool, migrations, and one file per table group.
//! Functions take a `&PgPool` or an executor inside a transaction and return `sqlx` errors.

pub mod audit;
pub mod audit_query;
pub mod cases;
pub mod chain;
pub mod customers;
pub mod events;
pub mod retention;
pub mod roles;
pub mod session_changes;
pub mod sessions;
pub mod tokens;
pub mod usage;

use std::time::Duration;

use anyhow::Context;
use secrecy::{ExposeSecret, SecretString};
use sqlx::migrate::{MigrateDatabase, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Postgres};

/// The schema, embedded from `migrations/`.
pub static MIGRATOR: Migrator = sqlx::migrate!("../migrations");

/// Creates the database if missing, connects, and applies pending migrations.
pub async fn connect_and_migrate(
    url: &SecretString,
    max_connections: u32,
) -> anyhow::Result<PgPool> {
    let url = url.expose_secret();
    let options: PgConnectOptions = url
        .parse()
        .context("LANYARD_DATABASE_URL is not a valid Postgres URL")?;
    let name = options.get_database().unwrap_or("(default)").to_owned();
    if !Postgres::database_exists(url)
        .await
        .context("connecting to Postgres")?
    {
        match Postgres::create_database(url).await {
            Ok(()) => tracing::info!(database = %name, "created database"),
            // Another instance may have created it a moment ago.
            Err(e) if Postgres::database_exists(url).await.unwrap_or(false) => {
                tracing::debug!(error = %e, "database appeared concurrently");
            }
            Err(e) => return Err(e).context("creating the database"),
        }
    }
    let pool = PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(3))
        .connect_with(options)
        .await
        .with_context(|| format!("connecting to database {name}"))?;
    MIGRATOR.run(&pool).await.context("applying migrations")?;
    Ok(pool)
}

/// Connects to an existing, fully migrated database without changing it (for read-only
/// tools such as `audit verify`, which may point at a replica or a read-only account).
pub async fn connect_existing(url: &SecretString) -> anyhow::Result<PgPool> {
    let options: PgConnectOptions = url
        .expose_secret()
        .parse()
        .context("LANYARD_DATABASE_URL is not a valid Postgres URL")?;
    let name = options.get_database().unwrap_or("(default)").to_owned();
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(3))
        .connect_with(options)
        .await
        .with_context(|| format!("connecting to database {name}"))?;
    if !is_ready(&pool).await.unwrap_or(false) {
        anyhow::bail!(
            "database {name} is not a migrated Lanyard database (or is behind this version)"
        );
    }
    Ok(pool)
}

/// Whether the database answers and every embedded migration has been applied.
pub async fn is_ready(pool: &PgPool) -> Result<bool, sqlx::Error> {
    let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE success")
        .fetch_one(pool)
        .await?;
    Ok(applied >= MIGRATOR.iter().count() as i64)
}

/// Whether a database error means the database cannot be reached or is refusing work (the
/// caller answers 503 and may retry), as opposed to a query that is wrong (a bug).
pub fn is_unavailable(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed
        // A front end (pooler, load balancer) that accepts and then drops connections.
        | sqlx::Error::Protocol(_) => true,
        // Postgres refusing work: connection exceptions (08), insufficient resources (53: too
        // many connections, disk full), operator intervention (57: shutting down, starting
        // up, query cancelled).
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|c| ["08", "53", "57"].iter().any(|class| c.starts_with(class))),
        _ => false,
    }
}

/// Whether a database error is a unique-constraint violation (the caller answers 409).
pub fn is_unique_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.is_unique_violation())
}
