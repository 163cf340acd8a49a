//! Scratch databases for tests: a SQLite file in a temporary directory, or a fresh PostgreSQL
//! database on the server `ROSTER_TEST_POSTGRES_URL` names, removed when the test ends.

use roster::store::Location;
use sqlx::PgPool;
use uuid::Uuid;

/// The environment variable naming the PostgreSQL server the tests create databases on.
pub const PG_ENV: &str = "ROSTER_TEST_POSTGRES_URL";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A test's database: where it is, and its removal when the test ends, pass or fail (a SQLite
/// directory goes with its `TempDir`, a PostgreSQL database is dropped).
pub struct Scratch {
    pub location: Location,
    _dir: Option<tempfile::TempDir>,
    database: Option<(String, String)>,
}

impl Scratch {
    pub async fn new(backend: Backend) -> Self {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                let path = dir.path().join("roster.db");
                Self {
                    location: Location::Sqlite { path },
                    _dir: Some(dir),
                    database: None,
                }
            }
            Backend::Postgres => {
                let (admin_url, name, url) = fresh_postgres_database().await;
                Self {
                    location: Location::Postgres {
                        url,
                        max_connections: 8,
                    },
                    _dir: None,
                    database: Some((admin_url, name)),
                }
            }
        }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Some((admin_url, name)) = &self.database {
            let (admin_url, name) = (admin_url.clone(), name.clone());
            // Drop runs inside the test's runtime; a separate thread may block on its own one.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime for cleanup");
                rt.block_on(async {
                    if let Ok(pool) = PgPool::connect(&admin_url).await {
                        let _ =
                            sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                                .execute(&pool)
                                .await;
                    }
                });
            })
            .join();
        }
    }
}

/// The PostgreSQL server URL the tests use; the README's test command sets it.
pub fn postgres_admin_url() -> String {
    std::env::var(PG_ENV).unwrap_or_else(|_| {
        panic!(
            "{PG_ENV} is not set: run the tests with ./scripts/test, which starts PostgreSQL, \
             or point {PG_ENV} at a server where the tests may create databases"
        )
    })
}

/// A URL for database `name` on the server of `admin_url`.
pub fn database_url(admin_url: &str, name: &str) -> String {
    let mut url = url::Url::parse(admin_url).expect("a valid PostgreSQL URL");
    url.set_path(&format!("/{name}"));
    url.to_string()
}

/// Creates a fresh, empty PostgreSQL database and returns the server's URL, its name and URL.
pub async fn fresh_postgres_database() -> (String, String, String) {
    let admin_url = postgres_admin_url();
    let name = format!("roster_test_{}", Uuid::new_v4().simple());
    let admin = PgPool::connect(&admin_url)
        .await
        .unwrap_or_else(|e| panic!("cannot reach PostgreSQL at {PG_ENV}: {e}"));
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&admin)
        .await
        .expect("create test database");
    admin.close().await;
    let url = database_url(&admin_url, &name);
    (admin_url, name, url)
}

/// Instantiates each scenario `async fn name(backend: Backend)` as a test on both backends:
/// `<module>::sqlite::name` and `<module>::postgres::name`.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name($crate::scratch::Backend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name($crate::scratch::Backend::Postgres).await
                }
            )*
        }
    };
}
