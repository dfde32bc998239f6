//! The operator killed, or failing, at any point of a managed Livy token's life — its first
//! creation, a rotation, the retirement of the replaced token, the deletion of the resource —
//! neither leaks nor duplicates a provider token, and never leaves pods without a valid
//! Secret.
//!
//! Every request of a phase is a step: the API server's (through an [`ApiTap`]) and the
//! provider's (through the stub in front of the fake EMR), counted together. A dry run counts
//! the steps; then, for every step and every way to die there, a fresh world runs the phase
//! with a context that dies at that step, and a fresh context ("the restarted operator", same
//! API server, same fake EMR) takes over:
//! - `Fail`: the request fails (the API server or the provider answers an error); the operator
//!   handles the error as it would, then restarts;
//! - `FailAfter`: the request takes effect, but the answer is lost (the connection breaks);
//!   the operator sees an error and handles it, then restarts;
//! - `KillBefore`: the operator is killed while sending the request (it never lands);
//! - `KillAfter`: the request lands and takes effect, the operator is killed before it reads
//!   the answer.
//!
//! Checked after the crash and after every reconciliation of the restarted operator: the
//! Secret holds a token the provider has, unexpired, with the same content, and no token is
//! ever deleted while the Secret holds it. At the end: exactly one token of the resource
//! exists at the provider (none once the resource is deleted), it is the one in the Secret and
//! in the status, and the phase created at most one token.

use super::fake_emr::FakeEmr;
use super::stub::{Reply, Stub};
use super::*;
use crate::support::fake_api::FakeApiServer;
use std::sync::Mutex;
use tokio::sync::Notify;
use workspace_access_operator::api::common::{EXPIRES_AT_ANNOTATION, RENEW_AT_ANNOTATION};
use workspace_access_operator::controller::livy::name_prefix;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Fail,
    FailAfter,
    KillBefore,
    KillAfter,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// The first sync: the first token is created.
    Create,
    /// At the renewal time: a new token replaces the current one.
    Rotate,
    /// After the grace period: the replaced token is deleted.
    Retire,
    /// The resource is deleted: its tokens are deleted, the finalizer removed.
    Delete,
}

/// Steps of a phase, counted across the API server and the provider.
#[derive(Default)]
struct Steps {
    n: usize,
    crash_at: Option<(usize, Mode)>,
    log: Vec<String>,
}

impl Steps {
    /// Counts a request; the mode if this is the step to die at.
    fn hit(&mut self, what: String) -> Option<Mode> {
        self.n += 1;
        self.log.push(what);
        self.crash_at
            .filter(|(at, _)| *at == self.n)
            .map(|(_, mode)| mode)
    }
}

const NAME: &str = "spark";

/// (deleted token, the token the Secret held then).
type Deletions = Arc<Mutex<Vec<(String, Option<String>)>>>;

struct World {
    s: FakeApiServer,
    emr: FakeEmr,
    stub: Stub,
    clock: Arc<ManualClock>,
    steps: Arc<Mutex<Steps>>,
    died: Arc<Notify>,
    /// The HTTP client of every operator of this world. Its timeout is long: a killed
    /// operator must not see its own request time out.
    http: HttpClient,
    deletions: Deletions,
}

/// A context that makes no mistakes: the original operator before the phase, and the
/// restarted one after.
fn healthy(w: &World) -> Arc<Context> {
    Arc::new(context_sharing(
        w.s.client(),
        settings(),
        w.http.clone(),
        w.clock.clone(),
        Arc::new(Metrics::new()),
    ))
}

impl World {
    async fn new() -> Self {
        let s = crd_server();
        insert_credentials(&s);
        let clock = Arc::new(ManualClock::new(t0()));
        let (emr, stub) = emr_behind_stub(clock.clone()).await;
        s.insert(&livy(NAME, &stub, managed(), true));
        let deletions: Deletions = Arc::default();
        {
            let (s, deletions) = (s.clone(), deletions.clone());
            emr.on_delete(move |id| {
                let held = s
                    .get::<Secret>(NS, NAME)
                    .and_then(|x| secret_value(&x, "tokenId"));
                deletions.lock().unwrap().push((id.to_owned(), held));
            });
        }
        Self {
            s,
            emr,
            stub,
            clock,
            steps: Arc::default(),
            died: Arc::new(Notify::new()),
            http: HttpClient::new(
                HttpOptions {
                    timeout: Duration::from_secs(30),
                    ..HttpOptions::default()
                },
                Arc::new(Metrics::new()),
            )
            .unwrap(),
            deletions,
        }
    }

    /// This resource's tokens at the provider.
    fn tokens(&self) -> Vec<String> {
        let Some(obj) = self.s.get::<LivyToken>(NS, NAME) else {
            // Deleted: every token of this suite's resource counts.
            return self.emr.tokens().into_iter().map(|t| t.token_id).collect();
        };
        let prefix = name_prefix(NS, NAME, &obj.uid().unwrap(), None);
        self.emr
            .tokens()
            .into_iter()
            .filter(|t| t.name.starts_with(&prefix))
            .map(|t| t.token_id)
            .collect()
    }

    fn successful_creates(&self) -> usize {
        self.emr
            .calls()
            .iter()
            .filter(|c| c.action == "CreateLivyComputeToken" && c.status == 200)
            .count()
    }

    fn status(&self) -> Value {
        status_of(&self.s, "livytokens", NAME)
    }

    /// The Secret holds a token the provider has, unexpired, with the same content.
    fn assert_secret_valid(&self, when: &str) {
        let secret: Secret = self
            .s
            .get(NS, NAME)
            .unwrap_or_else(|| panic!("{when}: no Secret"));
        let id = secret_value(&secret, "tokenId").unwrap();
        let token = self
            .emr
            .token(&id)
            .unwrap_or_else(|| panic!("{when}: the Secret's token {id} is gone at the provider"));
        assert_eq!(
            secret_value(&secret, "token").unwrap(),
            token.token,
            "{when}"
        );
        assert!(
            token.expire_time.unwrap() > self.clock.now(),
            "{when}: token {id} expired"
        );
    }

    /// A context that dies as the steps say: its kube client goes through a tap, and the
    /// provider stub intercepts, both counting steps.
    fn mortal(&self) -> Arc<Context> {
        let (steps, died) = (self.steps.clone(), self.died.clone());
        let tap = ApiTap::new(&self.s, move |r: &ApiReq| {
            let what = format!("API {} {}", r.method, r.path);
            match steps.lock().unwrap().hit(what) {
                None => Tap::Pass,
                Some(Mode::Fail) => Tap::Fail(500),
                Some(Mode::FailAfter) => Tap::Lost,
                Some(Mode::KillBefore) => Tap::Hang {
                    forward: false,
                    notify: died.clone(),
                },
                Some(Mode::KillAfter) => Tap::Hang {
                    forward: true,
                    notify: died.clone(),
                },
            }
        });
        let (steps, died) = (self.steps.clone(), self.died.clone());
        self.stub.intercept(move |r| {
            let what = format!(
                "EMR {}",
                r.header("x-acs-action").unwrap_or_default().to_owned()
            );
            match steps.lock().unwrap().hit(what) {
                None => None,
                Some(Mode::Fail) => Some(Reply::json(
                    503,
                    json!({"requestId": "R", "code": "ServiceUnavailable", "message": "injected"}),
                )),
                Some(Mode::FailAfter) => Some(Reply::Lost),
                Some(Mode::KillBefore) => Some(Reply::Hang {
                    forward: false,
                    notify: died.clone(),
                }),
                Some(Mode::KillAfter) => Some(Reply::Hang {
                    forward: true,
                    notify: died.clone(),
                }),
            }
        });
        Arc::new(context_sharing(
            tap.client(),
            settings(),
            self.http.clone(),
            self.clock.clone(),
            Arc::new(Metrics::new()),
        ))
    }

    /// One reconciliation by `ctx`, which may die on the way. Returns the requeue, if it
    /// lived to say.
    async fn reconcile_with(&self, ctx: Arc<Context>) -> Option<Action> {
        let obj = self.s.get::<LivyToken>(NS, NAME)?;
        let mut task = tokio::spawn(reconcile(Arc::new(obj), ctx));
        tokio::select! {
            r = &mut task => r.unwrap().ok(),
            _ = self.died.notified() => {
                task.abort();
                let _ = task.await;
                None
            }
        }
    }

    /// Brings the world to the start of `phase` with a healthy operator.
    async fn prepare(&self, phase: Phase) {
        let ctx = healthy(self);
        if phase == Phase::Create {
            return;
        }
        self.reconcile_with(ctx.clone()).await.unwrap();
        assert!(is_ready(&self.s, "livytokens", NAME));
        self.to_renewal();
        if phase == Phase::Rotate {
            return;
        }
        self.reconcile_with(ctx.clone()).await.unwrap();
        assert_eq!(self.tokens().len(), 2);
        if phase == Phase::Retire {
            self.to_retirement();
            return;
        }
        self.s.delete_object::<LivyToken>(NS, NAME);
    }

    fn to_renewal(&self) {
        let secret: Secret = self.s.get(NS, NAME).unwrap();
        self.clock
            .set(secret.annotations()[RENEW_AT_ANNOTATION].parse().unwrap());
    }

    fn to_retirement(&self) {
        let at: jiff::Timestamp = self.status()["managed"]["retiring"][0]["deleteAfter"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        self.clock.set(at);
    }

    /// The restarted operator reconciles until nothing is left to do, checking the Secret
    /// after every step. Returns how many reconciliations it took.
    async fn recover(&self, phase: Phase, what: &str) -> usize {
        let ctx = healthy(self);
        for round in 1..=12 {
            let Some(action) = self.reconcile_with(ctx.clone()).await else {
                assert_eq!(phase, Phase::Delete, "{what}: the resource vanished");
                return round;
            };
            // Once there is a Secret, it holds a valid token at every moment.
            let has_secret = self.s.get::<Secret>(NS, NAME).is_some();
            if phase != Phase::Delete && (phase != Phase::Create || has_secret) {
                self.assert_secret_valid(&format!("{what}, after restart round {round}"));
            }
            let st = self.status();
            // Deleting settles when the resource is gone (above).
            let settled = phase != Phase::Delete
                && is_ready(&self.s, "livytokens", NAME)
                && st["managed"].get("pending").is_none()
                && st["managed"].get("retiring").is_none();
            if settled {
                return round;
            }
            // Whatever the operator waits for (a backoff, the grace period) passes.
            self.clock
                .advance(requeue(&action).unwrap_or(Duration::from_secs(1)));
        }
        panic!(
            "{what}: not settled after 12 reconciliations: {}",
            self.status()
        );
    }

    fn assert_final(&self, phase: Phase, creates_before: usize, what: &str) {
        let creates = self.successful_creates() - creates_before;
        assert!(
            creates <= 1,
            "{what}: {creates} tokens created: {:?}",
            self.emr.actions()
        );
        if phase == Phase::Create || phase == Phase::Rotate {
            assert_eq!(creates, 1, "{what}");
        }
        // (Deleting the resource deletes the tokens its Secret holds; the Secret goes with it.)
        for (deleted, held) in self.deletions.lock().unwrap().iter() {
            if phase == Phase::Delete {
                break;
            }
            assert_ne!(
                Some(deleted),
                held.as_ref(),
                "{what}: a token was deleted while the Secret held it"
            );
        }
        let tokens = self.tokens();
        if phase == Phase::Delete {
            assert!(
                self.s.get::<LivyToken>(NS, NAME).is_none(),
                "{what}: the resource is still there"
            );
            assert_eq!(tokens, Vec::<String>::new(), "{what}: tokens leaked");
            return;
        }
        let secret: Secret = self.s.get(NS, NAME).unwrap();
        let in_secret = secret_value(&secret, "tokenId").unwrap();
        assert_eq!(
            tokens,
            vec![in_secret.clone()],
            "{what}: leaked or lost tokens"
        );
        let st = self.status();
        assert_eq!(st["tokenId"], in_secret, "{what}: {st}");
        assert_eq!(
            st["managed"]["current"]["tokenId"], in_secret,
            "{what}: {st}"
        );
        // (The annotation has whole seconds.)
        let whole = |t: jiff::Timestamp| t.round(jiff::Unit::Second).unwrap();
        assert_eq!(
            st["expiresAt"].as_str().map(|e| whole(e.parse().unwrap())),
            Some(secret.annotations()[EXPIRES_AT_ANNOTATION].parse().unwrap()),
            "{what}: the status describes another token than the Secret's"
        );
    }
}

/// Runs `phase` once with a context that dies at step `at` (`None`: a dry run) and lets the
/// restarted operator recover. Returns the steps the phase made.
async fn run(phase: Phase, crash: Option<(usize, Mode)>) -> Vec<String> {
    let w = World::new().await;
    w.prepare(phase).await;
    let what = format!("{phase:?}, {crash:?}");
    let creates_before = w.successful_creates();
    w.steps.lock().unwrap().crash_at = crash;
    let mortal = w.mortal();
    w.reconcile_with(mortal).await;
    w.stub.clear_intercept();
    let log = std::mem::take(&mut w.steps.lock().unwrap().log);

    if let Some((at, _)) = crash {
        assert!(
            at <= log.len(),
            "{what}: the crash point was never reached: {log:?}"
        );
        let what = format!("{what} at {}", log[at - 1]);
        if matches!(phase, Phase::Rotate | Phase::Retire) {
            w.assert_secret_valid(&format!("{what}, right after the crash"));
        }
        w.recover(phase, &what).await;
        w.assert_final(phase, creates_before, &what);
    } else {
        // The dry run did the whole phase.
        w.recover(phase, &what).await;
        w.assert_final(phase, creates_before, &what);
    }
    log
}

async fn every_crash_point(phase: Phase) {
    let steps = run(phase, None).await;
    assert!(steps.len() >= 3, "{phase:?}: {steps:?}");
    let mut crashes = Vec::new();
    let mut wrote = false;
    for (at, step) in steps.iter().enumerate() {
        // A read has no effect to land: dying after it is dying before it. Before the first
        // write, dying at any read is dying at the first.
        let read = step.starts_with("API GET")
            || step.ends_with("ListLivyComputeToken")
            || step.ends_with("GetLivyComputeToken");
        if read && !wrote && at > 0 {
            continue;
        }
        wrote |= !read;
        for mode in [
            Mode::Fail,
            Mode::FailAfter,
            Mode::KillBefore,
            Mode::KillAfter,
        ] {
            if !(read && matches!(mode, Mode::FailAfter | Mode::KillAfter)) {
                crashes.push((at + 1, mode));
            }
        }
    }
    // Each in its own world, several at a time.
    for batch in crashes.chunks(8) {
        futures::future::join_all(batch.iter().map(|c| run(phase, Some(*c)))).await;
    }
}

#[tokio::test]
async fn a_crash_while_creating_the_first_token_leaks_and_duplicates_nothing() {
    every_crash_point(Phase::Create).await;
}

#[tokio::test]
async fn a_crash_during_a_rotation_leaks_nothing_and_keeps_the_secret_valid() {
    every_crash_point(Phase::Rotate).await;
}

#[tokio::test]
async fn a_crash_while_retiring_the_replaced_token_leaks_nothing() {
    every_crash_point(Phase::Retire).await;
}

#[tokio::test]
async fn a_crash_while_deleting_the_resource_leaks_nothing() {
    every_crash_point(Phase::Delete).await;
}

/// A List answering an empty success (no `data`) must not pass for "no tokens": a token whose
/// create answer was lost would not be found, and a second one would be created.
#[tokio::test]
async fn an_empty_list_answer_does_not_hide_a_token_whose_create_answer_was_lost() {
    let w = World::new().await;
    w.prepare(Phase::Rotate).await;
    let ctx = healthy(&w);
    w.stub.fault_times(
        1,
        |r| r.header("x-acs-action") == Some("CreateLivyComputeToken"),
        Reply::Lost,
    );
    w.reconcile_with(ctx.clone()).await.unwrap();
    assert_eq!(ready(&w.s, "livytokens", NAME).unwrap().1, "ProviderError");
    assert_eq!(w.tokens().len(), 2, "the create took effect");

    let creates = w.emr.count("CreateLivyComputeToken");
    for body in [
        "{}",
        r#"{"requestId": "R", "code": "1000000", "message": "ok"}"#,
    ] {
        w.stub.fault_times(
            1,
            |r| r.header("x-acs-action") == Some("ListLivyComputeToken"),
            Reply::raw(200, body),
        );
        let action = w.reconcile_with(ctx.clone()).await.unwrap();
        assert_eq!(
            ready(&w.s, "livytokens", NAME).unwrap().1,
            "ProviderError",
            "{body}"
        );
        w.assert_secret_valid(body);
        assert_eq!(
            w.emr.count("CreateLivyComputeToken"),
            creates,
            "{body}: nothing is created on the strength of an answer that lists nothing"
        );
        w.clock.advance(requeue(&action).unwrap());
    }
    w.recover(Phase::Rotate, "after empty List answers").await;
    w.assert_final(Phase::Rotate, 1, "after empty List answers");
}
