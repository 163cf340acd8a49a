//! Domain types and rules. Nothing in here performs I/O.

pub mod audit;
pub mod change;
pub mod cohort;
pub mod correlation;
pub mod feed;
pub mod full_update;
pub mod ids;
pub mod input;
pub mod lifecycle;
pub mod membership;
pub mod nesting;
pub mod operation;
pub mod operation_request;
pub mod page;
pub mod resource;
pub mod resource_sync;
pub mod scim;
pub mod scim_event;
pub mod subscription;
pub mod time;
pub mod token;

pub use ids::{OperationId, ResourceId};

/// A value that breaks a domain rule, with a sentence that says what was wrong.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidInput(pub String);

impl InvalidInput {
    pub fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}
