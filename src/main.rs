//! `workspace-access-operator`: run the controllers, print the CRDs, or preview one resource.

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};
use workspace_access_operator::api::duration::Duration;
use workspace_access_operator::controller::credentials::PodIdentityPolicy;
use workspace_access_operator::controller::run::{ControllerOptions, run_controllers};
use workspace_access_operator::controller::{
    Context, DEFAULT_CREDENTIAL_NAMESPACE, Settings, SyncEvents,
};
use workspace_access_operator::leader::{LeaseSettings, run_as_leader};
use workspace_access_operator::metrics::Metrics;
use workspace_access_operator::providers::endpoint::{AllowedEndpoint, EndpointPolicy};
use workspace_access_operator::providers::http::{HttpClient, HttpOptions};
use workspace_access_operator::providers::ratelimit::{HostRate, Rate, RateLimits};
use workspace_access_operator::server::{ServerState, serve};
use workspace_access_operator::{api, preview};

/// Kubernetes operator that keeps provider tokens in Secrets and workspace inventories in status.
#[derive(Parser)]
#[command(name = "workspace-access-operator", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the controllers against the cluster of the current kubeconfig (or in-cluster).
    Run(RunArgs),
    /// Print the CustomResourceDefinitions as YAML.
    Crd,
    /// Sync one resource once without a cluster, and print the status it would write and the
    /// Secret keys (values redacted); or check one ClusterCredential given alone.
    Preview(PreviewArgs),
}

/// Operator policy shared by `run` and `preview`.
#[derive(Args, Clone)]
struct PolicyArgs {
    /// Also allow this provider endpoint host (HOST or HOST:PORT; repeatable). Only an allowed
    /// loopback host may use plain http.
    #[arg(
        long = "allow-endpoint",
        value_name = "HOST[:PORT]",
        env = "WAO_ALLOW_ENDPOINTS",
        value_delimiter = ','
    )]
    allow_endpoint: Vec<AllowedEndpoint>,
    /// Namespace whose resources may use the operator pod's own identity (Azure workload
    /// identity, Alibaba RRSA); repeatable; `*` allows all.
    #[arg(
        long = "pod-identity-namespace",
        value_name = "NAMESPACE",
        env = "WAO_POD_IDENTITY_NAMESPACES",
        value_delimiter = ','
    )]
    pod_identity_namespace: Vec<String>,
    /// Timeout of one provider HTTP request.
    #[arg(long, default_value = "30s", value_name = "DURATION")]
    provider_timeout: Duration,
    /// First retry delay after a failure (doubles per failure).
    #[arg(long, default_value = "2s", value_name = "DURATION")]
    base_backoff: Duration,
    /// Longest retry delay after failures (a provider's Retry-After is honoured even if longer).
    #[arg(long, default_value = "5m", value_name = "DURATION")]
    max_backoff: Duration,
    /// Request rate allowed per provider host and credential (ARM: subscription and client;
    /// Entra and Fabric: client; Alibaba: AccessKey or RRSA role; DataRobot: API key), shared
    /// by all resources using that credential: QPS or QPS:BURST.
    #[arg(long, default_value = "5:10", value_name = "QPS[:BURST]")]
    provider_rate: Rate,
    /// How long a credentials Secret read from the API server is reused before it is read
    /// again (0s: read it on every reconciliation).
    #[arg(long, default_value = "10s", value_name = "DURATION")]
    credential_cache_ttl: Duration,
    /// Cap for one host, all credentials together, on top of --provider-rate (repeatable).
    #[arg(long = "provider-host-rate", value_name = "HOST=QPS[:BURST]")]
    provider_host_rate: Vec<HostRate>,
    /// Namespace holding the Secrets that ClusterCredentials name (they can name no other).
    /// Default: the operator's own namespace (POD_NAMESPACE, else the namespace of the
    /// kubeconfig or service account); for preview, POD_NAMESPACE or workspace-access-operator.
    #[arg(long, env = "WAO_CREDENTIAL_NAMESPACE", value_name = "NAMESPACE")]
    credential_namespace: Option<String>,
}

impl PolicyArgs {
    /// The settings; `own_namespace` is the credential namespace when neither
    /// --credential-namespace nor POD_NAMESPACE says otherwise.
    fn settings(&self, own_namespace: &str) -> Settings {
        let credential_namespace = self
            .credential_namespace
            .clone()
            .or_else(|| std::env::var("POD_NAMESPACE").ok())
            .filter(|ns| !ns.is_empty())
            .unwrap_or_else(|| own_namespace.to_owned());
        Settings {
            endpoint_policy: EndpointPolicy::new(self.allow_endpoint.clone()),
            pod_identity: PodIdentityPolicy::new(self.pod_identity_namespace.clone()),
            base_backoff: self.base_backoff.get(),
            max_backoff: self.max_backoff.get(),
            credential_cache_ttl: self.credential_cache_ttl.get(),
            credential_namespace,
            ..Settings::default()
        }
    }

    fn http_options(&self) -> HttpOptions {
        HttpOptions {
            timeout: self.provider_timeout.get(),
            rate_limits: RateLimits {
                default: Some(self.provider_rate),
                hosts: self.provider_host_rate.clone(),
            },
            ..HttpOptions::default()
        }
    }
}

#[derive(Args)]
struct RunArgs {
    #[command(flatten)]
    policy: PolicyArgs,
    /// Address of the /metrics, /healthz and /readyz endpoints.
    #[arg(long, default_value = "0.0.0.0:8080", value_name = "ADDR")]
    metrics_addr: SocketAddr,
    /// Most reconciliations running at once, per kind.
    #[arg(long, default_value_t = 16)]
    concurrency: u16,
    /// Watch and reconcile only this namespace (default: all namespaces). With it, the
    /// operator needs its permissions only in that namespace (a Role instead of a ClusterRole).
    #[arg(long, env = "WATCH_NAMESPACE", value_name = "NAMESPACE")]
    watch_namespace: Option<String>,
    /// Let resources use ClusterCredentials (credentialRef). Watches ClusterCredentials and
    /// Namespaces (metadata) cluster-wide and the Secrets of the credential namespace; false
    /// keeps an operator with --watch-namespace to that namespace (a credentialRef is then
    /// CredentialsNotFound).
    #[arg(
        long,
        env = "WAO_CLUSTER_CREDENTIALS",
        default_value_t = true,
        action = clap::ArgAction::Set,
        value_name = "BOOL"
    )]
    cluster_credentials: bool,
    /// Elect a leader through a Lease, so that only one replica reconciles.
    #[arg(long, env = "WAO_LEADER_ELECT")]
    leader_elect: bool,
    /// Name of the Lease.
    #[arg(long, default_value = "workspace-access-operator")]
    lease_name: String,
    /// Namespace of the Lease (default: the pod's namespace from POD_NAMESPACE, else default).
    #[arg(long, env = "POD_NAMESPACE")]
    lease_namespace: Option<String>,
    /// How long a Lease is valid without renewal (seconds).
    #[arg(long, default_value_t = 15)]
    lease_duration: u64,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Which successful syncs publish a Normal Synced event; failures always publish a
    /// Warning, and AccessChanged, SecretRestored, RolloutRestarted and RolloutRestartFailed
    /// events are always published.
    #[arg(long, value_enum, default_value_t = SyncEvents::All, value_name = "WHICH")]
    sync_events: SyncEvents,
    /// How long rollout restarts (spec.rolloutRestartTargets) wait after a token changed, so
    /// that the tokens of one namespace changing within this window restart a workload they
    /// share once.
    #[arg(long, default_value = "5s", value_name = "DURATION")]
    rollout_restart_window: Duration,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Args)]
struct PreviewArgs {
    /// A manifest with the resource, or with credentials Secrets, ClusterCredentials (their
    /// Secrets in --credential-namespace) and Namespaces (whose labels a ClusterCredential's
    /// selector matches) (repeatable; multi-document YAML or JSON).
    #[arg(short = 'f', long = "filename", required = true)]
    files: Vec<PathBuf>,
    /// Namespace for documents that don't name one.
    #[arg(short = 'n', long, default_value = "default")]
    namespace: String,
    #[command(flatten)]
    policy: PolicyArgs,
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("info,kube=warn,kube_lease_manager=warn")
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

fn main() -> anyhow::Result<()> {
    limit_malloc_arenas();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(operator_main())
}

/// How many malloc arenas glibc may use (`MALLOC_ARENA_MAX` in the environment still wins).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MALLOC_ARENAS: libc::c_int = 1;

/// glibc gives threads that find the arenas busy arenas of their own, up to eight per core,
/// and memory freed in one arena serves only that arena's threads. Measured with the bench at
/// 10,000 resources (docs/performance.md): steady RSS 120 MiB with glibc's default, 112 MiB
/// with two arenas, 104 MiB with one, for the same CPU time. The per-thread caches keep one
/// arena's lock off the hot path at this operator's two runtime threads.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn limit_malloc_arenas() {
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt sets one allocator parameter; called before any other thread exists.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, MALLOC_ARENAS);
        }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn limit_malloc_arenas() {}

async fn operator_main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Crd => {
            print!("{}", api::crds_yaml()?);
            Ok(())
        }
        Command::Preview(args) => {
            init_logging(LogFormat::Text);
            let metrics = Arc::new(Metrics::new());
            let http = HttpClient::new(args.policy.http_options(), metrics.clone())
                .map_err(anyhow::Error::msg)?;
            let report = preview::run(
                &args.files,
                &args.namespace,
                args.policy.settings(DEFAULT_CREDENTIAL_NAMESPACE),
                metrics,
                http,
            )
            .await?;
            print!("{}", report.yaml);
            std::process::exit(if report.ready { 0 } else { 2 });
        }
        Command::Run(args) => {
            init_logging(args.log_format);
            run(args).await
        }
    }
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let client = kube::Client::try_default()
        .await
        .context("connecting to the cluster (kubeconfig or in-cluster configuration)")?;
    let metrics = Arc::new(Metrics::new());
    let http =
        HttpClient::new(args.policy.http_options(), metrics.clone()).map_err(anyhow::Error::msg)?;
    let settings = Settings {
        sync_events: args.sync_events,
        rollout_restart_window: args.rollout_restart_window.get(),
        ..args.policy.settings(client.default_namespace())
    };
    info!(
        allowed_endpoints = ?settings.endpoint_policy.allowed().iter().map(ToString::to_string).collect::<Vec<_>>(),
        watch_namespace = args.watch_namespace.as_deref().unwrap_or("(all)"),
        credential_namespace = %settings.credential_namespace,
        "starting"
    );
    let shutdown = CancellationToken::new();
    let ready = Arc::new(AtomicBool::new(false));
    let server = tokio::spawn(serve(
        args.metrics_addr,
        ServerState {
            metrics: metrics.clone(),
            ready: ready.clone(),
        },
        shutdown.clone(),
    ));
    {
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            info!("shutting down");
            shutdown.cancel();
        });
    }
    let options = ControllerOptions {
        concurrency: args.concurrency.max(1),
        namespace: args.watch_namespace.clone().filter(|ns| !ns.is_empty()),
        cluster_credentials: args.cluster_credentials,
    };
    let make_ctx = || {
        Context::new(
            client.clone(),
            settings.clone(),
            metrics.clone(),
            http.clone(),
        )
    };

    let result = if args.leader_elect {
        let lease = LeaseSettings {
            name: args.lease_name.clone(),
            namespace: args
                .lease_namespace
                .clone()
                .unwrap_or_else(|| "default".into()),
            identity: std::env::var("POD_NAME")
                .unwrap_or_else(|_| format!("workspace-access-operator-{}", rand::random::<u64>())),
            duration_secs: args.lease_duration,
        };
        let r = ready.clone();
        run_as_leader(
            client.clone(),
            lease,
            metrics.clone(),
            ready.clone(),
            shutdown.clone(),
            |token| run_controllers(make_ctx(), options.clone(), r.clone(), token),
        )
        .await
    } else {
        metrics.leader.set(1);
        run_controllers(make_ctx(), options, ready.clone(), shutdown.clone()).await
    };
    shutdown.cancel();
    if let Err(e) = server.await.unwrap_or_else(|e| Err(e.into())) {
        warn!(error = %e, "metrics server stopped with an error");
    }
    if let Err(e) = &result {
        error!(error = format!("{e:#}"), "operator stopped");
    }
    result
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {},
                    _ = tokio::signal::ctrl_c() => {},
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
