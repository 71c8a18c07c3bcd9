//! PostgreSQL: the pool and the migrations (`activities/migrations`, one schema per service).

pub use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use std::time::Duration;

/// Checks a database URL without connecting (a malformed one is a configuration error).
pub fn check_url(url: &str) -> Result<(), sqlx::Error> {
    url.parse::<sqlx::postgres::PgConnectOptions>().map(|_| ())
}

/// Opens a pool. Connections are made lazily and kept: a payment should never wait for a
/// TCP and authentication handshake.
pub async fn connect(url: &str, max_connections: u32) -> Result<PgPool, sqlx::Error> {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .min_connections(1)
        .acquire_timeout(Duration::from_secs(5))
        .connect(url)
        .await
}

/// A pool of one connection, made when first asked, for health checks: apart from the
/// activities' pool, so a pool busy with payments does not read as an outage.
pub fn checker(url: &str) -> Result<PgPool, sqlx::Error> {
    PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(2))
        .connect_lazy(url)
}

/// PostgreSQL answers.
pub async fn ping(pool: &PgPool) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT 1").execute(pool).await.map(|_| ())
}

/// Whether a connection error says the configuration is wrong rather than that PostgreSQL is
/// away: a password or role refused (SQLSTATE class 28), a database that does not exist
/// (3D000). Waiting cannot mend either.
pub fn misconfigured(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d)
        if d.code().is_some_and(|c| c.starts_with("28") || c == "3D000"))
}

/// Why the database could not be made ready at start-up.
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    #[error("{0}")]
    Connect(sqlx::Error),
    #[error("apply migrations: {0}")]
    Migrate(sqlx::migrate::MigrateError),
}

impl PrepareError {
    /// Whether waiting cannot mend it: the configuration refused (see [`misconfigured`]), or a
    /// migration that fails for another reason than a lost or refused connection (a migration
    /// the database rejects, one changed after it was applied). A connection lost halfway
    /// rolls the migration back (PostgreSQL's DDL is transactional), so it is tried again.
    pub fn permanent(&self) -> bool {
        use sqlx::migrate::MigrateError;
        match self {
            Self::Connect(e) => misconfigured(e),
            Self::Migrate(MigrateError::Execute(e) | MigrateError::ExecuteMigration(e, _)) => {
                misconfigured(e) || !connection_trouble(e)
            }
            Self::Migrate(_) => true,
        }
    }
}

/// Whether an error says the connection to PostgreSQL was lost, refused or is not to be had
/// yet, or that the server could not do it now, rather than that a statement was wrong: IO,
/// TLS and pool errors, and the SQLSTATEs of connection exceptions (class 08), insufficient
/// resources (53), a server shutting down or starting (57P01-57P03), a lock not to be had
/// (55P03), a serialization failure or deadlock (40001, 40P01). A read-only server (25006)
/// and a statement timeout (57014) are not among them: a `DATABASE_URL` naming a standby, or
/// a role whose settings forbid the migrations, fails at once.
pub fn connection_trouble(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(d) => d.code().is_some_and(|c| {
            c.starts_with("08")
                || c.starts_with("53")
                || matches!(
                    &*c,
                    "57P01" | "57P02" | "57P03" | "55P03" | "40001" | "40P01"
                )
        }),
        _ => false,
    }
}

/// The pool the services use, with the migrations applied if `migrate`: connecting and
/// migrating are one step, so a connection lost between the two is waited out like one
/// refused before them.
pub async fn prepare(
    url: &str,
    max_connections: u32,
    migrate: bool,
) -> Result<PgPool, PrepareError> {
    let pool = connect(url, max_connections)
        .await
        .map_err(PrepareError::Connect)?;
    if migrate && let Err(e) = self::migrate(&pool).await {
        // Dropped, not closed: closing waits for the connections to be handed back, and
        // the one the migration broke may never be.
        drop(pool);
        return Err(PrepareError::Migrate(e));
    }
    Ok(pool)
}

/// Applies pending migrations (idempotent; safe with several workers starting at once, sqlx
/// takes an advisory lock).
///
/// Migrations a newer payflow applied are left alone rather than refused: in a rolling deploy
/// the new version migrates first and an older worker that restarts meanwhile must still start.
/// That holds because migrations only add (tables, columns with defaults, functions); one that
/// removes or changes what a released version uses waits for the release after it.
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    let mut migrator = sqlx::migrate!("./migrations");
    migrator.set_ignore_missing(true);
    migrator.run(pool).await
}
