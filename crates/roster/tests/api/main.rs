//! Integration tests: every endpoint over HTTP on a real database, each scenario on both backends.

mod accounts;
mod changes;
mod cohorts;
mod common;
mod crash;
mod engine;
mod errors;
mod fuzz;
mod groups;
mod hardening;
mod lifecycle;
mod metrics;
mod nesting;
mod openapi;
mod operations;
mod process;
mod reads;
mod relay;
mod resources;
mod scim;
#[path = "../support/scratch.rs"]
mod scratch;
mod security;
mod webhooks;
