//! Quorum portal server: HTTP API, authentication, RBAC with PODs, audit log and the store.
//!
//! `run` starts the server on a listener the caller provides, so the integration tests start the
//! real thing on port 0; `main.rs` only parses arguments and calls into here.

pub mod auth;
pub mod clock;
pub mod config;
pub mod domain;
pub mod store;
