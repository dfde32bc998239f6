//! Reconciler scenarios against an in-memory API server (`support::fake_api`): what each kind
//! writes, and what it doesn't, for the situations users meet.

mod fake_api_selftest;
mod faults;
mod foundation;
mod leader;
mod livy;
mod notebook;
mod seam;
mod security;
mod support;
mod workspace_view;
