//! workspace-access-operator: a Kubernetes operator that turns cloud providers' workspace-access
//! APIs into Secrets (short-lived tokens) and resource status (inventories).
//!
//! Data flows one way: watch event -> reconciler (`controller`) -> provider client
//! (`providers`) -> Secret / status.

#![warn(missing_docs)]

pub mod api;
pub mod controller;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod leader;
pub mod metrics;
pub mod plugin;
pub mod preview;
pub mod providers;
pub mod redact;
pub mod server;
pub mod time;

#[cfg(test)]
mod architecture_tests;
#[cfg(test)]
mod monitoring_tests;
#[cfg(test)]
mod redaction_tests;
