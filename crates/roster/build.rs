//! Rebuilds when a migration is added: `sqlx::migrate!` embeds the migration directories, and
//! cargo does not watch them on its own.

fn main() {
    println!("cargo:rerun-if-changed=src/store/postgres/migrations");
    println!("cargo:rerun-if-changed=src/store/sqlite/migrations");
}
