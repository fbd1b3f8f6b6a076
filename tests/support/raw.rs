//! A **raw-TCP stand-in Better Auth** that fails the ways a real one can, and timed checks
//! through both transports, for the fault tests (`faults.rs`, `faults_load.rs`, which include
//! this file with `#[path]` next to `mod support;`).
//!
//! axum cannot misbehave at the byte level, so this stand-in is **raw TCP**: [`Raw`] reads
//! each request head itself and answers per its current [`Mode`]. It runs on its own runtime
//! in its own thread, so that the test runtime's task count is the service's (and the test
//! clients') alone, and it counts the connections it holds open: after a fault every connection
//! the service gave up on must be closed, not left dangling.

// Each fault test file uses part of this, as with `support`.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use reqwest::Method;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use crate::support::*;

/// `AUTHZ_UPSTREAM_TIMEOUT_MS` for every fault test.
pub const DEADLINE: Duration = Duration::from_millis(300);
/// Scheduling slack on a shared 2-core machine on top of [`DEADLINE`].
pub const MARGIN: Duration = Duration::from_millis(400);
/// What the 100 MB stand-in offers to send.
const HUGE_BYTES: u64 = 100 * 1024 * 1024;

// ------------------------------------------------------------------------------------------
// The raw-TCP stand-in Better Auth
// ------------------------------------------------------------------------------------------

/// How the stand-in answers `GET /api/auth/get-session` (`/api/auth/ok` always answers 200).
#[derive(Clone, Debug)]
pub enum Mode {
    /// 200 with an unexpired session for this user id; keep-alive.
    Valid(String),
    /// This status with a `null` body; keep-alive.
    Status(u16),
    /// 302 to this URL; keep-alive.
    Redirect(String),
    /// Read the request, never answer; hold the connection until the client closes it.
    Silent,
    /// Answer `Valid("u1")` after this long (unless the client hangs up first).
    Slow(Duration),
    /// Status line and headers announcing 1000 bytes, 500 of them, then close.
    HalfBodyThenClose,
    /// Status line and headers announcing 1000 bytes, 500 of them, then hold the connection.
    HalfBodyThenHang,
    /// 200 with a 100 MB body streamed in 64 KiB writes: with `Content-Length` when
    /// `declared`, else chunked.
    Huge { declared: bool },
    /// A status line, then header lines forever (never the blank line).
    EndlessHeaders,
    /// Read the request, then close without a byte.
    CloseAtOnce,
}

impl Mode {
    /// Whether the client must give the connection up (it cannot go back to the pool).
    pub fn breaks_connections(&self) -> bool {
        !matches!(self, Mode::Valid(_) | Mode::Status(_) | Mode::Redirect(_))
    }
}

pub struct Shared {
    mode: Mutex<Mode>,
    /// Connections accepted and not yet closed by the stand-in.
    live: AtomicUsize,
    pub accepted: AtomicUsize,
    session_calls: AtomicUsize,
    /// Body bytes the 100 MB mode managed to write before the client hung up.
    pub huge_written: AtomicU64,
}

/// A raw-TCP stand-in Better Auth on its own runtime and thread.
pub struct Raw {
    addr: SocketAddr,
    pub shared: Arc<Shared>,
    runtime: tokio::runtime::Handle,
    /// Cancels the current listener and every connection it accepted ("down").
    generation: Mutex<Option<CancellationToken>>,
    stop: Option<oneshot::Sender<()>>,
}

impl Raw {
    pub async fn start(mode: Mode) -> Raw {
        Raw::start_on("127.0.0.1", mode).await
    }

    pub async fn start_on(ip: &str, mode: Mode) -> Raw {
        better_authz::better_auth::install_crypto_provider();
        let (handle_tx, handle_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = oneshot::channel::<()>();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            handle_tx.send(rt.handle().clone()).unwrap();
            rt.block_on(async {
                let _ = stopped.await;
            });
        });
        let runtime = handle_rx.recv().unwrap();
        let mut raw = Raw {
            addr: format!("{ip}:0").parse().unwrap(),
            shared: Arc::new(Shared {
                mode: Mutex::new(mode),
                live: AtomicUsize::new(0),
                accepted: AtomicUsize::new(0),
                session_calls: AtomicUsize::new(0),
                huge_written: AtomicU64::new(0),
            }),
            runtime,
            generation: Mutex::new(None),
            stop: Some(stop),
        };
        raw.addr = raw.up().await;
        raw
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn set(&self, mode: Mode) {
        *self.shared.mode.lock().unwrap() = mode;
    }

    pub fn live(&self) -> usize {
        self.shared.live.load(Ordering::SeqCst)
    }

    pub fn session_calls(&self) -> usize {
        self.shared.session_calls.load(Ordering::SeqCst)
    }

    /// Listen (again) on the same address. Returns once the listener is bound.
    pub async fn up(&self) -> SocketAddr {
        let token = CancellationToken::new();
        let (bound_tx, bound_rx) = oneshot::channel();
        let (addr, shared, t) = (self.addr, self.shared.clone(), token.clone());
        self.runtime.spawn(async move {
            let listener = (|| {
                let socket = TcpSocket::new_v4()?;
                socket.set_reuseaddr(true)?;
                socket.bind(addr)?;
                socket.listen(1024)
            })();
            let listener = match listener {
                Ok(l) => l,
                Err(e) => {
                    let _ = bound_tx.send(Err(e));
                    return;
                }
            };
            let _ = bound_tx.send(Ok(listener.local_addr().unwrap()));
            loop {
                tokio::select! {
                    biased;
                    () = t.cancelled() => return, // drops the listener: connections refused
                    accepted = listener.accept() => {
                        if let Ok((stream, _)) = accepted {
                            shared.accepted.fetch_add(1, Ordering::SeqCst);
                            shared.live.fetch_add(1, Ordering::SeqCst);
                            tokio::spawn(connection(stream, shared.clone(), t.clone()));
                        }
                    }
                }
            }
        });
        let addr = bound_rx
            .await
            .expect("stand-in runtime alive")
            .expect("stand-in binds its port again");
        *self.generation.lock().unwrap() = Some(token);
        addr
    }

    /// Stop listening and close every connection, as a crashed Better Auth would.
    pub async fn down(&self) {
        if let Some(token) = self.generation.lock().unwrap().take() {
            token.cancel();
        }
        // Let the stand-in's runtime drop the listener and the connections.
        for _ in 0..200 {
            if self.live() == 0 && TcpStream::connect(self.addr).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        panic!("stand-in did not go down");
    }
}

impl Drop for Raw {
    fn drop(&mut self) {
        if let Some(token) = self.generation.lock().unwrap().take() {
            token.cancel();
        }
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Decrements the live count however the connection task ends.
struct LiveGuard(Arc<Shared>);

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.0.live.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn connection(mut stream: TcpStream, shared: Arc<Shared>, stop: CancellationToken) {
    let _live = LiveGuard(shared.clone());
    tokio::select! {
        biased;
        () = stop.cancelled() => {}
        () = serve(&mut stream, &shared, &stop) => {}
    }
}

/// Serve requests on one connection until the mode ends it or the client closes it.
async fn serve(stream: &mut TcpStream, shared: &Shared, stop: &CancellationToken) {
    let mut buf = Vec::new();
    loop {
        let Some(path) = read_head(stream, &mut buf).await else {
            return;
        };
        if path.starts_with("/api/auth/ok") {
            if write(
                stream,
                &answer(200, "application/json", r#"{"ok":true}"#, &[]),
            )
            .await
            .is_err()
            {
                return;
            }
            continue;
        }
        shared.session_calls.fetch_add(1, Ordering::SeqCst);
        let mode = shared.mode.lock().unwrap().clone();
        let bytes = match mode {
            Mode::Valid(user) => session(&user),
            Mode::Status(status) => answer(status, "application/json", "null", &[]),
            Mode::Redirect(location) => answer(302, "text/plain", "", &[("location", &location)]),
            Mode::Silent => return drain(stream).await,
            Mode::Slow(delay) => {
                if !wait_unless_closed(stream, delay).await {
                    return;
                }
                session("u1")
            }
            Mode::HalfBodyThenClose | Mode::HalfBodyThenHang => {
                let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                            content-length: 1000\r\n\r\n";
                let mut bytes = head.as_bytes().to_vec();
                bytes.extend_from_slice(&[b' '; 500]);
                if write(stream, &bytes).await.is_ok() && matches!(mode, Mode::HalfBodyThenHang) {
                    drain(stream).await;
                }
                return;
            }
            Mode::Huge { declared } => return stream_huge(stream, shared, declared).await,
            Mode::EndlessHeaders => {
                let _ = write(stream, b"HTTP/1.1 200 OK\r\n").await;
                let line = format!("x-pad: {}\r\n", "a".repeat(1000));
                for _ in 0..200_000 {
                    if write(stream, line.as_bytes()).await.is_err() {
                        return;
                    }
                }
                return;
            }
            Mode::CloseAtOnce => return,
        };
        // A Better Auth that went down answers nothing, even to a request read just before.
        if stop.is_cancelled() || write(stream, &bytes).await.is_err() {
            return;
        }
    }
}

/// Read one request head (GET, no body); `None` on EOF or error. Returns the request path.
async fn read_head(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<String> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            buf.drain(..end + 4);
            return Some(head.split(' ').nth(1).unwrap_or("").to_owned());
        }
        if buf.len() > 64 * 1024 {
            return None;
        }
        let mut chunk = [0u8; 4096];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

async fn write(stream: &mut TcpStream, bytes: &[u8]) -> std::io::Result<()> {
    stream.write_all(bytes).await
}

/// Hold the connection, discarding anything sent, until the client closes it.
async fn drain(stream: &mut TcpStream) {
    let mut chunk = [0u8; 4096];
    while let Ok(n) = stream.read(&mut chunk).await {
        if n == 0 {
            return;
        }
    }
}

/// Sleep `delay`, returning `false` early if the client hangs up meanwhile.
async fn wait_unless_closed(stream: &mut TcpStream, delay: Duration) -> bool {
    tokio::select! {
        () = tokio::time::sleep(delay) => true,
        () = drain(stream) => false,
    }
}

async fn stream_huge(stream: &mut TcpStream, shared: &Shared, declared: bool) {
    let head = if declared {
        format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {HUGE_BYTES}\r\n\r\n"
        )
    } else {
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n"
            .to_owned()
    };
    if write(stream, head.as_bytes()).await.is_err() {
        return;
    }
    // One 64 KiB buffer, written again and again: the stand-in itself stays small.
    let block = vec![b'x'; 64 * 1024];
    let chunk_head = format!("{:x}\r\n", block.len());
    let mut sent = 0u64;
    while sent < HUGE_BYTES {
        let ok = if declared {
            write(stream, &block).await.is_ok()
        } else {
            write(stream, chunk_head.as_bytes()).await.is_ok()
                && write(stream, &block).await.is_ok()
                && write(stream, b"\r\n").await.is_ok()
        };
        if !ok {
            break;
        }
        sent += block.len() as u64;
        shared.huge_written.store(sent, Ordering::SeqCst);
    }
    if sent >= HUGE_BYTES && !declared {
        let _ = write(stream, b"0\r\n\r\n").await;
    }
}

fn answer(status: u16, content_type: &str, body: &str, extra: &[(&str, &str)]) -> Vec<u8> {
    let mut head = format!(
        "HTTP/1.1 {status} Whatever\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (name, value) in extra {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    head.push_str(body);
    head.into_bytes()
}

fn session(user: &str) -> Vec<u8> {
    let expires = time::OffsetDateTime::now_utc() + time::Duration::hours(1);
    let expires = expires
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let body = serde_json::json!({
        "session": {"id": "s1", "userId": user, "token": TOKEN, "expiresAt": expires},
        "user": {"id": user, "email": format!("{user}@example.com"), "name": format!("User {user}")},
    });
    answer(200, "application/json", &body.to_string(), &[])
}

// ------------------------------------------------------------------------------------------
// Checks through both transports, timed
// ------------------------------------------------------------------------------------------

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Via {
    Grpc,
    Http,
}

pub const BOTH: [Via; 2] = [Via::Grpc, Via::Http];

/// One answered check.
#[derive(Debug)]
pub struct Checked {
    pub status: u16,
    pub code: String,
    pub detail: String,
    pub user: Option<String>,
    pub elapsed: Duration,
}

/// Clients for both transports, created before any timing starts.
pub struct Clients {
    grpc: AuthorizationClient<Channel>,
    http: reqwest::Client,
    http_url: String,
}

impl Clients {
    pub async fn new(service: &Service) -> Clients {
        Clients {
            grpc: service.grpc_client().await,
            http: reqwest::Client::new(),
            http_url: service.http_url(),
        }
    }

    pub async fn check(&mut self, via: Via, path: &str, cookie: &str) -> Checked {
        let start = Instant::now();
        match via {
            Via::Grpc => {
                let check = envoy_check("GET", path, &[("cookie", cookie)]);
                let resp = self
                    .grpc
                    .check(check)
                    .await
                    .unwrap_or_else(|s| panic!("a decision is an OK gRPC response, got {s:?}"))
                    .into_inner();
                let elapsed = start.elapsed();
                let a = flatten(resp);
                assert_eq!(
                    a.grpc_code == 0,
                    a.http_status == 200,
                    "gRPC code {} vs status {}",
                    a.grpc_code,
                    a.http_status
                );
                Checked {
                    status: u16::try_from(a.http_status).unwrap(),
                    code: a.error_code().to_owned(),
                    detail: a.body["detail"].as_str().unwrap_or("").to_owned(),
                    user: a.header("x-user-id").map(str::to_owned),
                    elapsed,
                }
            }
            Via::Http => {
                let headers = [("x-original-uri", path), ("cookie", cookie)];
                let a = auth_request(&self.http, Method::GET, &self.http_url, &headers).await;
                let elapsed = start.elapsed();
                let v = if a.status == 200 {
                    serde_json::Value::Null
                } else {
                    a.json()
                };
                Checked {
                    status: a.status,
                    code: v["error_code"].as_str().unwrap_or("").to_owned(),
                    detail: v["detail"].as_str().unwrap_or("").to_owned(),
                    user: a.header("x-user-id").map(str::to_owned),
                    elapsed,
                }
            }
        }
    }
}

pub fn args(url: &str) -> better_authz::config::Args {
    let mut args = base_args(url);
    args.upstream_timeout_ms = Some(DEADLINE.as_millis().to_string());
    args
}

/// Session lookups in flight, as the service exports them.
pub async fn inflight(service: &Service) -> f64 {
    service.metric("better_authz_better_auth_inflight").await
}

/// Poll until Better Auth answers a valid session through both transports; returns how long
/// that took. Bounded: panics after `within`.
pub async fn recovers(clients: &mut Clients, within: Duration) -> Duration {
    let start = Instant::now();
    let cookie = session_cookie();
    for via in BOTH {
        loop {
            let c = clients.check(via, "/api/u1/tasks", &cookie).await;
            if c.status == 200 {
                assert_eq!(c.user.as_deref(), Some("u1"), "{via:?}");
                break;
            }
            assert!(
                start.elapsed() < within,
                "{via:?}: still {} {} after {:?}",
                c.status,
                c.code,
                start.elapsed()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    start.elapsed()
}
