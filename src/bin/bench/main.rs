//! Benchmark of the operator against the cluster in `KUBECONFIG` (a disposable one).
//!
//! ```sh
//! cargo build --release --bins
//! KUBECONFIG=... target/release/bench --kind mix --count 1000 --json bench.json
//! ```
//!
//! It starts in-process mock providers, runs the release operator binary as a child process
//! (pointed at the mocks with --allow-endpoint) and measures, in phases:
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
//! Prints one table; `--json FILE` writes it as JSON too.

mod cluster;
mod mocks;
mod operator;

use clap::Parser;
use cluster::{Kind, Target, Timings};
use mocks::{MockSettings, Op};
use operator::{Operator, sum};
use serde::Serialize;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use workspace_access_operator::api::duration::Duration as KDuration;

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
}

#[derive(Serialize, Default)]
struct Row {
    metric: String,
    value: String,
    target: String,
}

#[derive(Serialize, Default)]
struct Report {
    machine: String,
    command: String,
    rows: Vec<Row>,
}

impl Report {
    fn add(&mut self, metric: &str, value: impl ToString, target: &str) {
        let row = Row {
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
    let mut report = Report {
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
    let target = Target {
        base: format!("http://{addr}"),
    };
    let run_id = format!("{:x}", rand::random::<u32>());
    let kinds = kinds_for(&args.kind, args.count)?;
    let distinct_kinds = {
        let mut k = kinds.clone();
        k.sort();
        k.dedup();
        k.len()
    };
    let mut op_args = vec![
        format!("--allow-endpoint={addr}"),
        format!("--concurrency={}", args.concurrency),
        format!("--provider-rate={}", args.provider_rate),
    ];
    op_args.extend(args.operator_args.iter().cloned());

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
        ">= 70%",
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
        report.add(
            "renewal phase: most provider calls in any 10 s window",
            mocks.peak_calls_since(renew_start, window),
            &format!("<= {allowed:.0} (burst + 10 s x QPS)"),
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
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)?;
    }
    Ok(())
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
