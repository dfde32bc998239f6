//! The chaos suite: the operator's promises (nothing lost, nothing minted twice, no token
//! leaked at the provider) against a real API server that really goes away. Ignored by
//! default; run against a DISPOSABLE cluster, telling the suite how to restart its parts:
//!
//! ```sh
//! KUBECONFIG=/path/to/disposable-cluster \
//! CHAOS_RESTART_APISERVER='command that restarts kube-apiserver and waits until it is ready' \
//! CHAOS_RESTART_ETCD='command that restarts etcd and waits until the API server is ready' \
//! CHAOS_REPORT=chaos.jsonl \
//! cargo test --release --test chaos -- --ignored --test-threads=1
//! ```
//!
//! Each case prints a table of figures with their targets (and appends them to `CHAOS_REPORT`
//! as JSON lines) and fails if a figure misses its target. The cases restart shared parts of the
//! cluster, so run them one at a time (`--test-threads=1`). See docs/reliability.md for the
//! cases and the last run's figures.

// A test crate: its helpers unwrap and panic like its tests do.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod chaos_support;
mod e2e_support;

use chaos_support::*;
use e2e_support::fake_emr::FakeEmr;
use e2e_support::{Cluster, Operator};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

const AK_ID: &str = "LTAIchaosKey";
const AK_SECRET: &str = "chaos-access-key-secret";
const WS: &str = "w-chaos";
const LC: &str = "lc-chaos";

fn ali_secret() -> Value {
    json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "ali-ak"},
           "stringData": {"accessKeyId": AK_ID, "accessKeySecret": AK_SECRET}})
}

fn managed_livy(emr: &FakeEmr, name: &str, managed: Value) -> Value {
    json!({
        "apiVersion": "workspaceaccess.io/v1alpha1", "kind": "LivyToken",
        "metadata": {"name": name},
        "spec": {"regionId": "cn-hangzhou", "workspaceId": WS, "livyComputeId": LC,
                 "endpoint": emr.base_url, "managed": managed,
                 "alibaba": {"accessKeyRef": {"name": "ali-ak"}}}
    })
}

/// Tokens at the fake per resource name (managed token names start with
/// `wao-<resource name>-`), counting only those alive at `now`.
fn live_tokens_per_resource(emr: &FakeEmr, names: &[String]) -> BTreeMap<String, usize> {
    let now = jiff::Timestamp::now();
    let mut out: BTreeMap<String, usize> = names.iter().map(|n| (n.clone(), 0)).collect();
    for t in emr.tokens() {
        if t.expire_time.is_some_and(|e| e <= now) {
            continue;
        }
        for n in names {
            if t.name.starts_with(&format!("wao-{n}-")) {
                *out.entry(n.clone()).or_default() += 1;
            }
        }
    }
    out
}

/// Cases 1 and 2: a part of the control plane restarts while `count` resources (half
/// NotebookTokenRequests, half managed LivyTokens) are being applied.
async fn restart_while_applying(case: &str, control: &str, count: usize) {
    let mut fig = Figures::new(case);
    let cluster = Cluster::connect().await;
    cluster.install_crds().await;
    let ns = cluster.fresh_namespace("chaos").await;
    let azure = MockAzure::start(Duration::from_secs(8 * 3600)).await;
    let emr = FakeEmr::start(AK_ID, AK_SECRET, Arc::new(jiff::Timestamp::now)).await;
    let operator = Operator::start(
        &cluster,
        &ns,
        &[
            "--allow-endpoint",
            &azure.host_port,
            "--allow-endpoint",
            &emr.host_port,
        ],
    )
    .await;
    // Default flags: with --provider-rate 5:10 per host and credential (one credential per
    // provider here) many reconciliations wait for the provider when the control plane goes
    // away, which is when a token can be minted and its Secret write fail.
    apply_retrying(&cluster, &ns, azure_secret()).await;
    apply_retrying(&cluster, &ns, ali_secret()).await;
    let ntrs = count / 2;
    let livies = count - ntrs;
    let mut docs: Vec<Value> = (0..ntrs)
        .map(|i| ntr(&azure, &format!("ntr-{i}")))
        .collect();
    docs.extend(
        (0..livies).map(|i| managed_livy(&emr, &format!("livy-{i}"), json!({"expireDays": 7}))),
    );
    // Interleave the kinds, so both are in flight when the restart comes.
    let (a, b) = docs.split_at(ntrs);
    let docs: Vec<Value> = a
        .iter()
        .zip(b.iter())
        .flat_map(|(x, y)| [x.clone(), y.clone()])
        .chain(b.iter().skip(a.len()).cloned())
        .collect();

    let started = Instant::now();
    let applier = {
        let ns = ns.clone();
        tokio::spawn(async move {
            let cluster = Cluster::connect().await;
            apply_all(&cluster, &ns, docs, 8).await
        })
    };
    // Restart once a third of the resources is in (or after 3 s).
    while started.elapsed() < Duration::from_secs(3)
        && ready_names(&cluster, &ns, "notebooktokenrequests")
            .await
            .len()
            < ntrs / 3
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let at = started.elapsed();
    let took = run_control(control).await;
    fig.note(
        "restart began after (s)",
        format!("{:.1}", at.as_secs_f64()),
    );
    fig.note("restart took (s)", format!("{:.1}", took.as_secs_f64()));
    let failed_applies = applier.await.unwrap();
    fig.note("apply attempts refused during the restart", failed_applies);

    let ntr_ready = wait_all_ready(
        &cluster,
        &ns,
        "notebooktokenrequests",
        ntrs,
        Duration::from_secs(240),
    )
    .await;
    let livy_ready = wait_all_ready(
        &cluster,
        &ns,
        "livytokens",
        livies,
        Duration::from_secs(240),
    )
    .await;
    let converged = ready_names(&cluster, &ns, "notebooktokenrequests")
        .await
        .len()
        + ready_names(&cluster, &ns, "livytokens").await.len();
    fig.add(
        "resources Ready",
        format!("{converged}/{count}"),
        &format!("{count}/{count}"),
        converged == count,
    );
    if ntr_ready.is_some() && livy_ready.is_some() {
        fig.note(
            "all Ready after the applies began (s)",
            format!("{:.1}", started.elapsed().as_secs_f64()),
        );
    }
    let secrets = managed_secrets(&cluster, &ns).await.expect("list Secrets");
    let missing = (0..ntrs)
        .map(|i| format!("ntr-{i}"))
        .chain((0..livies).map(|i| format!("livy-{i}")))
        .filter(|n| !secrets.contains_key(n))
        .count();
    fig.add("Secrets missing", missing, "0", missing == 0);
    let mints = azure.mints().len();
    let creates = emr.count("CreateLivyComputeToken");
    let per_resource = (mints + creates) as f64 / count as f64;
    fig.note("notebook tokens minted", mints);
    fig.note("Livy tokens created", creates);
    fig.add(
        "provider mints per resource",
        format!("{per_resource:.3}"),
        "<= 1.01",
        per_resource <= 1.01,
    );
    let names: Vec<String> = (0..livies).map(|i| format!("livy-{i}")).collect();
    let duplicates = live_tokens_per_resource(&emr, &names)
        .values()
        .filter(|n| **n > 1)
        .count();
    fig.add(
        "LivyTokens with a duplicate token",
        duplicates,
        "0",
        duplicates == 0,
    );
    fig.note(
        "operator RSS (MiB)",
        rss_kib(operator.pid()).unwrap_or(0) / 1024,
    );
    cluster.delete_namespace(&ns).await;
    fig.finish();
}

/// Case 1: kube-apiserver restarts while 300 resources are being applied.
#[tokio::test]
#[ignore = "chaos: needs KUBECONFIG and CHAOS_RESTART_APISERVER"]
async fn c1_apiserver_restart_while_300_resources_are_applied() {
    restart_while_applying(
        "1 API server restart, 300 resources",
        "CHAOS_RESTART_APISERVER",
        300,
    )
    .await;
}

/// Case 2: etcd restarts while 50 resources are being applied.
#[tokio::test]
#[ignore = "chaos: needs KUBECONFIG and CHAOS_RESTART_ETCD"]
async fn c2_etcd_restart_while_50_resources_are_applied() {
    restart_while_applying("2 etcd restart, 50 resources", "CHAOS_RESTART_ETCD", 50).await;
}

/// Case 3: the operator is SIGKILLed 4 times, ~10 s apart, while managed LivyTokens with 30 s
/// tokens rotate.
#[tokio::test]
#[ignore = "chaos: needs KUBECONFIG"]
async fn c3_sigkill_during_livy_rotations() {
    const RESOURCES: usize = 10;
    let mut fig = Figures::new("3 SIGKILL x4 during managed Livy rotations (30 s tokens)");
    let cluster = Cluster::connect().await;
    cluster.install_crds().await;
    let ns = cluster.fresh_namespace("chaos-kill").await;
    let emr = FakeEmr::start(AK_ID, AK_SECRET, Arc::new(jiff::Timestamp::now)).await;
    // One expireDays day lasts 30 s: each token lives 30 s, renewed 10 s before it expires.
    emr.set_day_length(Duration::from_secs(30));
    let args = ["--allow-endpoint", &emr.host_port];
    let mut operator = Operator::start(&cluster, &ns, &args).await;
    apply_retrying(&cluster, &ns, ali_secret()).await;
    let names: Vec<String> = (0..RESOURCES).map(|i| format!("rot-{i}")).collect();
    for n in &names {
        let mut doc = managed_livy(&emr, n, json!({"expireDays": 1, "gracePeriod": "3s"}));
        doc["spec"]["renewBefore"] = json!("10s");
        apply_retrying(&cluster, &ns, doc).await;
    }
    assert!(
        wait_all_ready(
            &cluster,
            &ns,
            "livytokens",
            RESOURCES,
            Duration::from_secs(60)
        )
        .await
        .is_some(),
        "not all Ready before the kills"
    );

    // Samplers: live tokens per resource at the provider, and whether each Secret's token is
    // alive, for the whole run.
    let max_live = Arc::new(std::sync::Mutex::new(0usize));
    let dead_in_secret = Arc::new(std::sync::Mutex::new(BTreeSet::<String>::new()));
    let secret_samples = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let stop = tokio_util::sync::CancellationToken::new();
    let sampler = {
        let (emr, names, max_live, dead, samples, stop, ns) = (
            emr.clone(),
            names.clone(),
            max_live.clone(),
            dead_in_secret.clone(),
            secret_samples.clone(),
            stop.clone(),
            ns.clone(),
        );
        tokio::spawn(async move {
            let cluster = Cluster::connect().await;
            while !stop.is_cancelled() {
                let most = live_tokens_per_resource(&emr, &names)
                    .values()
                    .copied()
                    .max()
                    .unwrap_or(0);
                {
                    let mut m = max_live.lock().unwrap();
                    *m = (*m).max(most);
                }
                if let Some(secrets) = managed_secrets(&cluster, &ns).await {
                    let now = jiff::Timestamp::now();
                    for (name, data) in secrets {
                        let id = data.get("tokenId").cloned().unwrap_or_default();
                        let alive = emr
                            .token(&id)
                            .is_some_and(|t| t.expire_time.is_none_or(|e| now < e));
                        if !alive {
                            dead.lock().unwrap().insert(format!("{name} held {id}"));
                        }
                    }
                    samples.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        })
    };

    let started = Instant::now();
    for kill in 1..=4 {
        tokio::time::sleep(Duration::from_secs(10)).await;
        operator.kill();
        fig.note(
            &format!("kill {kill} at (s)"),
            format!("{:.1}", started.elapsed().as_secs_f64()),
        );
        operator = Operator::start(&cluster, &ns, &args).await;
    }
    // Let the rotations go on for another token lifetime after the last kill.
    tokio::time::sleep(Duration::from_secs(30)).await;
    stop.cancel();
    sampler.await.unwrap();
    let rotations = emr.count("CreateLivyComputeToken");
    fig.note("tokens created during the run", rotations);
    fig.note(
        "Secret samples",
        secret_samples.load(std::sync::atomic::Ordering::SeqCst),
    );
    let most = *max_live.lock().unwrap();
    fig.add(
        "most live provider tokens of one resource",
        most,
        "<= 2",
        most <= 2,
    );
    let dead = dead_in_secret.lock().unwrap().clone();
    fig.add(
        "Secret samples holding a dead token",
        dead.len(),
        "0",
        dead.is_empty(),
    );
    if !dead.is_empty() {
        eprintln!("dead tokens seen: {dead:?}");
    }
    let ready = ready_names(&cluster, &ns, "livytokens").await.len();
    fig.add(
        "Ready after the kills",
        format!("{ready}/{RESOURCES}"),
        "all",
        ready == RESOURCES,
    );

    for n in &names {
        cluster
            .delete_and_wait::<workspace_access_operator::api::LivyToken>(
                &ns,
                n,
                Duration::from_secs(60),
            )
            .await;
    }
    let left: usize = live_tokens_per_resource(&emr, &names).values().sum();
    let left_any = emr
        .tokens()
        .iter()
        .filter(|t| {
            names
                .iter()
                .any(|n| t.name.starts_with(&format!("wao-{n}-")))
        })
        .count();
    fig.add(
        "tokens left at the provider after deletion",
        left_any,
        "0",
        left_any == 0,
    );
    fig.note("of which alive", left);
    drop(operator);
    cluster.delete_namespace(&ns).await;
    fig.finish();
}

/// Case 4: two replicas with leader election; the leader is SIGKILLed.
#[tokio::test]
#[ignore = "chaos: needs KUBECONFIG"]
async fn c4_leader_failover() {
    const RESOURCES: usize = 20;
    const LEASE: u64 = 15;
    let mut fig = Figures::new("4 leader failover (SIGKILL of the leader)");
    let cluster = Cluster::connect().await;
    cluster.install_crds().await;
    let ns = cluster.fresh_namespace("chaos-leader").await;
    let azure = MockAzure::start(Duration::from_secs(8 * 3600)).await;
    let lease = format!("chaos-{:x}", rand::random::<u32>());
    let lease_s = LEASE.to_string();
    let args = [
        "--allow-endpoint",
        &azure.host_port,
        "--leader-elect",
        "--lease-name",
        &lease,
        "--lease-namespace",
        &ns,
        "--lease-duration",
        &lease_s,
    ];
    let mut a = Operator::start(&cluster, &ns, &args).await;
    let mut b = Operator::start(&cluster, &ns, &args).await;
    let leads = |op: &Operator| {
        let addr = op.addr.clone();
        async move {
            reqwest::get(format!("http://{addr}/metrics"))
                .await
                .ok()?
                .text()
                .await
                .ok()
                .map(|t| t.lines().any(|l| l == "workspace_access_leader 1"))
        }
    };
    let started = Instant::now();
    let a_leads = loop {
        match (leads(&a).await, leads(&b).await) {
            (Some(true), _) => break true,
            (_, Some(true)) => break false,
            _ => {}
        }
        assert!(started.elapsed() < Duration::from_secs(30), "nobody leads");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    apply_retrying(&cluster, &ns, azure_secret()).await;
    for i in 0..RESOURCES {
        apply_retrying(&cluster, &ns, ntr(&azure, &format!("before-{i}"))).await;
    }
    assert!(
        wait_all_ready(
            &cluster,
            &ns,
            "notebooktokenrequests",
            RESOURCES,
            Duration::from_secs(60)
        )
        .await
        .is_some()
    );
    let (leader, follower) = if a_leads {
        (&mut a, &mut b)
    } else {
        (&mut b, &mut a)
    };
    leader.kill();
    let killed = Instant::now();
    apply_retrying(&cluster, &ns, ntr(&azure, "after-0")).await;
    while leads(follower).await != Some(true) {
        assert!(
            killed.elapsed() < Duration::from_secs(LEASE + 30),
            "the other replica never took over"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let takeover = killed.elapsed();
    fig.add(
        "takeover after the kill (s)",
        format!("{:.1}", takeover.as_secs_f64()),
        &format!("<= {} (lease + 5)", LEASE + 5),
        takeover <= Duration::from_secs(LEASE + 5),
    );
    let got_secret = wait_all_ready(
        &cluster,
        &ns,
        "notebooktokenrequests",
        RESOURCES + 1,
        Duration::from_secs(30),
    )
    .await;
    fig.add(
        "resource applied after the kill got its Secret",
        got_secret.is_some(),
        "true",
        got_secret.is_some(),
    );
    let twice = azure
        .mints_per_workspace()
        .iter()
        .filter(|(ws, n)| ws.starts_with("before-") && **n > 1)
        .count();
    fig.add("earlier resources minted twice", twice, "0", twice == 0);
    cluster.delete_namespace(&ns).await;
    fig.finish();
}

/// Case 5: a soak. `CHAOS_SOAK_RESOURCES` (default 500) NotebookTokenRequests with 2-minute
/// tokens for `CHAOS_SOAK_MINUTES` (default 30) minutes; a tenth of them with a templated key and
/// a twentieth with a Deployment of their own to restart: no renewal late, one restart per
/// rotation, and the operator's memory, file descriptors and threads flat after the first five
/// minutes.
#[tokio::test]
#[ignore = "chaos: needs KUBECONFIG"]
async fn c5_soak() {
    let env_or = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let resources = env_or("CHAOS_SOAK_RESOURCES", 500) as usize;
    let minutes = env_or("CHAOS_SOAK_MINUTES", 30);
    const LIFETIME: Duration = Duration::from_secs(120);
    const WARMUP: Duration = Duration::from_secs(300);
    let mut fig = Figures::new(&format!(
        "5 soak: {resources} resources, 2-minute tokens, {minutes} minutes"
    ));
    let cluster = Cluster::connect().await;
    cluster.install_crds().await;
    let ns = cluster.fresh_namespace("chaos-soak").await;
    let azure = MockAzure::start(LIFETIME).await;
    let operator = Operator::start(
        &cluster,
        &ns,
        &[
            "--allow-endpoint",
            &azure.host_port,
            // A token bucket that fits 500 renewals a minute: the soak is about time, not
            // about throttling.
            "--provider-rate",
            "100:100",
            "--rollout-restart-window",
            "2s",
        ],
    )
    .await;
    let pid = operator.pid();
    apply_retrying(&cluster, &ns, azure_secret()).await;
    let names: Vec<String> = (0..resources).map(|i| format!("ntr-{i:04}")).collect();
    let with_target: Vec<String> = names.iter().step_by(20).cloned().collect();
    for n in &with_target {
        apply_retrying(
            &cluster,
            &ns,
            json!({"apiVersion": "apps/v1", "kind": "Deployment",
                   "metadata": {"name": format!("reads-{n}")},
                   "spec": {"selector": {"matchLabels": {"app": n}},
                            "template": {"metadata": {"labels": {"app": n}},
                                         "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}}),
        )
        .await;
    }
    let docs = names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let mut doc = ntr(&azure, n);
            if i % 10 == 0 {
                doc["spec"]["secretTemplate"] =
                    json!({"data": {"netrc": "machine {{ publicDns }} password {{ accessToken }}\n"}});
            }
            if i % 20 == 0 {
                doc["spec"]["rolloutRestartTargets"] =
                    json!([{"kind": "Deployment", "name": format!("reads-{n}")}]);
            }
            doc
        })
        .collect();
    apply_all(&cluster, &ns, docs, 16).await;
    assert!(
        wait_all_ready(
            &cluster,
            &ns,
            "notebooktokenrequests",
            resources,
            Duration::from_secs(180)
        )
        .await
        .is_some(),
        "not all Ready at the start"
    );

    // Samples every 10 s: the operator's RSS, descriptors and threads; every Secret's token
    // alive, and a templated key holding the token of its Secret.
    let started = Instant::now();
    let mut at_warmup: Option<(u64, usize, usize)> = None;
    let (mut rss_max, mut fds_max, mut threads_max) = (0u64, 0usize, 0usize);
    let mut dead = BTreeSet::new();
    let mut stale_templates = BTreeSet::new();
    let mut samples = 0;
    while started.elapsed() < Duration::from_secs(minutes * 60) {
        tokio::time::sleep(Duration::from_secs(10)).await;
        let (rss, fds, thr) = (
            rss_kib(pid).unwrap_or(0),
            open_fds(pid).unwrap_or(0),
            threads(pid).unwrap_or(0),
        );
        if started.elapsed() >= WARMUP {
            if at_warmup.is_none() {
                at_warmup = Some((rss, fds, thr));
            }
            rss_max = rss_max.max(rss);
            fds_max = fds_max.max(fds);
            threads_max = threads_max.max(thr);
        }
        if let Some(secrets) = managed_secrets(&cluster, &ns).await {
            samples += 1;
            for (name, data) in &secrets {
                let token = data.get("accessToken").cloned().unwrap_or_default();
                if !azure.is_live(&token) {
                    dead.insert(name.clone());
                }
                if let Some(netrc) = data.get("netrc")
                    && !netrc.ends_with(&format!("password {token}\n"))
                {
                    stale_templates.insert(name.clone());
                }
            }
        }
    }
    let soak_end = Instant::now();
    let (rss_end, fds_end, threads_end) = (
        rss_kib(pid).unwrap_or(0),
        open_fds(pid).unwrap_or(0),
        threads(pid).unwrap_or(0),
    );
    // No more rotations: tokens minted from now on live 8 hours. Once every 2-minute token
    // was renewed, and the last restarts' window passed, the counts are final.
    azure.set_lifetime(Duration::from_secs(8 * 3600));
    tokio::time::sleep(LIFETIME + Duration::from_secs(10)).await;

    // Renewals: each token's successor was minted before it expired; the last one is alive.
    let mut per_ws: BTreeMap<String, Vec<chaos_support::Mint>> = BTreeMap::new();
    for m in azure.mints() {
        per_ws.entry(m.workspace.clone()).or_default().push(m);
    }
    let mut late = 0;
    let mut renewals = 0;
    for mints in per_ws.values() {
        for pair in mints.windows(2) {
            let minted_next = pair[1].expires_at - pair[1].lifetime;
            renewals += 1;
            if minted_next >= pair[0].expires_at {
                late += 1;
            }
        }
        if mints.last().is_some_and(|m| m.expires_at <= soak_end) {
            late += 1;
        }
    }
    fig.note("Secret samples", samples);
    fig.note("renewals", renewals);
    fig.add("late renewals", late, "0", late == 0);
    fig.add(
        "Secrets seen holding an expired token",
        dead.len(),
        "0",
        dead.is_empty(),
    );
    fig.add(
        "templated keys seen with another token than their Secret",
        stale_templates.len(),
        "0",
        stale_templates.is_empty(),
    );
    // One restart per rotation: a Deployment's generation moves once per pod-template change.
    let deployments: kube::Api<k8s_openapi::api::apps::v1::Deployment> =
        kube::Api::namespaced(cluster.client.clone(), &ns);
    let (mut restarts, mut rotations, mut mismatched) = (0i64, 0i64, Vec::new());
    for n in &with_target {
        let d = deployments.get(&format!("reads-{n}")).await.unwrap();
        let r = d.metadata.generation.unwrap_or(1) - 1;
        let rot = per_ws.get(n).map_or(0, |m| m.len() as i64 - 1);
        restarts += r;
        rotations += rot;
        if r != rot {
            mismatched.push(format!("{n}: {r} restarts, {rot} rotations"));
        }
    }
    fig.note("rotations of resources with a restart target", rotations);
    fig.add(
        "restarts of their Deployments",
        restarts,
        &rotations.to_string(),
        mismatched.is_empty(),
    );
    if !mismatched.is_empty() {
        eprintln!("restarts per rotation off: {mismatched:?}");
    }
    let (rss5, fds5, threads5) = at_warmup.unwrap_or((0, 0, 0));
    let mib = |k: u64| format!("{:.1}", k as f64 / 1024.0);
    fig.note("RSS at 5 min (MiB)", mib(rss5));
    fig.add(
        "RSS most after 5 min / at the end (MiB)",
        format!("{} / {}", mib(rss_max), mib(rss_end)),
        "growth < 5%",
        rss5 > 0 && (rss_max as f64) < rss5 as f64 * 1.05,
    );
    fig.add(
        "open fds at 5 min / most after / end",
        format!("{fds5} / {fds_max} / {fds_end}"),
        "no growth",
        fds5 > 0 && fds_end <= fds5 + fds5 / 20 + 1,
    );
    fig.add(
        "threads at 5 min / most after / end",
        format!("{threads5} / {threads_max} / {threads_end}"),
        "no growth",
        threads5 > 0 && threads_end <= threads5 + threads5 / 20 + 1,
    );
    drop(operator);
    cluster.delete_namespace(&ns).await;
    fig.finish();
}

/// Case 6: the namespace of 100 resources is deleted.
#[tokio::test]
#[ignore = "chaos: needs KUBECONFIG (with a namespace controller)"]
async fn c6_namespace_deletion() {
    const RESOURCES: usize = 100;
    let mut fig = Figures::new("6 namespace deletion with 100 resources");
    let cluster = Cluster::connect().await;
    cluster.install_crds().await;
    let ns = cluster.fresh_namespace("chaos-nsdel").await;
    let azure = MockAzure::start(Duration::from_secs(8 * 3600)).await;
    let operator = Operator::start(
        &cluster,
        &ns,
        &[
            "--allow-endpoint",
            &azure.host_port,
            "--provider-rate",
            "200:200",
        ],
    )
    .await;
    apply_retrying(&cluster, &ns, azure_secret()).await;
    let docs = (0..RESOURCES)
        .map(|i| ntr(&azure, &format!("ntr-{i}")))
        .collect();
    apply_all(&cluster, &ns, docs, 16).await;
    assert!(
        wait_all_ready(
            &cluster,
            &ns,
            "notebooktokenrequests",
            RESOURCES,
            Duration::from_secs(120)
        )
        .await
        .is_some()
    );
    let writes = |m: &'static str| {
        let op = &operator;
        async move { op.metric(m).await.unwrap_or(0.0) }
    };
    let secret_writes_before = writes("workspace_access_api_writes_total").await;
    let failures_before = writes("workspace_access_reconcile_failures_total").await;
    let mints_before = azure.mints().len();
    let deleted = Instant::now();
    cluster.delete_namespace(&ns).await;
    let namespaces: kube::Api<k8s_openapi::api::core::v1::Namespace> =
        kube::Api::all(cluster.client.clone());
    while namespaces.get_opt(&ns).await.unwrap().is_some() {
        assert!(
            deleted.elapsed() < Duration::from_secs(180),
            "the namespace was not deleted within 3 minutes"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    fig.note(
        "namespace gone after (s)",
        format!("{:.1}", deleted.elapsed().as_secs_f64()),
    );
    let writes_during = writes("workspace_access_api_writes_total").await - secret_writes_before;
    let failures_during =
        writes("workspace_access_reconcile_failures_total").await - failures_before;
    let mints_during = azure.mints().len() - mints_before;
    fig.add(
        "operator writes during the deletion",
        writes_during,
        "<= 10",
        writes_during <= 10.0,
    );
    fig.add(
        "failed reconciliations during the deletion",
        failures_during,
        "<= 10",
        failures_during <= 10.0,
    );
    fig.add(
        "tokens minted during the deletion",
        mints_during,
        "0",
        mints_during == 0,
    );
    fig.finish();
}

/// Case 7: half of the provider's answers fail with 503 for 5 minutes, across 200 resources
/// with 2-minute tokens.
#[tokio::test]
#[ignore = "chaos: needs KUBECONFIG"]
async fn c7_provider_brownout() {
    const RESOURCES: usize = 200;
    const BROWNOUT: Duration = Duration::from_secs(300);
    let mut fig = Figures::new("7 provider brown-out: 50% 503 for 5 minutes, 200 resources");
    let cluster = Cluster::connect().await;
    cluster.install_crds().await;
    let ns = cluster.fresh_namespace("chaos-brownout").await;
    let azure = MockAzure::start(Duration::from_secs(120)).await;
    let _operator = Operator::start(
        &cluster,
        &ns,
        &[
            "--allow-endpoint",
            &azure.host_port,
            "--provider-rate",
            "200:200",
        ],
    )
    .await;
    apply_retrying(&cluster, &ns, azure_secret()).await;
    let names: Vec<String> = (0..RESOURCES).map(|i| format!("ntr-{i}")).collect();
    let docs = names.iter().map(|n| ntr(&azure, n)).collect();
    apply_all(&cluster, &ns, docs, 16).await;
    assert!(
        wait_all_ready(
            &cluster,
            &ns,
            "notebooktokenrequests",
            RESOURCES,
            Duration::from_secs(120)
        )
        .await
        .is_some()
    );
    let (_, calls_before, _) = azure.calls();
    azure.set_failure_ratio(0.5);
    let started = Instant::now();
    let mut lost = BTreeSet::new();
    let mut dead = BTreeSet::new();
    let mut samples = 0;
    while started.elapsed() < BROWNOUT {
        if let Some(secrets) = managed_secrets(&cluster, &ns).await {
            samples += 1;
            for n in &names {
                match secrets.get(n) {
                    None => {
                        lost.insert(n.clone());
                    }
                    Some(d) => {
                        let token = d.get("accessToken").cloned().unwrap_or_default();
                        if !azure.is_live(&token) {
                            dead.insert(n.clone());
                        }
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let (_, calls_after, failed) = azure.calls();
    azure.set_failure_ratio(0.0);
    let recovered = Instant::now();
    let ready = wait_all_ready(
        &cluster,
        &ns,
        "notebooktokenrequests",
        RESOURCES,
        Duration::from_secs(120),
    )
    .await;
    fig.note("Secret samples", samples);
    fig.add(
        "resources that lost their Secret",
        lost.len(),
        "0",
        lost.is_empty(),
    );
    fig.note("resources whose Secret held an expired token", dead.len());
    let calls = calls_after - calls_before;
    // Without failures each resource renews every ~60 s (2-minute tokens, renewed 1 minute
    // before expiry): 5 calls in 5 minutes. With half failing and backoff doubling from 2 s,
    // a renewal takes 2 calls on average; the budget allows 3 times the fault-free rate.
    let budget = (RESOURCES as u64) * 5 * 3;
    fig.add(
        "provider calls during the brown-out",
        format!("{calls} ({failed} failed)"),
        &format!("<= {budget}"),
        calls <= budget,
    );
    fig.add(
        "all Ready after the brown-out (s)",
        ready.map_or("never".into(), |d| format!("{:.1}", d.as_secs_f64())),
        "<= 120",
        ready.is_some(),
    );
    let _ = recovered;
    cluster.delete_namespace(&ns).await;
    fig.finish();
}
