//! Quorum's integration tests: one binary, the real server on port 0, every store-touching test
//! on both SQLite and PostgreSQL (see `harness.rs`).

mod harness;

mod admin;
mod audit;
mod auth;
mod cli;
mod executions;
mod http_basics;
mod instances;
mod migrations;
mod mongo;
mod openapi;
mod rbac;
mod replicas;
mod requests;
mod scripts;
mod slack;
mod slack_standin;
