//! Roster stores and vends group memberships imported from many directories.
//!
//! Data flows one way: [`server`] → [`http`] → [`app`] → [`store`], each using [`domain`].

pub mod app;
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
pub mod telemetry;
pub mod webhooks;
