//! The endpoint policy: which provider URLs a resource may name.
//!
//! By default a provider may be reached only at its official hosts over HTTPS. The operator's
//! `--allow-endpoint HOST[:PORT]` flag allows more hosts (for sovereign clouds, regional or
//! on-premises installations, and mock servers in tests); only an allowed loopback host may use
//! plain HTTP. The check is literal: it looks at the URL as written, never at what a name
//! resolves to, so a DNS name pointing at 127.0.0.1 is not loopback and an IP literal is never
//! official.

use std::{fmt, net::IpAddr, str::FromStr};
use url::{Host, Url};

/// A provider API the operator calls, for the purpose of the endpoint policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Service {
    /// Azure Resource Manager.
    AzureResourceManager,
    /// Microsoft Entra ID token endpoints.
    EntraId,
    /// Microsoft Fabric REST API.
    Fabric,
    /// DataRobot API.
    DataRobot,
    /// Alibaba Cloud EMR Serverless Spark.
    EmrServerlessSpark,
    /// Alibaba Cloud STS.
    AlibabaSts,
}

impl Service {
    /// Human-readable name used in messages.
    pub fn display_name(self) -> &'static str {
        match self {
            Service::AzureResourceManager => "Azure Resource Manager",
            Service::EntraId => "Microsoft Entra ID",
            Service::Fabric => "Microsoft Fabric",
            Service::DataRobot => "DataRobot",
            Service::EmrServerlessSpark => "EMR Serverless Spark",
            Service::AlibabaSts => "Alibaba Cloud STS",
        }
    }

    /// Whether `host` (lower case, no trailing dot) is one of the service's official hosts.
    pub fn is_official_host(self, host: &str) -> bool {
        const ARM: &[&str] = &[
            "management.azure.com",
            "management.usgovcloudapi.net",
            "management.chinacloudapi.cn",
        ];
        const ENTRA: &[&str] = &[
            "login.microsoftonline.com",
            "login.microsoftonline.us",
            "login.chinacloudapi.cn",
        ];
        const FABRIC: &[&str] = &["api.fabric.microsoft.com"];
        match self {
            Service::AzureResourceManager => ARM.contains(&host),
            Service::EntraId => ENTRA.contains(&host),
            Service::Fabric => FABRIC.contains(&host),
            Service::DataRobot => has_subdomain_of(host, "datarobot.com"),
            Service::EmrServerlessSpark | Service::AlibabaSts => {
                has_subdomain_of(host, "aliyuncs.com")
            }
        }
    }
}

/// `host` is a proper subdomain of `domain` made of valid DNS labels.
fn has_subdomain_of(host: &str, domain: &str) -> bool {
    let Some(prefix) = host.strip_suffix(domain) else {
        return false;
    };
    let Some(labels) = prefix.strip_suffix('.') else {
        return false;
    };
    !labels.is_empty()
        && labels.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// One `--allow-endpoint` entry: a host, and optionally the only port allowed for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AllowedEndpoint {
    host: String,
    port: Option<u16>,
}

impl FromStr for AllowedEndpoint {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |why: &str| {
            format!("invalid --allow-endpoint {s:?}: {why} (expected HOST or HOST:PORT)")
        };
        if s.is_empty() || s.contains("://") || s.contains('/') || s.contains('@') {
            return Err(bad("give a host, not a URL"));
        }
        // Reuse the URL parser for host syntax (IPv6 in brackets, IDNA, port range).
        let url = Url::parse(&format!("https://{s}")).map_err(|e| bad(&e.to_string()))?;
        let host = canonical_host(&url).ok_or_else(|| bad("no host"))?;
        if host.ends_with('.') {
            return Err(bad("host ends with a dot"));
        }
        // `Url` drops the port when it equals the scheme default, so look at what was written.
        let port =
            if s.ends_with(']') || !s.contains(':') || (s.starts_with('[') && !s.contains("]:")) {
                None
            } else {
                let p = s.rsplit(':').next().unwrap_or_default();
                Some(p.parse::<u16>().map_err(|_| bad("port is not a number"))?)
            };
        Ok(Self { host, port })
    }
}

impl fmt::Display for AllowedEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        match self.port {
            Some(p) => write!(f, "{host}:{p}"),
            None => f.write_str(&host),
        }
    }
}

/// Why an endpoint was refused. The message names scheme, host and port only (never a path,
/// query or userinfo, which could carry a secret).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("endpoint {origin} is not allowed for {service}: {why}")]
pub struct EndpointError {
    origin: String,
    service: &'static str,
    why: String,
}

/// The policy: official hosts per service, plus the operator's `--allow-endpoint` entries.
#[derive(Clone, Debug, Default)]
pub struct EndpointPolicy {
    allowed: Vec<AllowedEndpoint>,
}

impl EndpointPolicy {
    /// A policy allowing the official hosts plus `allowed`.
    pub fn new(allowed: Vec<AllowedEndpoint>) -> Self {
        Self { allowed }
    }

    /// The `--allow-endpoint` entries.
    pub fn allowed(&self) -> &[AllowedEndpoint] {
        &self.allowed
    }

    /// Parses `endpoint` and checks it for `service`; returns the URL to use.
    pub fn check_str(&self, service: Service, endpoint: &str) -> Result<Url, EndpointError> {
        let url = Url::parse(endpoint).map_err(|e| EndpointError {
            origin: "(unparseable URL)".into(),
            service: service.display_name(),
            why: format!("not a valid absolute URL ({e})"),
        })?;
        self.check(service, &url)?;
        Ok(url)
    }

    /// Checks a URL for `service`.
    pub fn check(&self, service: Service, url: &Url) -> Result<(), EndpointError> {
        let fail = |why: String| EndpointError {
            origin: origin_of(url),
            service: service.display_name(),
            why,
        };
        let scheme = url.scheme();
        if scheme != "https" && scheme != "http" {
            return Err(fail(format!("scheme {scheme} is not http(s)")));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(fail("credentials in the URL are not allowed".into()));
        }
        if url.fragment().is_some() {
            return Err(fail("a URL fragment is not allowed".into()));
        }
        let Some(host) = canonical_host(url) else {
            return Err(fail("no host".into()));
        };
        if host.ends_with('.') {
            return Err(fail("host ends with a dot".into()));
        }
        let port = url.port_or_known_default();
        let listed = self
            .allowed
            .iter()
            .any(|a| a.host == host && (a.port.is_none() || a.port == port));
        if listed {
            if scheme == "http" && !is_loopback_literal(&host) {
                return Err(fail(
                    "plain http is allowed only for loopback hosts; use https".into(),
                ));
            }
            return Ok(());
        }
        if !service.is_official_host(&host) {
            return Err(fail(format!(
                "{host} is not an official {} host and not allowed by --allow-endpoint",
                service.display_name()
            )));
        }
        if scheme != "https" {
            return Err(fail("official hosts are reached over https only".into()));
        }
        if url.port().is_some_and(|p| p != 443) {
            return Err(fail("official hosts are reached on port 443 only".into()));
        }
        Ok(())
    }

    /// Ok if `url` is an official host of `service` over https, else why not: the check for
    /// credentials that belong to the operator pod itself (workload identity, RRSA), which
    /// `--allow-endpoint` does not extend.
    pub fn require_official(service: Service, url: &Url) -> Result<(), EndpointError> {
        if Self::is_official(service, url) {
            Ok(())
        } else {
            Err(EndpointError {
                origin: origin_of(url),
                service: service.display_name(),
                why: "the operator's own identity is sent only to official hosts over https".into(),
            })
        }
    }

    /// Checks a URL a provider handed back to be requested next (a next-page link such as
    /// DataRobot's `next` or Fabric's `continuationUri`): it must pass the policy like any
    /// endpoint, and have the same scheme, host and port as `configured`, the endpoint the
    /// request came from. A page can't send the next request (and its Authorization header)
    /// anywhere else. Returns the link as parsed, otherwise unchanged (no re-encoding).
    pub fn check_link(
        &self,
        service: Service,
        configured: &Url,
        link: &str,
    ) -> Result<Url, EndpointError> {
        let url = self.check_str(service, link)?;
        if origin_key(&url) != origin_key(configured) {
            return Err(EndpointError {
                origin: origin_of(&url),
                service: service.display_name(),
                why: format!(
                    "a link to another origin than the configured endpoint {} is not followed",
                    origin_of(configured)
                ),
            });
        }
        Ok(url)
    }

    /// Whether `url` is an official host of `service` over https (credentials that belong to
    /// the operator pod itself are sent only there).
    pub fn is_official(service: Service, url: &Url) -> bool {
        url.scheme() == "https"
            && url.username().is_empty()
            && url.password().is_none()
            && url.port().is_none_or(|p| p == 443)
            && canonical_host(url).is_some_and(|h| service.is_official_host(&h))
    }
}

/// The host in lower case (IPv6 without brackets).
fn canonical_host(url: &Url) -> Option<String> {
    match url.host()? {
        Host::Domain(d) => Some(d.to_ascii_lowercase()),
        Host::Ipv4(ip) => Some(ip.to_string()),
        Host::Ipv6(ip) => Some(ip.to_string()),
    }
}

/// Scheme, canonical host and effective port: what "same origin" compares.
fn origin_key(url: &Url) -> (String, Option<String>, Option<u16>) {
    (
        url.scheme().to_owned(),
        canonical_host(url),
        url.port_or_known_default(),
    )
}

/// Loopback by the literal: `localhost`, 127.0.0.0/8 or ::1.
fn is_loopback_literal(host: &str) -> bool {
    host == "localhost"
        || host
            .parse::<IpAddr>()
            .map(|ip| ip.is_loopback())
            .unwrap_or(false)
}

/// `scheme://host[:port]` of a URL, for messages.
pub fn origin_of(url: &Url) -> String {
    match (url.host_str(), url.port()) {
        (Some(h), Some(p)) => format!("{}://{h}:{p}", url.scheme()),
        (Some(h), None) => format!("{}://{h}", url.scheme()),
        _ => format!("{}://", url.scheme()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(entries: &[&str]) -> EndpointPolicy {
        EndpointPolicy::new(entries.iter().map(|e| e.parse().unwrap()).collect())
    }

    #[test]
    fn official_hosts_over_https_are_allowed_by_default() {
        let p = EndpointPolicy::default();
        for (svc, url) in [
            (
                Service::AzureResourceManager,
                "https://management.azure.com",
            ),
            (
                Service::AzureResourceManager,
                "https://management.chinacloudapi.cn/",
            ),
            (Service::EntraId, "https://login.microsoftonline.us/"),
            (Service::Fabric, "https://api.fabric.microsoft.com/v1"),
            (Service::DataRobot, "https://app.eu.datarobot.com/api/v2"),
            (
                Service::EmrServerlessSpark,
                "https://emr-serverless-spark.cn-hangzhou.aliyuncs.com",
            ),
            (Service::AlibabaSts, "https://sts.aliyuncs.com:443"),
            (Service::Fabric, "https://API.FABRIC.MICROSOFT.COM"),
        ] {
            assert!(p.check_str(svc, url).is_ok(), "{svc:?} {url}");
        }
    }

    #[test]
    fn everything_else_is_refused_by_default() {
        let p = EndpointPolicy::default();
        for (svc, url, why) in [
            (
                Service::AzureResourceManager,
                "http://management.azure.com",
                "https only",
            ),
            (
                Service::AzureResourceManager,
                "https://management.azure.com:8443",
                "port 443",
            ),
            (
                Service::AzureResourceManager,
                "https://api.fabric.microsoft.com",
                "not an official",
            ),
            (
                Service::Fabric,
                "https://evil.example.com",
                "not an official",
            ),
            (
                Service::DataRobot,
                "https://datarobot.com",
                "not an official",
            ),
            (
                Service::DataRobot,
                "https://app.datarobot.com.evil.io",
                "not an official",
            ),
            (
                Service::DataRobot,
                "https://evildatarobot.com",
                "not an official",
            ),
            (
                Service::EmrServerlessSpark,
                "https://aliyuncs.com.evil.io",
                "not an official",
            ),
            (
                Service::Fabric,
                "https://user:pw@api.fabric.microsoft.com",
                "credentials",
            ),
            (Service::Fabric, "https://api.fabric.microsoft.com.", "dot"),
            (Service::Fabric, "https://127.0.0.1", "not an official"),
            (Service::Fabric, "ftp://api.fabric.microsoft.com", "scheme"),
            (
                Service::Fabric,
                "https://api.fabric.microsoft.com/#x",
                "fragment",
            ),
            (Service::Fabric, "not a url", "valid absolute URL"),
        ] {
            let err = p.check_str(svc, url).unwrap_err().to_string();
            assert!(err.contains(why), "{url}: {err}");
        }
    }

    #[test]
    fn allow_endpoint_adds_hosts_and_loopback_may_use_http() {
        let p = policy(&[
            "127.0.0.1:8080",
            "fabric.contoso.internal",
            "[::1]:9000",
            "localhost",
        ]);
        assert!(
            p.check_str(Service::Fabric, "http://127.0.0.1:8080/v1")
                .is_ok()
        );
        assert!(
            p.check_str(Service::Fabric, "http://127.0.0.1:8081/v1")
                .is_err(),
            "other port"
        );
        assert!(
            p.check_str(Service::Fabric, "http://127.0.0.2:8080/v1")
                .is_err(),
            "other host"
        );
        assert!(
            p.check_str(Service::Fabric, "https://fabric.contoso.internal:9443")
                .is_ok()
        );
        let err = p
            .check_str(Service::Fabric, "http://fabric.contoso.internal")
            .unwrap_err()
            .to_string();
        assert!(err.contains("loopback"), "{err}");
        assert!(
            p.check_str(Service::DataRobot, "http://[::1]:9000/api")
                .is_ok()
        );
        assert!(
            p.check_str(Service::DataRobot, "http://localhost:1234")
                .is_ok()
        );
    }

    #[test]
    fn dns_names_are_not_loopback_even_if_they_resolve_there() {
        let p = policy(&["127.0.0.1.nip.io"]);
        assert!(
            p.check_str(Service::Fabric, "http://127.0.0.1.nip.io")
                .is_err()
        );
        assert!(
            p.check_str(Service::Fabric, "https://127.0.0.1.nip.io")
                .is_ok()
        );
    }

    #[test]
    fn is_official_is_strict() {
        let u = |s: &str| Url::parse(s).unwrap();
        assert!(EndpointPolicy::is_official(
            Service::EntraId,
            &u("https://login.microsoftonline.com/x")
        ));
        assert!(!EndpointPolicy::is_official(
            Service::EntraId,
            &u("http://login.microsoftonline.com/x")
        ));
        assert!(!EndpointPolicy::is_official(
            Service::EntraId,
            &u("https://127.0.0.1/x")
        ));
        assert!(!EndpointPolicy::is_official(
            Service::EntraId,
            &u("https://login.microsoftonline.com:444/")
        ));
    }

    #[test]
    fn require_official_explains_the_refusal() {
        let u = |s: &str| Url::parse(s).unwrap();
        assert!(
            EndpointPolicy::require_official(
                Service::EntraId,
                &u("https://login.chinacloudapi.cn/")
            )
            .is_ok()
        );
        let err = EndpointPolicy::require_official(Service::EntraId, &u("http://127.0.0.1:9/"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("http://127.0.0.1:9"), "{err}");
        assert!(err.contains("own identity"), "{err}");
    }

    #[test]
    fn links_must_pass_the_policy_and_stay_on_the_configured_origin() {
        let p = policy(&["127.0.0.1:8080", "127.0.0.1:9090"]);
        let base = Url::parse("https://app.datarobot.com/api/v2").unwrap();
        let next = "https://app.datarobot.com:443/api/v2/notebooks/?offset=100&limit=100";
        let got = p.check_link(Service::DataRobot, &base, next).unwrap();
        assert_eq!(got.query(), Some("offset=100&limit=100"));
        // Percent-encoding in the link is kept as given.
        let fabric = Url::parse("https://api.fabric.microsoft.com").unwrap();
        let got = p
            .check_link(
                Service::Fabric,
                &fabric,
                "https://api.fabric.microsoft.com/v1/workspaces?continuationToken=LDEsMTAwMDAwLDA%3D",
            )
            .unwrap();
        assert_eq!(got.query(), Some("continuationToken=LDEsMTAwMDAwLDA%3D"));
        for (link, why) in [
            // Another official host: passes the policy, but is not where we were sent.
            ("https://eu.datarobot.com/api/v2/x", "another origin"),
            ("https://evil.example.com/api/v2/x", "not an official"),
            ("http://app.datarobot.com/api/v2/x", "https only"),
            ("https://tok:x@app.datarobot.com/api/v2/x", "credentials"),
            ("/api/v2/relative", "valid absolute URL"),
        ] {
            let err = p
                .check_link(Service::DataRobot, &base, link)
                .unwrap_err()
                .to_string();
            assert!(err.contains(why), "{link}: {err}");
        }
        // Allowed loopback mocks: same host, other port is another origin.
        let mock = Url::parse("http://127.0.0.1:8080/api/v2").unwrap();
        assert!(
            p.check_link(
                Service::DataRobot,
                &mock,
                "http://127.0.0.1:8080/api/v2/n?offset=1"
            )
            .is_ok()
        );
        let err = p
            .check_link(Service::DataRobot, &mock, "http://127.0.0.1:9090/api/v2/n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("another origin"), "{err}");
    }

    #[test]
    fn allow_endpoint_entries_parse_strictly() {
        let e: AllowedEndpoint = "Example.COM:8443".parse().unwrap();
        assert_eq!(e.to_string(), "example.com:8443");
        assert_eq!(
            "[::1]:80".parse::<AllowedEndpoint>().unwrap().to_string(),
            "[::1]:80"
        );
        assert_eq!(
            "[::1]".parse::<AllowedEndpoint>().unwrap().to_string(),
            "[::1]"
        );
        assert_eq!(
            "host:443".parse::<AllowedEndpoint>().unwrap().to_string(),
            "host:443"
        );
        for bad in [
            "",
            "https://x.com",
            "x.com/path",
            "u@x.com",
            "x.com:http",
            "x.com:99999",
            "x.com.",
        ] {
            assert!(bad.parse::<AllowedEndpoint>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn error_messages_never_show_path_query_or_userinfo() {
        let p = EndpointPolicy::default();
        let err = p
            .check_str(
                Service::Fabric,
                "https://user:s3cret@evil.example.com/p?token=abc",
            )
            .unwrap_err()
            .to_string();
        assert!(
            !err.contains("s3cret") && !err.contains("token=abc") && !err.contains("/p"),
            "{err}"
        );
    }
}
