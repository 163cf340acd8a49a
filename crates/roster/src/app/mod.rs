//! The use cases: one unit of work each, and every domain rule that needs stored data once. REST
//! (`http/`) and SCIM (`http/scim/`) both call them, and neither calls the other. They take the
//! store, the engine, the caller and domain values, and answer domain values or an [`AppError`];
//! they know nothing of HTTP.

mod caller;
mod error;
pub mod groups;
pub mod lifecycle;
pub mod nesting;
pub mod operations;
pub mod resources;
pub mod scim;

pub use caller::Caller;
pub use error::AppError;

use crate::domain::full_update::Threshold;
use crate::ops::Engine;
use crate::store::Store;
use std::time::Duration;

/// What the use cases work with.
#[derive(Clone, Copy)]
pub struct App<'a> {
    pub store: &'a Store,
    /// Applies queued operations; woken when one is queued, and waited for.
    pub engine: &'a Engine,
    pub settings: &'a OperationDefaults,
}

/// Operation settings of this server.
#[derive(Debug, Clone, Copy)]
pub struct OperationDefaults {
    pub threshold: Threshold,
    pub batch_size: i64,
    pub retention_days: u32,
    /// The longest a call waits for an operation (`?wait=`); kept below the request timeout, so
    /// a long apply answers 202 and the client polls.
    pub max_wait: Duration,
    /// Identity lifecycle: the deactivation threshold.
    pub lifecycle: crate::domain::lifecycle::Policy,
}

impl Default for OperationDefaults {
    fn default() -> Self {
        Self {
            threshold: Threshold::default(),
            batch_size: crate::domain::operation::default_batch_size(),
            retention_days: 90,
            max_wait: Duration::from_secs(25),
            lifecycle: crate::domain::lifecycle::Policy::default(),
        }
    }
}
