//! Reconciler scenarios against an in-memory API server (`support::fake_api`): what each kind
//! writes, and what it doesn't, for the situations users meet.

// A test crate: its helpers unwrap and panic like its tests do (the lint allows that only
// inside #[test] functions and #[cfg(test)] modules, which helpers of a test crate are not).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod access_changes;
mod cluster_credential;
mod consumers;
mod fake_api_selftest;
mod faults;
mod foundation;
mod leader;
mod livy;
mod notebook;
mod observability;
mod plugin;
mod seam;
mod security;
mod support;
mod workspace_view;
