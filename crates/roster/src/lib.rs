//! Roster stores and vends group memberships imported from many directories.
//!
//! Data flows one way: [`http`] → [`domain`] → [`store`].

pub mod cli;
pub mod commands;
pub mod config;
pub mod domain;
pub mod egress;
pub mod error;
pub mod http;
pub mod import;
pub mod ops;
pub mod relay;
pub mod render;
pub mod server;
pub mod store;
pub mod webhooks;
