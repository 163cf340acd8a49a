//! The time a request's statements may take. A request runs inside [`within`]; every connection
//! the store takes for it is told how long the request has left (on PostgreSQL, its
//! `statement_timeout`), so a statement never outlives the request that asked for it, and work
//! outside any request (operations, sweeps, the relay) runs unbounded by it.

use std::future::Future;
use std::time::Duration;
use tokio::time::Instant;

tokio::task_local! {
    static DEADLINE: Instant;
}

/// Runs `work` with its statements bounded by `deadline`.
pub async fn within<F: Future>(deadline: Instant, work: F) -> F::Output {
    DEADLINE.scope(deadline, work).await
}

/// How long a statement started now may run: the time the current request has left (at least a
/// millisecond), or `None` outside a request.
pub fn remaining() -> Option<Duration> {
    DEADLINE
        .try_with(|deadline| deadline.saturating_duration_since(Instant::now()))
        .ok()
        .map(|left| left.max(Duration::from_millis(1)))
}
