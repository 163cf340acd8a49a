//! The time a request's statements may take. A request runs inside [`within`], which gives it a
//! tag of its own; every connection the store hands out for it is told how long the request has
//! left (on PostgreSQL, its `statement_timeout`) and carries the tag (its `application_name`),
//! so that a request dropped before it is answered — timed out, or abandoned by its client — has
//! the statements still running under its tag cancelled (`Store::cancel_statements`). Work
//! outside any request (operations, sweeps, the relay) runs unbounded, as plain `roster`.

use std::future::Future;
use std::time::Duration;
use tokio::time::Instant;

/// What the connections of one request are told.
#[derive(Debug, Clone)]
pub struct Budget {
    deadline: Instant,
    tag: String,
}

impl Budget {
    /// A budget of `timeout` from now, with a new tag.
    pub fn new(timeout: Duration) -> Self {
        Self {
            deadline: Instant::now() + timeout,
            tag: format!("{BACKGROUND} {}", uuid::Uuid::new_v4().simple()),
        }
    }

    /// The request's tag: the `application_name` of its connections.
    pub fn tag(&self) -> &str {
        &self.tag
    }
}

/// The `application_name` of connections doing work outside requests.
pub const BACKGROUND: &str = "roster";

tokio::task_local! {
    static BUDGET: Budget;
}

/// Runs `work` with its statements bounded by `budget`.
pub async fn within<F: Future>(budget: Budget, work: F) -> F::Output {
    BUDGET.scope(budget, work).await
}

/// How long a statement started now may run (the time the current request has left, at least a
/// millisecond; none outside a request) and the tag its connection carries.
pub fn current() -> (Option<Duration>, String) {
    BUDGET
        .try_with(|budget| {
            let left = budget.deadline.saturating_duration_since(Instant::now());
            (Some(left.max(Duration::from_millis(1))), budget.tag.clone())
        })
        .unwrap_or_else(|_| (None, BACKGROUND.to_owned()))
}
