//! Provider clients: one module per provider API, plus the shared HTTP client, error types and
//! the endpoint policy. Provider modules know nothing of Kubernetes types; reconcilers ask them
//! for a token or an inventory and get typed [`error::ProviderError`]s back.

pub mod auth;
pub mod azure_cloud;
pub mod azure_ml;
pub mod datarobot;
pub mod emr_spark;
pub mod endpoint;
pub mod error;
pub mod fabric;
pub mod http;
pub mod lenient;
pub mod ratelimit;
pub mod segment;

#[cfg(test)]
mod echo_tests;
#[cfg(test)]
mod endpoint_bypass_tests;
#[cfg(test)]
mod hostile_ids_tests;
