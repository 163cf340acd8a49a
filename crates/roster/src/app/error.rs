//! The application layer's one error type. Its messages say what was wrong in the domain's words;
//! the edge (`http/`) gives each kind its status and adds hints that name API paths.

use crate::domain::full_update::LineError;
use crate::domain::operation::Operation;
use crate::domain::{InvalidInput, OperationId};
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The store refused or failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A value breaks a rule.
    #[error(transparent)]
    Invalid(#[from] InvalidInput),
    /// A value that cannot be read: a bad cursor, a number out of range.
    #[error("{0}")]
    Unreadable(String),
    /// Lines that could not be read, each with its number.
    #[error("{0}")]
    InvalidLines(String, Vec<LineError>),
    /// An upload larger than the server accepts.
    #[error("{0}")]
    TooLarge(String),
    /// Nothing answers the question: no such relation between records that exist.
    #[error("{0}")]
    NotFound(String),
    /// The caller's token may not do this.
    #[error("{0}")]
    Forbidden(String),
    /// The record's state refuses this.
    #[error("{0}")]
    Conflict(String),
    /// An operation that is not uploading cannot be cancelled: a pending one is rejected.
    #[error("operation {0} is not uploading; a pending operation is rejected by an admin")]
    NotUploading(OperationId),
    /// The full-update that replaces all of a group's members did not end applied: it is held
    /// for approval, still applying, or failed.
    #[error("the replace of members is operation {}, {}", .0.id, .0.status.name())]
    MembersNotReplaced(Box<Operation>),
    /// A fault on roster's side.
    #[error("{0}")]
    Internal(String),
}
