//! A scriptable provider endpoint on loopback for fault injection, written on raw TCP so that
//! it can fail the way networks fail: answer with any status, headers and bytes (malformed,
//! truncated or empty JSON), wait longer than the client's timeout, reset the connection after
//! reading the request, or promise a body and close half-way through it. It can also forward
//! requests unchanged to another server (the signature-checking fake EMR) and fail only some.
//!
//! Every answer carries `connection: close`, so every request arrives on a new connection and
//! a fault can hit any single request. Every request is recorded with its arrival time
//! (`Instant`), and the number of requests in flight is tracked, so tests can measure rates
//! and concurrency from the server's own point of view.
#![allow(dead_code)]

use serde_json::Value;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A request as received.
#[derive(Clone, Debug)]
pub struct Req {
    pub method: String,
    /// Path without the query.
    pub path: String,
    /// Raw query (without `?`), possibly empty.
    pub query: String,
    /// Headers, names in lower case.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Req {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// A query parameter, percent-decoded.
    pub fn query_param(&self, key: &str) -> Option<String> {
        url::form_urlencoded::parse(self.query.as_bytes())
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.into_owned())
    }

    /// A field of an `application/x-www-form-urlencoded` body.
    pub fn form(&self, key: &str) -> Option<String> {
        url::form_urlencoded::parse(&self.body)
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.into_owned())
    }
}

/// What to answer.
#[derive(Clone, Debug)]
pub enum Reply {
    /// A complete HTTP response.
    Http {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    /// Read the request, then reset the connection (RST) without answering.
    Reset,
    /// A 200 response head promising a 4 kB JSON body, a few bytes of it, then the
    /// connection is closed.
    HalfResponse,
    /// Wait, then answer (a delay beyond the client's timeout is a timeout).
    Delay(Duration, Box<Reply>),
    /// Pass the request to the upstream server unchanged and relay its answer.
    Forward,
    /// Pass the request upstream (it takes effect), then reset the connection: the answer is
    /// lost.
    Lost,
    /// Never answer, as a process frozen (or killed) at this request would see it: with
    /// `forward`, the request is passed upstream first (it takes effect, its answer is lost);
    /// then `notify` is told.
    Hang {
        forward: bool,
        notify: Arc<tokio::sync::Notify>,
    },
}

impl Reply {
    pub fn json(status: u16, body: Value) -> Self {
        Self::Http {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: body.to_string().into_bytes(),
        }
    }

    /// A response with this exact body (e.g. malformed or truncated JSON, or nothing).
    pub fn raw(status: u16, body: &str) -> Self {
        Self::Http {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: body.as_bytes().to_vec(),
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        if let Self::Http { headers, .. } = &mut self {
            headers.push((name.to_ascii_lowercase(), value.into()));
        }
        self
    }

    pub fn delayed(self, d: Duration) -> Self {
        Self::Delay(d, Box::new(self))
    }
}

/// One request the stub received.
#[derive(Clone, Debug)]
pub struct Record {
    pub method: String,
    pub path: String,
    pub query: String,
    /// When the request was read completely.
    pub at: Instant,
    /// Whether an injected fault answered it.
    pub faulted: bool,
}

type Handler = Arc<dyn Fn(&Req) -> Reply + Send + Sync>;
type Interceptor = Arc<dyn Fn(&Req) -> Option<Reply> + Send + Sync>;
type Matcher = Arc<dyn Fn(&Req) -> bool + Send + Sync>;

struct Fault {
    matches: Matcher,
    reply: Reply,
    /// `None`: until cleared.
    remaining: Option<usize>,
}

#[derive(Default)]
struct Inner {
    routes: Vec<(Matcher, Handler)>,
    faults: Vec<Fault>,
    calls: Vec<Record>,
    in_flight: usize,
    peak_in_flight: usize,
    upstream: Option<String>,
    intercept: Option<Interceptor>,
}

/// The stub server.
#[derive(Clone)]
pub struct Stub {
    pub addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
}

impl Stub {
    /// A stub answering 404 to everything until routes are added.
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let inner: Arc<Mutex<Inner>> = Arc::default();
        let state = inner.clone();
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                tokio::spawn(serve(sock, state.clone()));
            }
        });
        Self { addr, inner }
    }

    /// A stub in front of `upstream` (`host:port`): requests without a matching route or
    /// fault are forwarded.
    pub async fn forwarding(upstream: &str) -> Self {
        let s = Self::start().await;
        s.lock().upstream = Some(upstream.to_owned());
        s
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `http://127.0.0.1:<port>`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `127.0.0.1:<port>`, for the endpoint policy.
    pub fn host_port(&self) -> String {
        self.addr.to_string()
    }

    /// Answers requests with this method and exact path (routes are tried in order).
    pub fn route(
        &self,
        method: &str,
        path: &str,
        handler: impl Fn(&Req) -> Reply + Send + Sync + 'static,
    ) {
        let (m, p) = (method.to_owned(), path.to_owned());
        self.lock().routes.push((
            Arc::new(move |r: &Req| r.method == m && r.path == p),
            Arc::new(handler),
        ));
    }

    /// Answers matching requests with `reply` until [`Stub::clear_faults`].
    pub fn fault(&self, matches: impl Fn(&Req) -> bool + Send + Sync + 'static, reply: Reply) {
        self.lock().faults.push(Fault {
            matches: Arc::new(matches),
            reply,
            remaining: None,
        });
    }

    /// Answers the next `n` matching requests with `reply`.
    pub fn fault_times(
        &self,
        n: usize,
        matches: impl Fn(&Req) -> bool + Send + Sync + 'static,
        reply: Reply,
    ) {
        self.lock().faults.push(Fault {
            matches: Arc::new(matches),
            reply,
            remaining: Some(n),
        });
    }

    pub fn clear_faults(&self) {
        self.lock().faults.clear();
    }

    /// Sees every request first; a `Some` answer overrides faults and routes.
    pub fn intercept(&self, f: impl Fn(&Req) -> Option<Reply> + Send + Sync + 'static) {
        self.lock().intercept = Some(Arc::new(f));
    }

    pub fn clear_intercept(&self) {
        self.lock().intercept = None;
    }

    pub fn calls(&self) -> Vec<Record> {
        self.lock().calls.clone()
    }

    pub fn count(&self, pred: impl Fn(&Record) -> bool) -> usize {
        self.lock().calls.iter().filter(|r| pred(r)).count()
    }

    pub fn clear_calls(&self) {
        self.lock().calls.clear();
    }

    /// Most requests that were being answered at the same time.
    pub fn peak_in_flight(&self) -> usize {
        self.lock().peak_in_flight
    }
}

/// Any request.
pub fn any(_: &Req) -> bool {
    true
}

async fn serve(mut sock: TcpStream, inner: Arc<Mutex<Inner>>) {
    let Some((req, raw)) = read_request(&mut sock).await else {
        return;
    };
    let (reply, upstream) = {
        let mut i = inner.lock().unwrap_or_else(|e| e.into_inner());
        let mut fault = i.intercept.as_ref().and_then(|f| f(&req));
        if fault.is_none() {
            fault = i.faults.iter_mut().find(|f| (f.matches)(&req)).map(|f| {
                if let Some(n) = f.remaining.as_mut() {
                    *n -= 1;
                }
                f.reply.clone()
            });
            i.faults.retain(|f| f.remaining != Some(0));
        }
        let faulted = fault.is_some();
        let reply = fault.unwrap_or_else(|| {
            match i
                .routes
                .iter()
                .find(|(m, _)| m(&req))
                .map(|(_, h)| h.clone())
            {
                Some(h) => h(&req),
                None if i.upstream.is_some() => Reply::Forward,
                None => Reply::raw(404, r#"{"message":"no route in the stub"}"#),
            }
        });
        i.calls.push(Record {
            method: req.method.clone(),
            path: req.path.clone(),
            query: req.query.clone(),
            at: Instant::now(),
            faulted,
        });
        i.in_flight += 1;
        i.peak_in_flight = i.peak_in_flight.max(i.in_flight);
        (reply, i.upstream.clone())
    };
    answer(&mut sock, reply, &raw, upstream.as_deref()).await;
    inner.lock().unwrap_or_else(|e| e.into_inner()).in_flight -= 1;
}

async fn answer(sock: &mut TcpStream, mut reply: Reply, raw: &[u8], upstream: Option<&str>) {
    loop {
        match reply {
            Reply::Delay(d, inner) => {
                tokio::time::sleep(d).await;
                reply = *inner;
            }
            Reply::Http {
                status,
                headers,
                body,
            } => {
                let mut out = format!("HTTP/1.1 {status} Stub\r\n");
                for (k, v) in &headers {
                    out.push_str(&format!("{k}: {v}\r\n"));
                }
                out.push_str(&format!(
                    "content-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                ));
                let mut bytes = out.into_bytes();
                bytes.extend_from_slice(&body);
                let _ = sock.write_all(&bytes).await;
                let _ = sock.shutdown().await;
                return;
            }
            Reply::Reset => {
                reset_on_drop(sock);
                return;
            }
            Reply::HalfResponse => {
                let head = "HTTP/1.1 200 Stub\r\ncontent-type: application/json\r\n\
                            content-length: 4096\r\nconnection: close\r\n\r\n{\"value\": [{\"id\": ";
                let _ = sock.write_all(head.as_bytes()).await;
                let _ = sock.flush().await;
                reset_on_drop(sock);
                return;
            }
            Reply::Lost => {
                if let Some(upstream) = upstream {
                    let _ = relay(upstream, raw).await;
                }
                reset_on_drop(sock);
                return;
            }
            Reply::Hang { forward, notify } => {
                if forward && let Some(upstream) = upstream {
                    let _ = relay(upstream, raw).await;
                }
                notify.notify_one();
                // Hold the connection open until the test ends.
                tokio::time::sleep(Duration::from_secs(3600)).await;
                return;
            }
            Reply::Forward => {
                let Some(upstream) = upstream else {
                    reply = Reply::raw(502, "{}");
                    continue;
                };
                let Some(response) = relay(upstream, raw).await else {
                    reply = Reply::raw(502, "{}");
                    continue;
                };
                let _ = sock.write_all(&response).await;
                let _ = sock.shutdown().await;
                return;
            }
        }
    }
}

/// Sends a raw request upstream and reads the whole answer (the upstream closes the
/// connection after it, as the request says `connection: close`).
async fn relay(upstream: &str, raw: &[u8]) -> Option<Vec<u8>> {
    let mut up = TcpStream::connect(upstream).await.ok()?;
    up.write_all(raw).await.ok()?;
    let mut response = Vec::new();
    up.read_to_end(&mut response).await.ok()?;
    Some(response)
}

/// Makes dropping the socket send a TCP reset instead of an orderly close. (With a zero
/// linger time the drop does not block, which is why tokio deprecates the general setter.)
#[allow(deprecated)]
fn reset_on_drop(sock: &TcpStream) {
    let _ = sock.set_linger(Some(Duration::ZERO));
}

/// Reads one request; returns it and its raw bytes rewritten with `connection: close` (for
/// forwarding).
async fn read_request(sock: &mut TcpStream) -> Option<(Req, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p;
        }
        let n = sock.read(&mut chunk).await.ok()?;
        if n == 0 || buf.len() > 1 << 20 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let method = first.next()?.to_owned();
    let target = first.next()?.to_owned();
    let version = first.next().unwrap_or("HTTP/1.1").to_owned();
    let mut headers = Vec::new();
    for line in lines {
        if let Some((k, v)) = line.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
    }
    let length: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < length {
        let n = sock.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    body.truncate(length);
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_owned(), q.to_owned()),
        None => (target.clone(), String::new()),
    };
    let mut raw = format!("{method} {target} {version}\r\n");
    for (k, v) in &headers {
        if k != "connection" {
            raw.push_str(&format!("{k}: {v}\r\n"));
        }
    }
    raw.push_str("connection: close\r\n\r\n");
    let mut raw = raw.into_bytes();
    raw.extend_from_slice(&body);
    Some((
        Req {
            method,
            path,
            query,
            headers,
            body,
        },
        raw,
    ))
}
