//! Reconcile errors. Each knows its condition reason and whether (and when) to retry, which
//! drives both the Ready condition and the requeue.

use crate::providers::endpoint::EndpointError;
use crate::providers::error::{ProviderError, ProviderErrorKind};
use std::{fmt, time::Duration};

/// About how long a condition message of a provider failure is (see [`Error::summary`]).
pub const SUMMARY_MAX: usize = 200;

/// Reasons of the Ready condition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    /// The Secret / inventory is current.
    Synced,
    /// The spec is invalid; fix it.
    InvalidSpec,
    /// A referenced Secret or key does not exist.
    CredentialsNotFound,
    /// Pod identity was requested in a namespace the operator doesn't allow it for.
    PodIdentityNotAllowed,
    /// The ClusterCredential named by credentialRef does not allow the resource's namespace.
    CredentialNotAllowed,
    /// The endpoint is not allowed by the operator's endpoint policy.
    EndpointNotAllowed,
    /// The provider refused the credentials.
    AuthenticationFailed,
    /// The provider refused access.
    Forbidden,
    /// The named provider object does not exist.
    NotFound,
    /// The provider throttled the operator.
    Throttled,
    /// Any other provider failure.
    ProviderError,
    /// A Secret of that name exists and is not owned by this resource.
    SecretConflict,
    /// The Kubernetes API server refused or failed a request.
    KubernetesError,
}

impl Reason {
    /// The CamelCase string used in conditions, events and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Synced => "Synced",
            Reason::InvalidSpec => "InvalidSpec",
            Reason::CredentialsNotFound => "CredentialsNotFound",
            Reason::PodIdentityNotAllowed => "PodIdentityNotAllowed",
            Reason::CredentialNotAllowed => "CredentialNotAllowed",
            Reason::EndpointNotAllowed => "EndpointNotAllowed",
            Reason::AuthenticationFailed => "AuthenticationFailed",
            Reason::Forbidden => "Forbidden",
            Reason::NotFound => "NotFound",
            Reason::Throttled => "Throttled",
            Reason::ProviderError => "ProviderError",
            Reason::SecretConflict => "SecretConflict",
            Reason::KubernetesError => "KubernetesError",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What to do after an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retry {
    /// Nothing will change until the spec does (or the operator's configuration): wait for a
    /// change of the resource.
    OnSpecChange,
    /// Retry with exponential backoff; at least this long if given (Retry-After).
    Backoff(Option<Duration>),
}

/// Why a reconciliation did not end Ready.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The spec is invalid.
    #[error("{0}")]
    InvalidSpec(String),
    /// A referenced Secret or key is missing.
    #[error("{0}")]
    CredentialsNotFound(String),
    /// Pod identity is not allowed here.
    #[error("{0}")]
    PodIdentityNotAllowed(String),
    /// The ClusterCredential doesn't allow this namespace.
    #[error("{0}")]
    CredentialNotAllowed(String),
    /// The endpoint policy refused the endpoint.
    #[error(transparent)]
    EndpointNotAllowed(#[from] EndpointError),
    /// A provider call failed.
    #[error(transparent)]
    Provider(#[from] ProviderError),
    /// The Secret name is taken by a Secret this resource doesn't own.
    #[error("{0}")]
    SecretConflict(String),
    /// The Kubernetes API failed.
    #[error("Kubernetes API: {}", describe_kube_error(.0))]
    Kube(#[from] kube::Error),
    /// A failure the driver has already reported (condition, event, metrics), e.g. a failed
    /// cleanup that must fail the finalizer so that it stays: it is only to be retried, after
    /// `retry_in`.
    #[error("{source}")]
    Reported {
        /// What failed.
        source: Box<Error>,
        /// When the report said it is retried.
        retry_in: Duration,
    },
}

/// A readable one-line description of a Kubernetes API error (kube's own Display repeats the
/// whole response structure).
fn describe_kube_error(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(status) => format!(
            "the API server answered {} {}: {}",
            status.code, status.reason, status.message
        ),
        other => other.to_string(),
    }
}

impl Error {
    /// The condition reason.
    pub fn reason(&self) -> Reason {
        match self {
            Error::InvalidSpec(_) => Reason::InvalidSpec,
            Error::CredentialsNotFound(_) => Reason::CredentialsNotFound,
            Error::PodIdentityNotAllowed(_) => Reason::PodIdentityNotAllowed,
            Error::CredentialNotAllowed(_) => Reason::CredentialNotAllowed,
            Error::EndpointNotAllowed(_) => Reason::EndpointNotAllowed,
            Error::Provider(e) => match e.kind {
                ProviderErrorKind::AuthenticationFailed => Reason::AuthenticationFailed,
                ProviderErrorKind::Forbidden => Reason::Forbidden,
                ProviderErrorKind::NotFound => Reason::NotFound,
                ProviderErrorKind::Throttled => Reason::Throttled,
                ProviderErrorKind::InvalidRequest
                | ProviderErrorKind::Unavailable
                | ProviderErrorKind::InvalidResponse => Reason::ProviderError,
            },
            Error::SecretConflict(_) => Reason::SecretConflict,
            Error::Kube(_) => Reason::KubernetesError,
            Error::Reported { source, .. } => source.reason(),
        }
    }

    /// Whether and when to retry. Only problems that need a spec (or operator configuration)
    /// change wait for one; everything else, including refused credentials and missing
    /// Secrets that someone may fix outside this resource, retries with capped backoff. A
    /// namespace a ClusterCredential doesn't allow waits too: the operator watches
    /// ClusterCredentials and Namespace labels and reconciles the resource when that changes.
    pub fn retry(&self) -> Retry {
        match self {
            Error::InvalidSpec(_)
            | Error::EndpointNotAllowed(_)
            | Error::PodIdentityNotAllowed(_)
            | Error::CredentialNotAllowed(_) => Retry::OnSpecChange,
            Error::Provider(e) => Retry::Backoff(e.retry_after),
            Error::CredentialsNotFound(_) | Error::SecretConflict(_) | Error::Kube(_) => {
                Retry::Backoff(None)
            }
            Error::Reported { retry_in, .. } => Retry::Backoff(Some(*retry_in)),
        }
    }

    /// Whether the failure is an outage that ends by itself: a provider that failed or could
    /// not be reached (5xx, timeout, connection). Refused credentials, missing objects and
    /// throttling are not.
    pub fn is_outage(&self) -> bool {
        match self {
            Error::Provider(e) => e.kind == ProviderErrorKind::Unavailable,
            Error::Reported { source, .. } => source.is_outage(),
            _ => false,
        }
    }

    /// Whether the API server refused a write because the resource's namespace is being
    /// deleted (403, cause `NamespaceTerminating`): nothing new can be created there, and the
    /// resource itself is about to go, so there is nothing to report or retry.
    pub fn is_namespace_terminating(&self) -> bool {
        match self {
            Error::Kube(kube::Error::Api(status)) => {
                status.code == 403
                    && status.details.as_ref().is_some_and(|d| {
                        d.causes.iter().any(|c| c.reason == "NamespaceTerminating")
                    })
            }
            Error::Reported { source, .. } => source.is_namespace_terminating(),
            _ => false,
        }
    }

    /// The whole message, for events and logs: one line, secret-free by construction
    /// (provider messages are built from error codes and provider text, never from tokens or
    /// request contents).
    pub fn message(&self) -> String {
        crate::providers::error::clip(&self.to_string(), 1000)
    }

    /// The condition message: [`Self::message`], with a provider's text shortened so that the
    /// line reads well in `kubectl get -o wide` (about [`SUMMARY_MAX`] characters; the code,
    /// the call and the request id stay whole).
    pub fn summary(&self) -> String {
        match self {
            Error::Provider(p) => p.summary(SUMMARY_MAX),
            Error::Reported { source, .. } => source.summary(),
            _ => self.message(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubernetes_errors_read_as_one_line() {
        let status =
            kube::core::Status::failure("injected fault 500", "InternalError").with_code(500);
        let e = Error::Kube(kube::Error::Api(Box::new(status)));
        assert_eq!(
            e.message(),
            "Kubernetes API: the API server answered 500 InternalError: injected fault 500"
        );
    }

    #[test]
    fn reasons_and_retry() {
        let e = Error::Provider(
            ProviderError::new(ProviderErrorKind::Throttled, "slow down")
                .with_retry_after(Some(Duration::from_secs(9))),
        );
        assert_eq!(e.reason(), Reason::Throttled);
        assert_eq!(e.retry(), Retry::Backoff(Some(Duration::from_secs(9))));
        assert_eq!(Error::InvalidSpec("x".into()).retry(), Retry::OnSpecChange);
        assert_eq!(
            Error::CredentialsNotFound("x".into()).retry(),
            Retry::Backoff(None)
        );
        let e = Error::Provider(ProviderError::new(ProviderErrorKind::Unavailable, "503"));
        assert_eq!(e.reason(), Reason::ProviderError);
    }
}
