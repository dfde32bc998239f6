//! Benchmark of the operator against the cluster in `KUBECONFIG` (a disposable one).
//!
//! ```sh
//! cargo build --release --bins
//! KUBECONFIG=... target/release/bench --kind mix --count 1000 --json bench.json
//! KUBECONFIG=... target/release/bench --phases subscriptions
//! KUBECONFIG=... target/release/bench --phases scale --scale-count 50000
//! ```
//!
//! It starts in-process mock providers, runs the release operator binary as a child process
//! (pointed at the mocks with --allow-endpoint) and makes the runs `--phases` names:
//!
//! `throughput` (the default), in steps:
//! 1. the API server's ceiling: the same resources applied, and as many Secret applies and
//!    status patches as the operator makes for them, written directly with the operator's
//!    concurrency (the operator's throughput is reported as the ratio of the two times);
//! 2. single resources on an idle cluster: apply -> Ready latency, one at a time;
//! 3. N resources at once: apply -> Ready p50/p99/max, total convergence time, provider and
//!    credential calls and API writes per resource, peak RSS;
//! 4. idle: writes and provider calls while nothing changes, steady RSS;
//! 5. restart with every token valid: provider calls and time until all are reconciled;
//! 6. renewals with a short token lifetime: on time vs late, peak provider call rate.
//!
//! `subscriptions`: NotebookTokenRequests spread over many subscriptions, each with its own
//! service principal, against the operator with its default flags (the default
//! `--provider-rate` in particular): the time until every Secret exists against the API
//! server's ceiling for the same writes, and the busiest second of one subscription.
//!
//! `scale`: many resources of every kind with the operator's RSS sampled every second (peak,
//! steady, per resource), then a restart with every token valid: provider calls and the time
//! until every resource is reconciled.
//!
//! Prints one table; `--json FILE` writes it as JSON too.

mod cluster;
mod mocks;
mod operator;

use clap::{Parser, ValueEnum};
use cluster::{Kind, Target, Timings};
use mocks::{MockSettings, Mocks, Op};
use operator::{Operator, sum};
use serde::Serialize;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use workspace_access_operator::api::duration::Duration as KDuration;
use workspace_access_operator::providers::ratelimit::RateLimits;

#[derive(Parser, Debug)]
#[command(about = "Benchmark workspace-access-operator against the cluster in KUBECONFIG")]
struct Args {
    /// Kind of resources: ntr, livy, wsv or mix (a third of each).
    #[arg(long, default_value = "mix")]
    kind: String,
    /// Number of resources.
    #[arg(long, default_value_t = 1000)]
    count: usize,
    /// Token lifetime the mock providers hand out (convergence, idle and restart phases).
    #[arg(long, default_value = "2h")]
    token_lifetime: KDuration,
    /// Latency of every mock provider answer.
    #[arg(long, default_value = "0s")]
    provider_latency: KDuration,
    /// Single-resource trials on the idle cluster (0 to skip).
    #[arg(long, default_value_t = 20)]
    single_trials: usize,
    /// How long to watch for writes while nothing changes.
    #[arg(long, default_value = "60s")]
    idle: KDuration,
    /// Resources in the renewal phase (0 to skip); NotebookTokenRequests.
    #[arg(long, default_value_t = 200)]
    renewal_count: usize,
    /// Token lifetime in the renewal phase.
    #[arg(long, default_value = "3m")]
    renewal_lifetime: KDuration,
    /// How long to observe renewals.
    #[arg(long, default_value = "8m")]
    renewal_observe: KDuration,
    /// LivyTokens in managed mode instead of reference mode.
    #[arg(long)]
    livy_managed: bool,
    /// The operator binary (default: next to this one).
    #[arg(long)]
    operator: Option<PathBuf>,
    /// Extra arguments for `operator run` (repeatable), e.g. --operator-arg=--concurrency=32.
    #[arg(long = "operator-arg", allow_hyphen_values = true)]
    operator_args: Vec<String>,
    /// Reconcile concurrency per kind, passed to the operator and used for the ceiling.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Provider rate limit passed to the operator (QPS:BURST) for the throughput phases; high
    /// by default so that the API server, not the deliberate provider throttle, is measured.
    #[arg(long, default_value = "1000:1000")]
    provider_rate: String,
    /// Provider rate limit for the renewal phase (the operator is restarted with it), whose
    /// call rate is checked against it.
    #[arg(long, default_value = "20:20")]
    renewal_provider_rate: String,
    /// Requests in flight when the bench itself applies resources.
    #[arg(long, default_value_t = 32)]
    apply_parallel: usize,
    /// Append the operator's log to this file.
    #[arg(long)]
    operator_log: Option<PathBuf>,
    /// Write the results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// The runs to make, comma-separated: throughput (the ceiling, single resources, --count
    /// resources at once, idle, restart, renewals), subscriptions (--subscription-count
    /// NotebookTokenRequests over --subscriptions subscriptions, default operator flags),
    /// scale (--scale-count resources of every kind, RSS every second, restart).
    #[arg(long, value_delimiter = ',', default_value = "throughput")]
    phases: Vec<Phase>,
    /// Subscriptions (each with its own service principal) in the subscriptions run.
    #[arg(long, default_value_t = 50)]
    subscriptions: usize,
    /// NotebookTokenRequests in the subscriptions run.
    #[arg(long, default_value_t = 1000)]
    subscription_count: usize,
    /// Order in which the subscriptions run applies its resources: interleaved (resource i in
    /// subscription i mod --subscriptions) or grouped (each subscription's resources one after
    /// the other).
    #[arg(long, value_enum, default_value = "interleaved")]
    subscription_order: Order,
    /// Resources (a third of each kind) in the scale run.
    #[arg(long, default_value_t = 50_000)]
    scale_count: usize,
}

/// One run of the bench.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Phase {
    /// The ceiling, single resources, --count at once, idle, restart, renewals.
    Throughput,
    /// NotebookTokenRequests over many subscriptions with the operator's default flags.
    Subscriptions,
    /// Many resources with RSS sampled every second, and a restart.
    Scale,
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::Throughput => "throughput",
            Phase::Subscriptions => "subscriptions",
            Phase::Scale => "scale",
        }
    }
}

/// How the subscriptions run orders its resources.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Order {
    Interleaved,
    Grouped,
}

/// The operator's default `--concurrency`.
const DEFAULT_CONCURRENCY: usize = 16;

#[derive(Serialize, Default)]
struct Row {
    phase: String,
    metric: String,
    value: String,
    target: String,
}

#[derive(Serialize, Default)]
struct Report {
    machine: String,
    command: String,
    rows: Vec<Row>,
    /// The run the rows being added belong to.
    #[serde(skip)]
    phase: &'static str,
}

impl Report {
    fn add(&mut self, metric: &str, value: impl ToString, target: &str) {
        let row = Row {
            phase: self.phase.into(),
            metric: metric.into(),
            value: value.to_string(),
            target: target.into(),
        };
        eprintln!("  {:<58} {:>14}   {}", row.metric, row.value, row.target);
        self.rows.push(row);
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((p / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

fn mib(kib: u64) -> String {
    format!("{:.0} MiB", kib as f64 / 1024.0)
}

fn kinds_for(kind: &str, count: usize) -> anyhow::Result<Vec<Kind>> {
    let all = [
        Kind::NotebookTokenRequest,
        Kind::LivyToken,
        Kind::WorkspaceView,
    ];
    Ok(match kind {
        "ntr" => vec![Kind::NotebookTokenRequest; count],
        "livy" => vec![Kind::LivyToken; count],
        "wsv" => vec![Kind::WorkspaceView; count],
        "mix" => (0..count).map(|i| all[i % 3]).collect(),
        other => anyhow::bail!("unknown --kind {other}: ntr, livy, wsv or mix"),
    })
}

fn machine() -> String {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .next()
                .map(|l| l.split_whitespace().nth(1).unwrap_or("0").to_owned())
        })
        .and_then(|kb| kb.parse::<u64>().ok())
        .map(|kb| kb / 1024 / 1024)
        .unwrap_or(0);
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_default();
    format!("{cpus} cores ({model}), {mem} GiB")
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    workspace_access_operator::providers::http::install_crypto_provider();
    let client = kube::Client::try_default().await?;
    let binary = match &args.operator {
        Some(p) => p.clone(),
        None => std::env::current_exe()?.with_file_name("workspace-access-operator"),
    };
    let report = Report {
        machine: machine(),
        command: std::env::args().collect::<Vec<_>>().join(" "),
        ..Default::default()
    };
    eprintln!("machine: {}", report.machine);

    install_crds(&client).await?;
    let (addr, mocks) = mocks::start(MockSettings {
        token_lifetime: args.token_lifetime.get(),
        latency: args.provider_latency.get(),
        short_lifetime: args.renewal_lifetime.get(),
    })
    .await?;
    // Each run once, in the order first named.
    let mut phases = args.phases.clone();
    let mut seen = Vec::new();
    phases.retain(|p| {
        let first = !seen.contains(p);
        seen.push(*p);
        first
    });
    let mut bench = Bench {
        target: Target {
            base: format!("http://{addr}"),
        },
        run_id: format!("{:x}", rand::random::<u32>()),
        args,
        client,
        binary,
        addr,
        mocks,
        report,
    };
    for phase in phases {
        bench.report.phase = phase.name();
        match phase {
            Phase::Throughput => throughput(&mut bench).await?,
            Phase::Subscriptions => bench.subscriptions().await?,
            Phase::Scale => bench.scale().await?,
        }
    }
    let report = &mut bench.report;
    report.phase = "";
    report.add(
        "bench writes retried after a transient API-server error",
        cluster::RETRIED.load(std::sync::atomic::Ordering::Relaxed),
        "",
    );

    println!("\n| metric | value | target |\n|---|---|---|");
    for r in &report.rows {
        println!("| {} | {} | {} |", r.metric, r.value, r.target);
    }
    println!("\nmachine: {}\ncommand: {}", report.machine, report.command);
    if let Some(path) = &bench.args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)?;
    }
    Ok(())
}

/// What every run needs: the arguments, the cluster, the operator binary, the mocks, the report.
struct Bench {
    args: Args,
    client: kube::Client,
    binary: PathBuf,
    addr: SocketAddr,
    target: Target,
    mocks: Arc<Mocks>,
    run_id: String,
    report: Report,
}

impl Bench {
    /// The operator's arguments in the throughput and scale runs: the mocks allowed, the
    /// bench's concurrency and provider rate, and the extra `--operator-arg`s.
    fn throughput_args(&self) -> Vec<String> {
        let mut op_args = vec![
            format!("--allow-endpoint={}", self.addr),
            format!("--concurrency={}", self.args.concurrency),
            format!("--provider-rate={}", self.args.provider_rate),
        ];
        op_args.extend(self.args.operator_args.iter().cloned());
        op_args
    }

    /// The operator's arguments with its default flags: only the mocks allowed (and
    /// `--concurrency` if the bench's differs from the default, and the extra
    /// `--operator-arg`s).
    fn default_args(&self) -> Vec<String> {
        let mut op_args = vec![format!("--allow-endpoint={}", self.addr)];
        if self.args.concurrency != DEFAULT_CONCURRENCY {
            op_args.push(format!("--concurrency={}", self.args.concurrency));
        }
        op_args.extend(self.args.operator_args.iter().cloned());
        op_args
    }
}

/// The throughput run: ceiling, single resources, N at once, idle, restart, renewals.
async fn throughput(bench: &mut Bench) -> anyhow::Result<()> {
    let op_args = bench.throughput_args();
    let (client, binary, target) = (
        bench.client.clone(),
        bench.binary.clone(),
        bench.target.clone(),
    );
    let Bench {
        args,
        mocks,
        run_id,
        report,
        ..
    } = bench;
    let kinds = kinds_for(&args.kind, args.count)?;
    let distinct_kinds = {
        let mut k = kinds.clone();
        k.sort();
        k.dedup();
        k.len()
    };

    // 1. The API server's ceiling, before the operator runs: the writes the operator's work
    // needs (the resources, their Secrets, their status), made directly.
    let with_secret = kinds.iter().filter(|k| **k != Kind::WorkspaceView).count();
    eprintln!(
        "\n== API server ceiling: {} resource applies + {with_secret} Secret applies + {} status patches",
        args.count, args.count
    );
    let ceiling_ns = format!("bench-ceiling-{run_id}");
    cluster::namespace(&client, &ceiling_ns).await?;
    let (ceiling_creates, ceiling) = cluster::direct_writes(
        &client,
        &ceiling_ns,
        args.count,
        with_secret,
        args.concurrency * distinct_kinds,
    )
    .await?;
    cluster::delete_namespace(&client, &ceiling_ns, Duration::from_secs(300)).await?;
    report.add(
        "direct: N resources applied",
        format!("{:.1} s", ceiling_creates.as_secs_f64()),
        "",
    );
    report.add(
        "direct: their Secrets + N status patches",
        format!("{:.1} s", ceiling.as_secs_f64()),
        "",
    );
    report.add(
        "direct: writes per second",
        format!(
            "{:.0}/s",
            (2 * args.count + with_secret) as f64 / (ceiling_creates + ceiling).as_secs_f64()
        ),
        "",
    );

    let ns = format!("bench-{run_id}");
    cluster::namespace(&client, &ns).await?;
    for (i, k) in kinds.iter().enumerate() {
        if *k == Kind::LivyToken && !args.livy_managed {
            mocks.seed_emr_token(&format!("lctk-{}", cluster::name("r", i)));
        }
    }
    let run_start = Instant::now();
    let op = Operator::start(&binary, &op_args, args.operator_log.as_ref()).await?;
    eprintln!("operator pid {}", op.pid());

    // 2. Single resources on an idle cluster.
    if args.single_trials > 0 {
        eprintln!(
            "\n== single resource on an idle cluster ({} trials)",
            args.single_trials
        );
        let mut lat = Vec::new();
        for t in 0..args.single_trials {
            let timings = Arc::new(Mutex::new(Timings::default()));
            let kind = Kind::NotebookTokenRequest;
            let watch = cluster::watch_ready(&client, &ns, kind, timings.clone());
            tokio::time::sleep(Duration::from_millis(200)).await;
            let name = cluster::name("single", t);
            cluster::apply_all(
                &client,
                &ns,
                vec![(kind, cluster::manifest(kind, &name, &target, false))],
                1,
                &timings,
            )
            .await?;
            let key = (kind, name.clone());
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let seen = {
                    let t = timings.lock().unwrap_or_else(|e| e.into_inner());
                    t.ready.get(&key).map(|r| r.duration_since(t.applied[&key]))
                };
                if let Some(latency) = seen {
                    lat.push(latency);
                    break;
                }
                anyhow::ensure!(Instant::now() < deadline, "{name} not Ready within 30 s");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            watch.abort();
        }
        lat.sort();
        report.add(
            "1 resource: apply -> Ready p50",
            ms(percentile(&lat, 50.0)),
            "",
        );
        report.add(
            "1 resource: apply -> Ready p99",
            ms(percentile(&lat, 99.0)),
            "< 250 ms",
        );
    }

    // 3. N resources at once.
    eprintln!("\n== {} resources ({})", args.count, args.kind);
    let timings = Arc::new(Mutex::new(Timings::default()));
    let mut watches = Vec::new();
    for k in [
        Kind::NotebookTokenRequest,
        Kind::LivyToken,
        Kind::WorkspaceView,
    ] {
        if kinds.contains(&k) {
            watches.push(cluster::watch_ready(&client, &ns, k, timings.clone()));
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = op.counters().await?;
    let cpu_before = op.cpu();
    let phase_start = Instant::now();
    let items = kinds
        .iter()
        .enumerate()
        .map(|(i, k)| {
            (
                *k,
                cluster::manifest(*k, &cluster::name("r", i), &target, args.livy_managed),
            )
        })
        .collect();
    cluster::apply_all(&client, &ns, items, args.apply_parallel, &timings).await?;
    let applied_in = phase_start.elapsed();
    let deadline = Instant::now() + Duration::from_secs(1800);
    loop {
        let ready = timings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .ready
            .keys()
            .filter(|(_, n)| n.starts_with("r-"))
            .count();
        if ready >= args.count {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {ready} of {} Ready after 30 min",
            args.count
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let converged = phase_start.elapsed();
    let after = op.counters().await?;
    let cpu_used = op.cpu().saturating_sub(cpu_before);
    let mem = op.memory();
    let mut lat: Vec<Duration> = {
        let t = timings.lock().unwrap_or_else(|e| e.into_inner());
        t.ready
            .iter()
            .filter(|((_, n), _)| n.starts_with("r-"))
            .map(|(k, r)| r.duration_since(t.applied[k]))
            .collect()
    };
    lat.sort();
    let n = args.count as f64;
    let resource_calls = mocks.count_since(phase_start, Op::is_resource_call);
    let cred_calls = mocks.count_since(run_start, |o| o == Op::EntraToken);
    let writes = sum(&after, "workspace_access_api_writes_total", &[])
        - sum(&before, "workspace_access_api_writes_total", &[]);
    report.add("N resources: applied by the bench in", ms(applied_in), "");
    report.add(
        "N resources: apply -> Ready p50",
        ms(percentile(&lat, 50.0)),
        "",
    );
    report.add(
        "N resources: apply -> Ready p99",
        ms(percentile(&lat, 99.0)),
        "",
    );
    report.add(
        "N resources: apply -> Ready max",
        ms(*lat.last().unwrap_or(&Duration::ZERO)),
        "",
    );
    report.add(
        "N resources: total time to converge",
        format!("{:.1} s", converged.as_secs_f64()),
        "",
    );
    // Both sides apply the N resources and write their Secrets and status; through the
    // operator, the applies and the operator's writes overlap, as they would in a cluster.
    report.add(
        "throughput vs ceiling (direct time / operator time)",
        format!(
            "{:.0}%",
            100.0 * (ceiling_creates + ceiling).as_secs_f64() / converged.as_secs_f64()
        ),
        ">= 85%",
    );
    report.add(
        "provider calls per resource",
        format!("{:.2}", resource_calls as f64 / n),
        "1",
    );
    report.add(
        "Entra calls since the operator started (1 credential)",
        cred_calls,
        "1 per credential per token lifetime",
    );
    report.add(
        "API-server writes per resource",
        format!("{:.2}", writes / n),
        "",
    );
    report.add(
        "operator CPU time to converge",
        format!(
            "{:.1} s ({:.2} ms per resource)",
            cpu_used.as_secs_f64(),
            cpu_used.as_secs_f64() * 1000.0 / n
        ),
        "",
    );
    report.add(
        "operator peak RSS",
        format!("{} MiB", mem.peak_rss_kib / 1024),
        "< 150 MiB",
    );

    // 4. Idle.
    eprintln!("\n== idle {}", args.idle);
    let idle_start = Instant::now();
    let before = op.counters().await?;
    tokio::time::sleep(args.idle.get()).await;
    let after = op.counters().await?;
    let idle_writes = sum(&after, "workspace_access_api_writes_total", &[])
        - sum(&before, "workspace_access_api_writes_total", &[]);
    report.add("idle: API-server writes", idle_writes, "0");
    report.add(
        "idle: provider calls",
        mocks.count_since(idle_start, |_| true),
        "0",
    );
    eprintln!(
        "  idle calls by operation: {}",
        mocks.breakdown_since(idle_start)
    );
    report.add(
        "operator steady RSS",
        format!("{} MiB", op.memory().rss_kib / 1024),
        "< 100 MiB",
    );

    // 5. Restart with every token valid.
    eprintln!("\n== restart");
    op.stop().await?;
    let restart_start = Instant::now();
    let op = Operator::start(&binary, &op_args, args.operator_log.as_ref()).await?;
    let ready_after = restart_start.elapsed();
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let c = op.counters().await?;
        if sum(&c, "workspace_access_reconciles_total", &[]) >= n {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "not all resources reconciled within 10 min of the restart"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let all_reconciled = restart_start.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    report.add("restart: operator ready after", ms(ready_after), "");
    report.add(
        "restart: every resource reconciled after",
        format!("{:.1} s", all_reconciled.as_secs_f64()),
        "< 30 s",
    );
    report.add(
        "restart: provider calls",
        mocks.count_since(restart_start, |_| true),
        "0",
    );
    report.add(
        "restart: operator RSS with every resource cached",
        format!("{} MiB", op.memory().rss_kib / 1024),
        "< 100 MiB",
    );
    eprintln!(
        "  restart calls by operation: {}",
        mocks.breakdown_since(restart_start)
    );

    // 6. Renewals with a short token lifetime, under a low provider rate limit.
    let op = if args.renewal_count > 0 {
        eprintln!(
            "\n== renewals: {} NotebookTokenRequests, lifetime {}, observed {}, --provider-rate={}",
            args.renewal_count,
            args.renewal_lifetime,
            args.renewal_observe,
            args.renewal_provider_rate
        );
        op.stop().await?;
        let renewal_args: Vec<String> = op_args
            .iter()
            .map(|a| {
                if a.starts_with("--provider-rate=") {
                    format!("--provider-rate={}", args.renewal_provider_rate)
                } else {
                    a.clone()
                }
            })
            .collect();
        let op = Operator::start(&binary, &renewal_args, args.operator_log.as_ref()).await?;
        let renew_start = Instant::now();
        let timings = Arc::new(Mutex::new(Timings::default()));
        let items = (0..args.renewal_count)
            .map(|i| {
                (
                    Kind::NotebookTokenRequest,
                    cluster::manifest(
                        Kind::NotebookTokenRequest,
                        &cluster::name("short", i),
                        &target,
                        false,
                    ),
                )
            })
            .collect();
        cluster::apply_all(&client, &ns, items, args.apply_parallel, &timings).await?;
        tokio::time::sleep(args.renewal_observe.get()).await;
        let (on_time, late) = mocks.renewals("short-");
        report.add("renewals on time", on_time, "all");
        report.add(
            "renewals late (after the previous token expired)",
            late,
            "0",
        );
        let rate: workspace_access_operator::providers::ratelimit::Rate = args
            .renewal_provider_rate
            .parse()
            .map_err(anyhow::Error::msg)?;
        let window = Duration::from_secs(10);
        let allowed = f64::from(rate.burst) + rate.per_second * window.as_secs_f64();
        // The rate applies per host and credential: the renewing resources share one
        // subscription and client, so one bucket; the resources of the throughput run, still
        // there and re-read by their own schedules, use other buckets.
        let (busiest, _) =
            mocks.peak_per_group_since(renew_start, window, Op::ArmNotebookToken, |key| {
                key.split('/').next().unwrap_or("").to_owned()
            });
        report.add(
            "renewal phase: most ARM calls of one credential in any 10 s window",
            busiest,
            &format!("<= {allowed:.0} (burst + 10 s x QPS)"),
        );
        report.add(
            "renewal phase: most provider calls of all kinds in any 10 s window",
            mocks.peak_calls_since(renew_start, window),
            "",
        );
        op
    } else {
        op
    };
    for w in watches {
        w.abort();
    }
    // Delete while the operator runs: it removes the LivyTokens' finalizers.
    if let Err(e) = cluster::delete_namespace(&client, &ns, Duration::from_secs(600)).await {
        eprintln!("cleanup: {e:#}");
    }
    op.stop().await?;
    Ok(())
}

impl Bench {
    /// The subscriptions run: `--subscription-count` NotebookTokenRequests over
    /// `--subscriptions` subscriptions, each with its own service principal, against the
    /// operator with its default flags; the time until every Secret exists against the API
    /// server's ceiling for the same writes.
    async fn subscriptions(&mut self) -> anyhow::Result<()> {
        let op_args = self.default_args();
        let Bench {
            args,
            client,
            binary,
            target,
            mocks,
            run_id,
            report,
            ..
        } = self;
        let n = args.subscription_count;
        let subs = args.subscriptions.max(1);
        eprintln!(
            "\n== {n} NotebookTokenRequests over {subs} subscriptions ({:?}), operator flags: {}",
            args.subscription_order,
            op_args.join(" ")
        );

        // The ceiling for the same writes: the resources, their Secrets, their status.
        let ceiling_ns = format!("bench-subs-ceiling-{run_id}");
        cluster::namespace(client, &ceiling_ns).await?;
        let (creates, rest) =
            cluster::direct_writes(client, &ceiling_ns, n, n, args.concurrency).await?;
        cluster::delete_namespace(client, &ceiling_ns, Duration::from_secs(300)).await?;
        let ceiling = creates + rest;
        report.add(
            "subscriptions: direct: N resources + N Secrets + N status patches",
            secs(ceiling),
            "",
        );

        let ns = format!("bench-subs-{run_id}");
        cluster::namespace(client, &ns).await?;
        cluster::subscription_credentials(client, &ns, subs).await?;
        let op = Operator::start(binary, &op_args, args.operator_log.as_ref()).await?;
        let secrets_seen = Arc::new(Mutex::new(HashMap::new()));
        let secret_watch = cluster::watch_secrets(client, &ns, secrets_seen.clone());
        let timings = Arc::new(Mutex::new(Timings::default()));
        let kind = Kind::NotebookTokenRequest;
        let ready_watch = cluster::watch_ready(client, &ns, kind, timings.clone());
        tokio::time::sleep(Duration::from_millis(500)).await;
        let before = op.counters().await?;
        let start = Instant::now();
        let items = (0..n)
            .map(|i| {
                let k = match args.subscription_order {
                    Order::Interleaved => i % subs,
                    Order::Grouped => i * subs / n.max(1),
                };
                let name = cluster::name("sub", i);
                (kind, cluster::ntr_in_subscription(&name, target, k))
            })
            .collect();
        cluster::apply_all(client, &ns, items, args.apply_parallel, &timings).await?;
        let applied_in = start.elapsed();
        let deadline = Instant::now() + Duration::from_secs(1800);
        let count =
            |m: &Mutex<HashMap<String, Instant>>| m.lock().unwrap_or_else(|e| e.into_inner()).len();
        while count(&secrets_seen) < n {
            anyhow::ensure!(
                Instant::now() < deadline,
                "only {} of {n} Secrets after 30 min",
                count(&secrets_seen)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let secrets_at = start.elapsed();
        let ready = || {
            timings
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .ready
                .len()
        };
        while ready() < n {
            anyhow::ensure!(
                Instant::now() < deadline,
                "only {} of {n} Ready after 30 min",
                ready()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let ready_at = start.elapsed();
        let after = op.counters().await?;
        let held_back = sum(&after, "workspace_access_provider_rate_limited_total", &[])
            - sum(&before, "workspace_access_provider_rate_limited_total", &[]);
        let arm_calls = mocks.count_since(start, |o| o == Op::ArmNotebookToken);
        let entra_calls = mocks.count_since(start, |o| o == Op::EntraToken);
        let rate = RateLimits::operator_default()
            .default
            .ok_or_else(|| anyhow::anyhow!("the operator has no default rate"))?;
        let (busiest, _) = mocks.peak_per_group_since(
            start,
            Duration::from_secs(1),
            Op::ArmNotebookToken,
            |key| key.split('/').next().unwrap_or("").to_owned(),
        );
        report.add(
            "subscriptions: applied by the bench in",
            secs(applied_in),
            "",
        );
        report.add(
            "subscriptions: time until every Secret exists",
            secs(secrets_at),
            "",
        );
        report.add(
            "subscriptions: time until every resource is Ready",
            secs(ready_at),
            "",
        );
        report.add(
            "subscriptions: every Secret / direct writes",
            format!("{:.2}x", secrets_at.as_secs_f64() / ceiling.as_secs_f64()),
            "<= 1.5x",
        );
        report.add(
            "subscriptions: ARM calls per resource",
            format!("{:.2}", arm_calls as f64 / n as f64),
            "1",
        );
        report.add(
            "subscriptions: Entra calls (one principal per subscription)",
            entra_calls,
            &format!("{subs}"),
        );
        report.add(
            "subscriptions: most ARM calls for one subscription in any 1 s",
            busiest,
            &format!(
                "<= {:.0} (burst + 1 s x QPS of the default {rate})",
                f64::from(rate.burst) + rate.per_second
            ),
        );
        report.add(
            "subscriptions: calls held back by the rate limit",
            held_back,
            "",
        );
        secret_watch.abort();
        ready_watch.abort();
        if let Err(e) = cluster::delete_namespace(client, &ns, Duration::from_secs(600)).await {
            eprintln!("cleanup: {e:#}");
        }
        op.stop().await?;
        Ok(())
    }

    /// The scale run: `--scale-count` resources of every kind with the operator's RSS sampled
    /// every second (peak, steady over `--idle`, per resource), then a restart with every token
    /// valid: provider calls and the time until every resource is reconciled.
    async fn scale(&mut self) -> anyhow::Result<()> {
        let op_args = self.throughput_args();
        let Bench {
            args,
            client,
            binary,
            target,
            mocks,
            run_id,
            report,
            ..
        } = self;
        let n = args.scale_count;
        let kinds = kinds_for("mix", n)?;
        eprintln!("\n== scale: {n} resources (mix), RSS every second");
        let ns = format!("bench-scale-{run_id}");
        cluster::namespace(client, &ns).await?;
        for (i, k) in kinds.iter().enumerate() {
            if *k == Kind::LivyToken && !args.livy_managed {
                mocks.seed_emr_token(&format!("lctk-{}", cluster::name("s", i)));
            }
        }
        let run_start = Instant::now();
        let op = Operator::start(binary, &op_args, args.operator_log.as_ref()).await?;
        let rss = op.sample_rss(Duration::from_secs(1));
        let timings = Arc::new(Mutex::new(Timings::default()));
        let watches: Vec<_> = [
            Kind::NotebookTokenRequest,
            Kind::LivyToken,
            Kind::WorkspaceView,
        ]
        .into_iter()
        .map(|k| cluster::watch_ready(client, &ns, k, timings.clone()))
        .collect();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let baseline = op.memory().rss_kib;
        let cpu_before = op.cpu();
        let start = Instant::now();
        let items = kinds
            .iter()
            .enumerate()
            .map(|(i, k)| {
                (
                    *k,
                    cluster::manifest(*k, &cluster::name("s", i), target, args.livy_managed),
                )
            })
            .collect();
        cluster::apply_all(client, &ns, items, args.apply_parallel, &timings).await?;
        let applied_in = start.elapsed();
        let deadline = Instant::now() + Duration::from_secs(3600);
        let ready = || {
            timings
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .ready
                .len()
        };
        while ready() < n {
            anyhow::ensure!(
                Instant::now() < deadline,
                "only {} of {n} Ready after 60 min",
                ready()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let converged = start.elapsed();
        let cpu_used = op.cpu().saturating_sub(cpu_before);
        let resource_calls = mocks.count_since(start, Op::is_resource_call);
        eprintln!("  converged; idle {} for the steady RSS", args.idle);
        let idle_start = Instant::now();
        tokio::time::sleep(args.idle.get()).await;
        let steady = rss.median_since(idle_start);
        let peak = rss.peak_since(run_start).max(op.memory().peak_rss_kib);
        report.add(
            "scale: N resources applied by the bench in",
            secs(applied_in),
            "",
        );
        report.add(
            "scale: N resources: total time to converge",
            secs(converged),
            "",
        );
        report.add(
            "scale: provider calls per resource",
            format!("{:.2}", resource_calls as f64 / n as f64),
            "1",
        );
        report.add(
            "scale: operator CPU time to converge",
            format!(
                "{:.1} s ({:.2} ms per resource)",
                cpu_used.as_secs_f64(),
                cpu_used.as_secs_f64() * 1000.0 / n as f64
            ),
            "",
        );
        report.add(
            "scale: operator peak RSS (sampled every second, and VmHWM)",
            mib(peak),
            "< 250 MiB",
        );
        report.add(
            "scale: operator steady RSS (median over the idle period)",
            mib(steady),
            "",
        );
        report.add(
            "scale: operator RSS before the resources",
            mib(baseline),
            "",
        );
        report.add(
            "scale: RSS per resource ((steady - before) / N)",
            format!(
                "{:.1} KiB",
                steady.saturating_sub(baseline) as f64 / n as f64
            ),
            "",
        );
        drop(rss);

        eprintln!("\n== scale: restart with every token valid");
        op.stop().await?;
        let restart_start = Instant::now();
        let op = Operator::start(binary, &op_args, args.operator_log.as_ref()).await?;
        let ready_after = restart_start.elapsed();
        let rss = op.sample_rss(Duration::from_secs(1));
        let deadline = Instant::now() + Duration::from_secs(600);
        loop {
            let c = op.counters().await?;
            if sum(&c, "workspace_access_reconciles_total", &[]) >= n as f64 {
                break;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "not all resources reconciled within 10 min of the restart"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let all_reconciled = restart_start.elapsed();
        tokio::time::sleep(Duration::from_secs(2)).await;
        report.add("scale: restart: operator ready after", ms(ready_after), "");
        report.add(
            "scale: restart: every resource reconciled after",
            secs(all_reconciled),
            "< 60 s",
        );
        report.add(
            "scale: restart: provider calls",
            mocks.count_since(restart_start, |_| true),
            "0",
        );
        report.add(
            "scale: restart: operator peak RSS",
            mib(rss.peak_since(restart_start).max(op.memory().peak_rss_kib)),
            "< 250 MiB",
        );
        eprintln!(
            "  restart calls by operation: {}",
            mocks.breakdown_since(restart_start)
        );
        drop(rss);
        for w in watches {
            w.abort();
        }
        // Delete while the operator runs: it removes managed LivyTokens' finalizers.
        if let Err(e) = cluster::delete_namespace(client, &ns, Duration::from_secs(3600)).await {
            eprintln!("cleanup: {e:#}");
        }
        op.stop().await?;
        Ok(())
    }
}

async fn install_crds(client: &kube::Client) -> anyhow::Result<()> {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use kube::api::{Api, Patch, PatchParams};
    use kube::runtime::wait::{await_condition, conditions};
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in workspace_access_operator::api::crds() {
        let name = crd.metadata.name.clone().unwrap_or_default();
        crds.patch(
            &name,
            &PatchParams::apply("bench").force(),
            &Patch::Apply(&crd),
        )
        .await?;
        tokio::time::timeout(
            Duration::from_secs(60),
            await_condition(crds.clone(), &name, conditions::is_crd_established()),
        )
        .await??;
    }
    Ok(())
}
