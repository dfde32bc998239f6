//! The operator under test, as a child process: start, readiness, metrics, memory, stop.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A running operator.
pub struct Operator {
    child: Child,
    addr: String,
    http: reqwest::Client,
}

/// Memory of a process from /proc (KiB).
#[derive(Clone, Copy, Debug, Default)]
pub struct Memory {
    pub rss_kib: u64,
    pub peak_rss_kib: u64,
}

impl Operator {
    /// Starts `binary run` with `args` and waits until /readyz answers 200.
    pub async fn start(
        binary: &PathBuf,
        args: &[String],
        log: Option<&PathBuf>,
    ) -> anyhow::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let addr = format!("127.0.0.1:{port}");
        let stderr = match log {
            Some(p) => Stdio::from(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)?,
            ),
            None => Stdio::null(),
        };
        let child = Command::new(binary)
            .arg("run")
            .arg("--metrics-addr")
            .arg(&addr)
            .args(args)
            .env(
                "RUST_LOG",
                std::env::var("BENCH_OPERATOR_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .map_err(|e| {
                anyhow::anyhow!(
                    "starting {}: {e} (build it with `cargo build --release`)",
                    binary.display()
                )
            })?;
        let op = Self {
            child,
            addr,
            http: reqwest::Client::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Ok(r) = op
                .http
                .get(format!("http://{}/readyz", op.addr))
                .send()
                .await
                && r.status() == 200
            {
                return Ok(op);
            }
            anyhow::ensure!(Instant::now() < deadline, "operator not ready within 120 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The operator's process ID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Current and peak resident memory.
    pub fn memory(&self) -> Memory {
        memory_of(self.pid())
    }

    /// Samples the operator's resident memory every `every` until dropped.
    pub fn sample_rss(&self, every: Duration) -> RssSampler {
        let pid = self.pid();
        let samples = Arc::new(Mutex::new(Vec::new()));
        let task = {
            let samples = samples.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                loop {
                    tick.tick().await;
                    let rss = memory_of(pid).rss_kib;
                    if rss > 0 {
                        samples
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push((Instant::now(), rss));
                    }
                }
            })
        };
        RssSampler { samples, task }
    }

    /// CPU time (user + system) the operator has used so far.
    pub fn cpu(&self) -> Duration {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())) else {
            return Duration::ZERO;
        };
        // Fields after the command name (which is in parentheses and may contain spaces).
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            return Duration::ZERO;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // utime and stime are fields 14 and 15 of the line, 12 and 13 after the command.
        let ticks: u64 = [11, 12]
            .iter()
            .filter_map(|i| fields.get(*i)?.parse::<u64>().ok())
            .sum();
        // The kernel's USER_HZ is 100 on Linux.
        Duration::from_millis(ticks * 10)
    }

    /// The operator's counters by series name.
    pub async fn counters(&self) -> anyhow::Result<BTreeMap<String, f64>> {
        let text = self
            .http
            .get(format!("http://{}/metrics", self.addr))
            .send()
            .await?
            .text()
            .await?;
        let mut out = BTreeMap::new();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let Some((key, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(v) = value.parse::<f64>() else {
                continue;
            };
            out.insert(key.to_owned(), v);
        }
        Ok(out)
    }

    /// Sends SIGTERM and waits for the exit.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait()? {
                anyhow::ensure!(status.success(), "operator exited with {status}");
                return Ok(());
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "operator did not stop within 60 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sum of the counters whose series name starts with `prefix` and contains every `needle`.
pub fn sum(counters: &BTreeMap<String, f64>, prefix: &str, needles: &[&str]) -> f64 {
    counters
        .iter()
        .filter(|(k, _)| k.starts_with(prefix) && needles.iter().all(|n| k.contains(n)))
        .map(|(_, v)| v)
        .sum()
}

/// Current and peak resident memory of process `pid` (zeros once it is gone).
fn memory_of(pid: u32) -> Memory {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return Memory::default();
    };
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Memory {
        rss_kib: field("VmRSS:"),
        peak_rss_kib: field("VmHWM:"),
    }
}

/// The operator's resident memory, sampled at a fixed interval (stops when dropped).
pub struct RssSampler {
    samples: Arc<Mutex<Vec<(Instant, u64)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl RssSampler {
    /// The samples so far: when, and RSS in KiB.
    pub fn samples(&self) -> Vec<(Instant, u64)> {
        self.samples
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The highest sample since `since` (KiB).
    pub fn peak_since(&self, since: Instant) -> u64 {
        self.samples()
            .iter()
            .filter(|(t, _)| *t >= since)
            .map(|(_, kib)| *kib)
            .max()
            .unwrap_or(0)
    }

    /// The median of the samples since `since` (KiB).
    pub fn median_since(&self, since: Instant) -> u64 {
        let mut v: Vec<u64> = self
            .samples()
            .iter()
            .filter(|(t, _)| *t >= since)
            .map(|(_, kib)| *kib)
            .collect();
        v.sort_unstable();
        v.get(v.len() / 2).copied().unwrap_or(0)
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.task.abort();
    }
}
