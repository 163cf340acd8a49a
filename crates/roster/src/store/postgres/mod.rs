//! The PostgreSQL backend: native types, row locks for read-modify-write, one pool.

use super::db::{Db, Pools};
use super::StoreResult;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use std::str::FromStr;

mod codec;

/// Tells a connection, as it is handed out, how long its request has left (`statement_timeout`;
/// 0, no limit, outside a request) and whose it is (`application_name`, the request's tag), in
/// one round trip that also proves the connection alive. One prepared statement costs the server
/// about what `SELECT 1` does; two `SET`s in one simple query cost it about 60% more.
fn bound_statements(
    conn: &mut sqlx::PgConnection,
) -> futures_util::future::BoxFuture<'_, Result<(), sqlx::Error>> {
    let (left, tag) = super::budget::current();
    let millis = left.map_or(0, |left| left.as_millis().max(1)).to_string();
    Box::pin(async move {
        sqlx::query(
            "SELECT set_config('statement_timeout', $1, false), \
             set_config('application_name', $2, false)",
        )
        .bind(millis)
        .bind(tag)
        .execute(conn)
        .await?;
        Ok(())
    })
}

/// How many of `max_connections` the lookup pool may open (a quarter, at least one); the main
/// pool opens the rest, at least one.
fn split(max_connections: u32) -> (u32, u32) {
    let lookups = (max_connections / 4).max(1);
    (max_connections.saturating_sub(lookups).max(1), lookups)
}

/// Connects to PostgreSQL and applies pending migrations.
pub(super) async fn open(url: &str, max_connections: u32) -> StoreResult<Db> {
    // JIT off: roster's queries are short or index-driven, and compiling them costs more
    // than it saves (≈ 0.2 s on the sync plan of 100,000 cohorts).
    let options = PgConnectOptions::from_str(url)?
        .application_name("roster")
        .options([("jit", "off")]);
    let (main_connections, lookup_connections) = split(max_connections);
    // Each connection is told, as it is handed out, how long its request has left (none:
    // no limit for work outside a request), so that no statement outlives its request.
    let main = PgPoolOptions::new()
        .max_connections(main_connections)
        .acquire_timeout(super::ACQUIRE_TIMEOUT)
        .test_before_acquire(false)
        .after_connect(|conn, _| bound_statements(conn))
        .before_acquire(|conn, _| {
            Box::pin(async move { bound_statements(conn).await.map(|()| true) })
        })
        .connect_with(options.clone())
        .await?;
    sqlx::migrate!("src/store/postgres/migrations")
        .run(&main)
        .await?;
    let cap = super::db::LOOKUP_TIMEOUT.as_millis().to_string();
    let lookups = PgPoolOptions::new()
        .max_connections(lookup_connections)
        .acquire_timeout(super::ACQUIRE_TIMEOUT)
        .test_before_acquire(false)
        .connect_with(
            options
                .application_name("roster lookups")
                .options([("statement_timeout", cap.as_str())]),
        )
        .await?;
    Ok(Db::new(Pools::Postgres { main, lookups }))
}

#[cfg(test)]
mod tests {
    #[test]
    fn lookups_take_a_quarter_of_the_connections_and_each_pool_at_least_one() {
        assert_eq!(super::split(16), (12, 4));
        assert_eq!(super::split(4), (3, 1));
        assert_eq!(super::split(1), (1, 1));
        assert_eq!(super::split(0), (1, 1));
    }
}
