//! Helpers for the e2e tests: the cluster from KUBECONFIG, CRD installation, namespaces, the
//! operator as a child process.
#![allow(dead_code)]

pub mod fake_emr;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::runtime::wait::{await_condition, conditions};
use serde_json::Value;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};
use workspace_access_operator::controller::ManagedKind;

/// The cluster in KUBECONFIG.
pub struct Cluster {
    /// Client for the cluster.
    pub client: kube::Client,
}

impl Cluster {
    /// Connects, failing with a clear message when KUBECONFIG isn't set.
    pub async fn connect() -> Self {
        assert!(
            std::env::var_os("KUBECONFIG").is_some(),
            "set KUBECONFIG to a disposable test cluster to run the e2e tests"
        );
        workspace_access_operator::providers::http::install_crypto_provider();
        let client = kube::Client::try_default()
            .await
            .expect("connect to the cluster in KUBECONFIG");
        Self { client }
    }

    /// Applies crds/ and waits until every CRD is established.
    pub async fn install_crds(&self) {
        let crds: Api<CustomResourceDefinition> = Api::all(self.client.clone());
        for crd in workspace_access_operator::api::crds() {
            let name = crd.metadata.name.clone().unwrap();
            crds.patch(
                &name,
                &PatchParams::apply("e2e").force(),
                &Patch::Apply(&crd),
            )
            .await
            .expect("install CRD");
            tokio::time::timeout(
                Duration::from_secs(30),
                await_condition(crds.clone(), &name, conditions::is_crd_established()),
            )
            .await
            .expect("CRD established in time")
            .expect("watch CRD");
        }
    }

    /// Creates a namespace with a unique name.
    pub async fn fresh_namespace(&self, prefix: &str) -> String {
        let name = format!("{prefix}-{:x}", rand::random::<u32>());
        let ns: Namespace =
            serde_json::from_value(serde_json::json!({"metadata": {"name": name}})).unwrap();
        Api::<Namespace>::all(self.client.clone())
            .create(&Default::default(), &ns)
            .await
            .expect("create namespace");
        name
    }

    /// Deletes a namespace (and everything in it).
    pub async fn delete_namespace(&self, name: &str) {
        let _ = Api::<Namespace>::all(self.client.clone())
            .delete(name, &DeleteParams::default())
            .await;
    }

    fn dynamic_api(&self, ns: &str, doc: &Value) -> Api<DynamicObject> {
        let (group, version) = doc["apiVersion"]
            .as_str()
            .unwrap()
            .split_once('/')
            .unwrap_or(("", doc["apiVersion"].as_str().unwrap()));
        let gvk = GroupVersionKind::gvk(group, version, doc["kind"].as_str().unwrap());
        let plural = format!("{}s", gvk.kind.to_lowercase());
        let ar = ApiResource::from_gvk_with_plural(&gvk, &plural);
        Api::namespaced_with(self.client.clone(), ns, &ar)
    }

    /// Deletes a resource and waits until it is gone (its finalizers ran).
    pub async fn delete_and_wait<K: ManagedKind>(&self, ns: &str, name: &str, within: Duration) {
        let api: Api<K> = Api::namespaced(self.client.clone(), ns);
        let _ = api.delete(name, &DeleteParams::default()).await;
        let deadline = Instant::now() + within;
        while api.get_opt(name).await.expect("get resource").is_some() {
            assert!(
                Instant::now() < deadline,
                "{ns}/{name} still exists {within:?} after its deletion"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Server-side applies a manifest in `ns`, or returns the API server's refusal.
    pub async fn try_apply_json(&self, ns: &str, doc: Value) -> Result<(), kube::Error> {
        let api = self.dynamic_api(ns, &doc);
        let name = doc["metadata"]["name"].as_str().unwrap().to_owned();
        api.patch(
            &name,
            &PatchParams::apply("e2e").force(),
            &Patch::Apply(&doc),
        )
        .await
        .map(|_| ())
    }

    /// Server-side applies a manifest in `ns`.
    pub async fn apply_json(&self, ns: &str, doc: Value) {
        self.try_apply_json(ns, doc).await.expect("apply manifest");
    }

    /// Waits until the resource's Ready condition exists and has an observed generation equal
    /// to the resource's; returns (status, reason).
    pub async fn wait_ready_reason<K: ManagedKind>(
        &self,
        ns: &str,
        name: &str,
        within: Duration,
    ) -> (String, String) {
        let api: Api<K> = Api::namespaced(self.client.clone(), ns);
        let deadline = Instant::now() + within;
        loop {
            if let Some(obj) = api.get_opt(name).await.expect("get resource") {
                let generation = kube::Resource::meta(&obj).generation;
                let v = serde_json::to_value(&obj).unwrap();
                if let Some(c) = v["status"]["conditions"]
                    .as_array()
                    .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
                    && c["observedGeneration"].as_i64() == generation
                {
                    return (
                        c["status"].as_str().unwrap_or_default().to_owned(),
                        c["reason"].as_str().unwrap_or_default().to_owned(),
                    );
                }
            }
            assert!(
                Instant::now() < deadline,
                "{ns}/{name} got no Ready condition within {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// `KUBECONFIG` for the operator process: `E2E_OPERATOR_KUBECONFIG` when set (e.g. a kubeconfig
/// with the token of the ServiceAccount of `deploy/`, to prove its RBAC is enough), else the
/// test's own.
fn operator_kubeconfig() -> Vec<(String, String)> {
    std::env::var("E2E_OPERATOR_KUBECONFIG")
        .map(|k| vec![("KUBECONFIG".to_string(), k)])
        .unwrap_or_default()
}

/// The operator binary running against the cluster.
pub struct Operator {
    child: Child,
    /// Address of /metrics, /healthz, /readyz.
    pub addr: String,
}

impl Operator {
    /// Starts `workspace-access-operator run` for namespace `ns` only (so that tests running at
    /// the same time, or resources left by an earlier failed run, don't reach this operator)
    /// with `extra` arguments, and waits until /readyz answers 200.
    pub async fn start(_cluster: &Cluster, ns: &str, extra: &[&str]) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = format!("127.0.0.1:{port}");
        let child = Command::new(env!("CARGO_BIN_EXE_workspace-access-operator"))
            .arg("run")
            .arg("--metrics-addr")
            .arg(&addr)
            .args(["--watch-namespace", ns])
            .args(extra)
            .envs(operator_kubeconfig())
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdout(Stdio::inherit())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the operator");
        let op = Self { child, addr };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if op.try_get("/readyz").await.map(|r| r.0) == Some(200) {
                return op;
            }
            assert!(Instant::now() < deadline, "operator not ready within 30s");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn try_get(&self, path: &str) -> Option<(u16, String)> {
        let resp = reqwest::get(format!("http://{}{path}", self.addr))
            .await
            .ok()?;
        let code = resp.status().as_u16();
        Some((code, resp.text().await.unwrap_or_default()))
    }

    /// GET one of the operator's endpoints.
    pub async fn get(&self, path: &str) -> (u16, String) {
        self.try_get(path).await.expect("operator endpoint answers")
    }

    /// Sends a signal (`STOP`, `CONT`, ...) to the operator process.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .expect("send a signal");
        assert!(status.success(), "kill -{signal} failed");
    }

    /// The sum of a counter's series in /metrics (0 when it has none yet).
    pub async fn counter(&self, name: &str) -> f64 {
        let (_, text) = self.get("/metrics").await;
        text.lines()
            .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// The operator's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the process with SIGKILL (no shutdown of any kind) and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Whether the process still runs.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The value of a gauge or the sum of a counter's series, or `None` if the operator doesn't
    /// answer (e.g. it was killed).
    pub async fn metric(&self, name: &str) -> Option<f64> {
        let (_, text) = self.try_get("/metrics").await?;
        Some(
            text.lines()
                .filter(|l| {
                    l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} "))
                })
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum(),
        )
    }

    /// Sends SIGTERM and waits for the exit.
    pub async fn terminate(&mut self, within: Duration) -> ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("send SIGTERM");
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for operator") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "operator did not exit within {within:?} of SIGTERM"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}
