//! The test Postgres: each test's database, cloned from a migrated template and dropped when
//! the test is done.

use sqlx::Connection;

pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// The Postgres server URL tests create their databases on.
pub fn database_server_url() -> String {
    std::env::var("LANYARD_TEST_DATABASE_URL").unwrap_or_else(|_| DEFAULT_DATABASE_URL.to_owned())
}

/// A brand-new database name on the test server (created by the app on start), dropped when
/// the guard goes, whoever still holds connections to it: a test run leaves nothing behind.
pub struct TestDatabase {
    /// The database's URL.
    pub url: String,
    name: String,
}

/// A URL for a brand-new database name on the test server (created by the app on start).
/// [`TestApp`] and [`ServerProcess`] drop the test database they ran on when they go.
pub fn fresh_database_url() -> String {
    let server = database_server_url();
    let base = server.rsplit_once('/').map(|(b, _)| b).unwrap_or(&server);
    format!("{base}/lanyard_test_{}", uuid::Uuid::new_v4().simple())
}

impl TestDatabase {
    /// The guard of the test database `url` names (through a proxy or not); `None` for a
    /// database that is not a test's own.
    pub fn adopt(url: &str) -> Option<TestDatabase> {
        let path = url.rsplit_once('/')?.1;
        let name = path.split('?').next()?;
        name.starts_with("lanyard_test_").then(|| TestDatabase {
            url: url.to_owned(),
            name: name.to_owned(),
        })
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        // A runtime of its own on a thread of its own: drops run inside the tests' runtime.
        let (server, name) = (database_server_url(), self.name.clone());
        let dropped = std::thread::spawn(move || -> Result<(), String> {
            use sqlx::Connection;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime.block_on(async {
                let mut conn = sqlx::PgConnection::connect(&server)
                    .await
                    .map_err(|e| e.to_string())?;
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
                )))
                .execute(&mut conn)
                .await
                .map_err(|e| e.to_string())?;
                Ok(())
            })
        })
        .join();
        if let Ok(Err(e)) = dropped {
            eprintln!("could not drop test database {}: {e}", self.name);
        }
    }
}

/// The migrated template every test database is copied from, made once per test process
/// (and once per schema: its name carries a hash of the migrations).
static TEMPLATE: tokio::sync::OnceCell<String> = tokio::sync::OnceCell::const_new();

/// `pg_advisory_lock` key: "lanyard test template".
const TEMPLATE_LOCK: i64 = 0x6c61_6e79_7465_6d70;

/// A URL for a new database that already holds the whole schema: a copy of the migrated
/// template (`CREATE DATABASE ... TEMPLATE`), far cheaper than running every migration for
/// every test. The application still checks the migrations when it starts.
pub async fn fresh_migrated_database_url() -> String {
    let template = TEMPLATE.get_or_init(make_template).await;
    let url = fresh_database_url();
    let name = url.rsplit('/').next().unwrap_or_default().to_owned();
    let mut conn = sqlx::PgConnection::connect(&database_server_url())
        .await
        .expect("the test Postgres answers");
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "CREATE DATABASE \"{name}\" TEMPLATE \"{template}\""
    )))
    .execute(&mut conn)
    .await
    .unwrap_or_else(|e| panic!("copying the template database {template}: {e}"));
    url
}

/// Creates the migrated template unless it exists, under an advisory lock (test processes
/// of other runs may be making it too): migrated under a temporary name, then renamed, so a
/// half-made template is never copied.
async fn make_template() -> String {
    let hash = lanyard_server::db::MIGRATOR.iter().fold(0u64, |h, m| {
        m.checksum
            .iter()
            .fold(h, |h, b| h.wrapping_mul(1_099_511_628_211) ^ u64::from(*b))
    });
    let name = format!("lanyard_template_{hash:016x}");
    let server = database_server_url();
    let mut conn = sqlx::PgConnection::connect(&server)
        .await
        .expect("the test Postgres answers");
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(TEMPLATE_LOCK)
        .execute(&mut conn)
        .await
        .unwrap();
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&name)
            .fetch_one(&mut conn)
            .await
            .unwrap();
    if !exists {
        let building = format!("{name}_building");
        for sql in [
            format!("DROP DATABASE IF EXISTS \"{building}\" WITH (FORCE)"),
            format!("CREATE DATABASE \"{building}\""),
        ] {
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .execute(&mut conn)
                .await
                .unwrap();
        }
        let base = server.rsplit_once('/').map_or(server.as_str(), |(b, _)| b);
        let mut template = sqlx::PgConnection::connect(&format!("{base}/{building}"))
            .await
            .unwrap();
        lanyard_server::db::MIGRATOR
            .run(&mut template)
            .await
            .expect("migrating the template database");
        template.close().await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "ALTER DATABASE \"{building}\" RENAME TO \"{name}\""
        )))
        .execute(&mut conn)
        .await
        .unwrap();
    }
    sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(TEMPLATE_LOCK)
        .execute(&mut conn)
        .await
        .unwrap();
    name
}
