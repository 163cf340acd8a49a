//! Who asks: the token's principal and the request it came with.

use super::AppError;
use crate::domain::token::{Actor, Principal};

/// The authenticated caller of a use case.
#[derive(Debug, Clone)]
pub struct Caller {
    pub principal: Principal,
    pub request_id: Option<String>,
}

impl Caller {
    /// Who is writing, for the audit trail.
    pub fn actor(&self) -> Actor {
        Actor {
            token_id: Some(self.principal.token_id),
            token_name: self.principal.name.clone(),
            request_id: self.request_id.clone(),
        }
    }

    /// Refuses a write to data of another source than the token's binding.
    pub fn check_source(&self, source_system: &str) -> Result<(), AppError> {
        self.principal
            .check_source(source_system)
            .map_err(AppError::Forbidden)
    }

    /// The one source system this caller reads (`read_scope: bound`), or none: every source.
    pub fn read_source(&self) -> Option<&str> {
        self.principal.read_source()
    }

    /// Refuses a read of data of `source_system` when the caller's reads are bound to another;
    /// `what` says what was asked for, in the refusal.
    pub fn check_read(&self, source_system: &str, what: &str) -> Result<(), AppError> {
        match self.read_source() {
            Some(bound) if bound != source_system => Err(self.read_refusal(what)),
            _ => Ok(()),
        }
    }

    /// The source system a list or feed reads: the caller's read binding, or else the one
    /// `requested`; a request for another source than the binding is refused.
    pub fn read_filter(&self, requested: Option<String>) -> Result<Option<String>, AppError> {
        match (self.read_source(), requested) {
            (Some(bound), Some(asked)) if asked != bound => {
                Err(self.read_refusal(&format!("source system {asked:?} is another")))
            }
            (Some(bound), _) => Ok(Some(bound.to_owned())),
            (None, asked) => Ok(asked),
        }
    }

    /// Refuses a caller whose reads are bound a view that spans source systems (`what`).
    pub fn check_read_unbound(&self, what: &str) -> Result<(), AppError> {
        match self.read_source() {
            Some(_) => Err(self.read_refusal(&format!(
                "{what} spans source systems; read it with a token whose reads are not bound"
            ))),
            None => Ok(()),
        }
    }

    fn read_refusal(&self, what: &str) -> AppError {
        AppError::Forbidden(self.principal.read_refusal(what))
    }

    /// Refuses a token bound to a source system: `what` spans sources (cohorts, unified
    /// groups, correlation), so a connector's token may not do it.
    pub fn check_unbound(&self, what: &str) -> Result<(), AppError> {
        match &self.principal.source_system {
            None => Ok(()),
            Some(bound) => Err(AppError::Forbidden(format!(
                "token {:?} is bound to source system {bound:?}; {what} spans source systems and \
                 needs a token bound to none",
                self.principal.name
            ))),
        }
    }
}
