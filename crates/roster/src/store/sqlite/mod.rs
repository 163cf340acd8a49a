//! The SQLite backend: the embedded zero-setup default. One writer connection (SQLite has one
//! writer; `BEGIN IMMEDIATE` takes the write lock up front so read-modify-write cannot race) and a
//! pool of readers, which WAL mode lets run beside the writer.

use super::db::{Db, Pools};
use super::{StoreError, StoreResult};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use std::path::Path;

mod codec;

/// Readers that may run at once beside the writer.
const READERS: u32 = 8;

/// Creates the database's directory readable by its owner only (0700; an existing one is left
/// as it is, with a warning when others may read it) and the database file readable and writable
/// by its owner only (0600, tightened when it exists); SQLite gives its `-wal` and `-shm` files
/// the mode of the database file.
fn private_files(path: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            if dir.exists() {
                let mode = std::fs::metadata(dir)?.permissions().mode();
                if mode & 0o077 != 0 {
                    tracing::warn!(
                        dir = %dir.display(),
                        mode = format!("{:o}", mode & 0o777),
                        "the database's directory is open to other users; roster creates its own \
                         directory 0700"
                    );
                }
            } else {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(dir)?;
            }
        }
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    #[cfg(not(unix))]
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    Ok(())
}

/// Opens (creating if needed) the database file in WAL mode and applies pending migrations.
pub(super) async fn open(path: &Path) -> StoreResult<Db> {
    private_files(path)
        .map_err(|e| StoreError::Unavailable(format!("cannot prepare {}: {e}", path.display())))?;
    let options = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .foreign_keys(true)
        .busy_timeout(super::ACQUIRE_TIMEOUT);
    let writer = SqlitePoolOptions::new()
        .max_connections(1)
        .acquire_timeout(super::ACQUIRE_TIMEOUT)
        .connect_with(options.clone())
        .await?;
    sqlx::migrate!("src/store/sqlite/migrations")
        .run(&writer)
        .await?;
    let reader = SqlitePoolOptions::new()
        .max_connections(READERS)
        .acquire_timeout(super::ACQUIRE_TIMEOUT)
        .connect_with(options.read_only(true))
        .await?;
    Ok(Db::new(Pools::Sqlite { writer, reader }))
}
