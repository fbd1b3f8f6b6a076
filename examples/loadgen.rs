//! Load generator and stand-in Better Auth for the benchmark (`bench/run.sh`, `BENCHMARKS.md`).
//!
//! ```text
//! loadgen http    --url URL --users FILE [--concurrency 32] [--duration 20] [--warmup 5] [--watch name=PID,...]
//! loadgen grpc    --addr HOST:PORT --users FILE [--path /api/{user_id}/tasks] [--connections 2] [...]
//! loadgen standin [--listen 127.0.0.1:0]
//! ```
//!
//! * `http`: closed loop of `--concurrency` workers, each with its own kept-alive HTTP/1.1
//!   connection, `GET URL` with the `Cookie` header of the next user (users are rotated round
//!   robin over all workers). `{user_id}` in the URL is replaced by that user's id.
//! * `grpc`: the same loop, but Envoy-style ext_authz v3 `Check` calls straight at better-authz
//!   (the `CheckRequest` Envoy builds: method, path, host, scheme, lower-cased headers, source
//!   address), over `--connections` HTTP/2 connections (Envoy keeps one per worker thread).
//! * `standin`: a **stand-in Better Auth** that answers `GET /api/auth/get-session` at once with a
//!   fixed valid session (and `/api/auth/ok`), to measure better-authz's own cost. It is not
//!   Better Auth: it checks nothing.
//!
//! The users file has one user per line: `USER_ID<TAB>COOKIE_HEADER`.
//!
//! With `--rate R` the load is open loop instead: request `i` is due at `start + i / R`. When a
//! worker takes a request that is already overdue (every worker was busy), its latency is counted
//! from the due time, so a stalled server is charged for the requests it delayed (no coordinated
//! omission); otherwise from when it is sent. `--concurrency` is the most requests in flight.
//!
//! Requests completing during the first `--warmup` seconds are not counted; then requests are
//! counted for `--duration` seconds. At the two boundaries the CPU time (utime + stime from
//! `/proc/PID/stat`) of every `--watch` process is read, and at the end its `VmHWM`/`VmRSS`, so
//! CPU per request covers exactly the measured window. One JSON object is printed on stdout.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use envoy_types::ext_authz::v3::pb::{CheckRequest, HttpResponse};
use envoy_types::pb::envoy::config::core::v3::{
    Address, SocketAddress, address, socket_address::PortSpecifier,
};
use envoy_types::pb::envoy::service::auth::v3::AttributeContext;
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Peer, Request};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use serde_json::{Value, json};

/// The fixed session the stand-in returns (valid until 2099).
const STANDIN_SESSION: &str = r#"{"session":{"expiresAt":"2099-01-01T00:00:00.000Z","id":"s","userId":"u1","token":"t","createdAt":"2025-01-01T00:00:00.000Z","updatedAt":"2025-01-01T00:00:00.000Z","ipAddress":"","userAgent":""},"user":{"id":"u1","email":"u1@example.com","name":"U","emailVerified":false,"image":null}}"#;

const USAGE: &str = "usage:
  loadgen http    --url URL --users FILE [options]
  loadgen grpc    --addr HOST:PORT --users FILE [--path /api/{user_id}/tasks] [--connections N] [options]
  loadgen standin [--listen 127.0.0.1:0]
options: --concurrency N (32)  --duration SECS (20)  --warmup SECS (5)  --timeout-ms MS (10000)
         --rate PER_SEC (open loop; default: closed loop)  --threads N (CPUs allowed)
         --header 'Name: value' (http, repeatable; {user_id} in the value is the user's id)
         --watch name=PID[+PID...],...  --label TEXT";

struct Opts {
    mode: String,
    url: Option<String>,
    addr: Option<String>,
    path: String,
    users: Option<String>,
    concurrency: usize,
    duration: f64,
    warmup: f64,
    timeout: Duration,
    threads: Option<usize>,
    connections: usize,
    rate: Option<f64>,
    headers: Vec<(String, String)>,
    listen: String,
    watch: Vec<(String, Vec<u32>)>,
    label: Option<String>,
}

fn parse_opts() -> Result<Opts, String> {
    let mut args = std::env::args().skip(1);
    let mode = args.next().ok_or("missing mode")?;
    if mode == "-h" || mode == "--help" {
        println!("{USAGE}");
        std::process::exit(0);
    }
    if !matches!(mode.as_str(), "http" | "grpc" | "standin") {
        return Err(format!("unknown mode {mode:?}"));
    }
    let mut o = Opts {
        mode,
        url: None,
        addr: None,
        path: "/api/{user_id}/tasks".into(),
        users: None,
        concurrency: 32,
        duration: 20.0,
        warmup: 5.0,
        timeout: Duration::from_secs(10),
        threads: None,
        connections: 2,
        rate: None,
        headers: Vec::new(),
        listen: "127.0.0.1:0".into(),
        watch: Vec::new(),
        label: None,
    };
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or(format!("{flag} needs a value"));
        let num = |v: String| {
            v.parse::<f64>()
                .map_err(|_| format!("{flag}: not a number: {v}"))
        };
        match flag.as_str() {
            "--url" => o.url = Some(value()?),
            "--addr" => o.addr = Some(value()?),
            "--path" => o.path = value()?,
            "--users" => o.users = Some(value()?),
            "--concurrency" => o.concurrency = num(value()?)? as usize,
            "--duration" => o.duration = num(value()?)?,
            "--warmup" => o.warmup = num(value()?)?,
            "--timeout-ms" => o.timeout = Duration::from_millis(num(value()?)? as u64),
            "--threads" => o.threads = Some(num(value()?)? as usize),
            "--connections" => o.connections = (num(value()?)? as usize).max(1),
            "--listen" => o.listen = value()?,
            "--header" => {
                let h = value()?;
                let (name, val) = h
                    .split_once(':')
                    .ok_or(format!("--header: expected 'Name: value', got {h:?}"))?;
                o.headers
                    .push((name.trim().to_string(), val.trim().to_string()));
            }
            "--rate" => o.rate = Some(num(value()?)?).filter(|r| *r > 0.0),
            "--label" => o.label = Some(value()?),
            "--watch" => {
                for item in value()?.split(',').filter(|s| !s.is_empty()) {
                    let (name, pids) = item
                        .split_once('=')
                        .ok_or(format!("--watch: expected name=PID, got {item:?}"))?;
                    let pids = pids
                        .split('+')
                        .map(|p| {
                            p.parse::<u32>()
                                .map_err(|_| format!("--watch: bad pid {p:?}"))
                        })
                        .collect::<Result<Vec<_>, _>>()?;
                    o.watch.push((name.to_string(), pids));
                }
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown option {other:?}")),
        }
    }
    if o.concurrency == 0 || o.duration <= 0.0 || o.warmup < 0.0 {
        return Err("--concurrency and --duration must be positive".into());
    }
    Ok(o)
}

fn main() {
    let opts = match parse_opts() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("loadgen: {e}\n{USAGE}");
            std::process::exit(2);
        }
    };
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    rt.enable_all();
    if let Some(n) = opts.threads {
        rt.worker_threads(n.max(1));
    }
    let rt = rt.build().expect("tokio runtime");
    let code = rt.block_on(async move {
        match opts.mode.as_str() {
            "standin" => standin(&opts.listen).await,
            _ => match load(opts).await {
                Ok(report) => {
                    println!("{report}");
                    0
                }
                Err(e) => {
                    eprintln!("loadgen: {e}");
                    1
                }
            },
        }
    });
    std::process::exit(code);
}

// --- stand-in Better Auth ---------------------------------------------------------------------------------

async fn standin(listen: &str) -> i32 {
    use axum::http::header::CONTENT_TYPE;
    use axum::routing::get;
    let app = axum::Router::new()
        .route(
            "/api/auth/get-session",
            get(|| async { ([(CONTENT_TYPE, "application/json")], STANDIN_SESSION) }),
        )
        .route(
            "/api/auth/ok",
            get(|| async { ([(CONTENT_TYPE, "application/json")], r#"{"ok":true}"#) }),
        );
    let listener = match tokio::net::TcpListener::bind(listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("loadgen standin: cannot listen on {listen}: {e}");
            return 1;
        }
    };
    // The orchestrator reads this line to learn the port.
    println!(
        "stand-in Better Auth listening on http://{}",
        listener.local_addr().unwrap()
    );
    if let Err(e) = axum::serve(listener, app).await {
        eprintln!("loadgen standin: {e}");
        return 1;
    }
    0
}

// --- load -------------------------------------------------------------------------------------------------

struct User {
    id: String,
    cookie: String,
}

fn read_users(path: &str) -> Result<Vec<User>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}"))?;
    let users: Vec<User> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let (id, cookie) = l.split_once('\t').unwrap_or(("", l));
            User {
                id: id.to_string(),
                cookie: cookie.to_string(),
            }
        })
        .collect();
    if users.is_empty() {
        return Err(format!("{path}: no users"));
    }
    Ok(users)
}

/// What one worker saw during the measured window.
#[derive(Default)]
struct Tally {
    latencies_us: Vec<u32>,
    statuses: BTreeMap<String, u64>,
    errors: BTreeMap<String, u64>,
}

impl Tally {
    fn merge(&mut self, other: Tally) {
        self.latencies_us.extend(other.latencies_us);
        for (k, v) in other.statuses {
            *self.statuses.entry(k).or_default() += v;
        }
        for (k, v) in other.errors {
            *self.errors.entry(k).or_default() += v;
        }
    }
}

/// One request's result: an HTTP status (for gRPC, the status the check decided) or an error kind.
type Outcome = Result<u16, String>;

#[derive(Clone)]
enum Target {
    Http {
        url: String,
        headers: Arc<Vec<(String, String)>>,
    },
    Grpc {
        channels: Vec<AuthorizationClient<tonic::transport::Channel>>,
        path: String,
    },
}

async fn load(opts: Opts) -> Result<Value, String> {
    better_authz::better_auth::install_crypto_provider();
    let users = Arc::new(read_users(
        opts.users.as_deref().ok_or("--users is required")?,
    )?);
    let target = match opts.mode.as_str() {
        "http" => Target::Http {
            url: opts.url.clone().ok_or("--url is required")?,
            headers: Arc::new(opts.headers.clone()),
        },
        _ => {
            let addr = opts.addr.clone().ok_or("--addr is required")?;
            let mut channels = Vec::new();
            for _ in 0..opts.connections {
                let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
                    .map_err(|e| e.to_string())?
                    .tcp_nodelay(true)
                    .connect()
                    .await
                    .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
                channels.push(AuthorizationClient::new(channel));
            }
            Target::Grpc {
                channels,
                path: opts.path.clone(),
            }
        }
    };

    let start = Instant::now();
    let measure_from = start + Duration::from_secs_f64(opts.warmup);
    let measure_to = measure_from + Duration::from_secs_f64(opts.duration);
    let next_user = Arc::new(AtomicUsize::new(0));
    let next_slot = Arc::new(AtomicUsize::new(0));
    let rate = opts.rate;

    let mut workers = Vec::new();
    for worker in 0..opts.concurrency {
        let target = target.clone();
        let users = users.clone();
        let next_user = next_user.clone();
        let next_slot = next_slot.clone();
        let timeout = opts.timeout;
        workers.push(tokio::spawn(async move {
            let mut tally = Tally {
                latencies_us: Vec::with_capacity(1 << 16),
                ..Default::default()
            };
            // One kept-alive connection per worker, like wrk.
            let http = match &target {
                Target::Http { .. } => Some(
                    reqwest::Client::builder()
                        .pool_max_idle_per_host(1)
                        .tcp_nodelay(true)
                        .http1_only()
                        .redirect(reqwest::redirect::Policy::none())
                        .build()
                        .expect("reqwest client"),
                ),
                Target::Grpc { .. } => None,
            };
            loop {
                let sent = match rate {
                    None => Instant::now(),
                    Some(rate) => {
                        // Open loop: the next due slot, whoever is free takes it.
                        let slot = next_slot.fetch_add(1, Ordering::Relaxed);
                        let due = start + Duration::from_secs_f64(slot as f64 / rate);
                        if due >= measure_to {
                            break;
                        }
                        if due > Instant::now() {
                            // Ahead of schedule: wait, and count from when we really send (tokio's
                            // timer wakes up to 1 ms late; that lag is ours, not the server's).
                            tokio::time::sleep_until(due.into()).await;
                            Instant::now()
                        } else {
                            // Behind schedule (every worker was busy): the server kept this
                            // request waiting since it was due.
                            due
                        }
                    }
                };
                if sent >= measure_to {
                    break;
                }
                let user = &users[next_user.fetch_add(1, Ordering::Relaxed) % users.len()];
                let outcome: Outcome = match &target {
                    Target::Http { url, headers } => {
                        http_once(http.as_ref().unwrap(), url, headers, user, timeout).await
                    }
                    Target::Grpc { channels, path } => {
                        let mut client = channels[worker % channels.len()].clone();
                        grpc_once(&mut client, path, user, timeout).await
                    }
                };
                let done = Instant::now();
                if outcome.is_err() && !matches!(&target, Target::Grpc { .. }) {
                    // After a transport error, do not spin: the server may be gone.
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                if done < measure_from || done > measure_to {
                    continue;
                }
                tally
                    .latencies_us
                    .push((done - sent).as_micros().min(u32::MAX as u128) as u32);
                match outcome {
                    Ok(status) => *tally.statuses.entry(status.to_string()).or_default() += 1,
                    Err(kind) => *tally.errors.entry(kind).or_default() += 1,
                }
            }
            tally
        }));
    }

    // CPU of the watched processes at the window's boundaries.
    let watch = opts.watch.clone();
    tokio::time::sleep_until(measure_from.into()).await;
    let cpu_before: Vec<f64> = watch.iter().map(|(_, p)| cpu_seconds(p)).collect();
    let self_before = cpu_seconds(&[std::process::id()]);
    let machine_before = machine_cpu_seconds();
    tokio::time::sleep_until(measure_to.into()).await;
    let cpu_after: Vec<f64> = watch.iter().map(|(_, p)| cpu_seconds(p)).collect();
    let self_after = cpu_seconds(&[std::process::id()]);
    let machine_after = machine_cpu_seconds();
    // Requests are counted when they complete inside the window, so the window is the divisor.
    let measured = opts.duration;

    let mut total = Tally::default();
    for w in workers {
        total.merge(w.await.map_err(|e| format!("worker panicked: {e}"))?);
    }
    let mut lat = std::mem::take(&mut total.latencies_us);
    lat.sort_unstable();
    let n = lat.len();
    let q = |p: f64| -> f64 {
        if n == 0 {
            return 0.0;
        }
        let idx = ((p * n as f64).ceil() as usize).clamp(1, n) - 1;
        lat[idx] as f64 / 1000.0
    };
    let mean = if n == 0 {
        0.0
    } else {
        lat.iter().map(|&v| v as f64).sum::<f64>() / n as f64 / 1000.0
    };
    let ok: u64 = total
        .statuses
        .iter()
        .filter(|(s, _)| s.starts_with('2'))
        .map(|(_, v)| v)
        .sum();
    let errors: u64 = total.errors.values().sum();
    let non_2xx: BTreeMap<&String, &u64> = total
        .statuses
        .iter()
        .filter(|(s, _)| !s.starts_with('2'))
        .collect();

    let mut procs = serde_json::Map::new();
    for (i, (name, pids)) in watch.iter().enumerate() {
        let (hwm, rss) = memory_kb(pids);
        let cpu = cpu_after[i] - cpu_before[i];
        procs.insert(
            name.clone(),
            json!({
                "pids": pids,
                "cpu_s": round(cpu, 3),
                "cpu_cores": round(cpu / measured, 3),
                "cpu_us_per_request": if n > 0 { round(cpu * 1e6 / n as f64, 1) } else { 0.0 },
                "vm_hwm_kb": hwm,
                "vm_rss_kb": rss,
            }),
        );
    }
    let self_cpu = self_after - self_before;
    let watched_cpu: f64 = cpu_after
        .iter()
        .zip(&cpu_before)
        .map(|(a, b)| a - b)
        .sum::<f64>()
        + self_cpu;
    let machine_cpu = machine_after.0 - machine_before.0;
    let steal = machine_after.1 - machine_before.1;
    procs.insert(
        "loadgen".into(),
        json!({
            "pids": [std::process::id()],
            "cpu_s": round(self_cpu, 3),
            "cpu_cores": round(self_cpu / measured, 3),
            "cpu_us_per_request": if n > 0 { round(self_cpu * 1e6 / n as f64, 1) } else { 0.0 },
        }),
    );

    Ok(json!({
        "label": opts.label,
        "mode": opts.mode,
        "target": match &target { Target::Http { url, .. } => url.clone(), Target::Grpc { .. } => opts.addr.clone().unwrap_or_default() },
        "concurrency": opts.concurrency,
        "rate": opts.rate,
        "connections": if opts.mode == "grpc" { Some(opts.connections) } else { None },
        "users": users.len(),
        "warmup_s": opts.warmup,
        "duration_s": measured,
        "requests": n,
        "ok": ok,
        "rps": round(n as f64 / measured, 1),
        "ok_rps": round(ok as f64 / measured, 1),
        "latency_ms": {
            "mean": round(mean, 3), "p50": q(0.50), "p90": q(0.90), "p95": q(0.95),
            "p99": q(0.99), "p999": q(0.999), "max": if n > 0 { lat[n - 1] as f64 / 1000.0 } else { 0.0 },
        },
        "errors": errors,
        "error_kinds": total.errors,
        "statuses": total.statuses,
        "non_2xx": non_2xx,
        "procs": procs,
        // Busy CPU of the whole machine during the window, and the part no watched process used
        // (other work on a shared machine, the kernel's softirq time, unwatched helpers).
        "machine": {
            "busy_cores": round(machine_cpu / measured, 3),
            "unwatched_cores": round((machine_cpu - watched_cpu) / measured, 3),
            "steal_cores": round(steal / measured, 3),
        },
    }))
}

async fn http_once(
    client: &reqwest::Client,
    url: &str,
    headers: &[(String, String)],
    user: &User,
    timeout: Duration,
) -> Outcome {
    let url = url.replace("{user_id}", &user.id);
    let call = async {
        let mut request = client
            .get(url)
            .header("cookie", &user.cookie)
            .header("accept", "application/json");
        for (name, value) in headers {
            if value.contains("{user_id}") {
                request = request.header(name.as_str(), value.replace("{user_id}", &user.id));
            } else {
                request = request.header(name.as_str(), value.as_str());
            }
        }
        let response = request.send().await.map_err(|e| classify(&e))?;
        let status = response.status().as_u16();
        response.bytes().await.map_err(|_| "body".to_string())?;
        Ok(status)
    };
    match tokio::time::timeout(timeout, call).await {
        Ok(outcome) => outcome,
        Err(_) => Err("timeout".into()),
    }
}

fn classify(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timeout".into()
    } else if e.is_connect() {
        "connect".into()
    } else {
        "transport".into()
    }
}

async fn grpc_once(
    client: &mut AuthorizationClient<tonic::transport::Channel>,
    path: &str,
    user: &User,
    timeout: Duration,
) -> Outcome {
    let request = envoy_check(&path.replace("{user_id}", &user.id), &user.cookie);
    match tokio::time::timeout(timeout, client.check(request)).await {
        Err(_) => Err("timeout".into()),
        Ok(Err(status)) => Err(format!("grpc_{:?}", status.code()).to_lowercase()),
        Ok(Ok(response)) => {
            let response = response.into_inner();
            match response.http_response {
                Some(HttpResponse::OkResponse(ok)) => {
                    // An allow must carry the identity; an allow without it would be a bug.
                    if ok
                        .headers
                        .iter()
                        .any(|h| h.header.as_ref().is_some_and(|hv| hv.key == "x-user-id"))
                    {
                        Ok(200)
                    } else {
                        Err("allow_without_identity".into())
                    }
                }
                Some(HttpResponse::DeniedResponse(denied)) => {
                    Ok(denied.status.map(|s| s.code as u16).unwrap_or(0))
                }
                _ => Err("empty_response".into()),
            }
        }
    }
}

/// A `CheckRequest` as Envoy builds it (like `tests/support/mod.rs`), with the headers Envoy's
/// `allowed_headers` in `envoy/envoy.yaml` would pass for a typical browser request.
fn envoy_check(path: &str, cookie: &str) -> CheckRequest {
    let mut headers = std::collections::HashMap::new();
    headers.insert("cookie".to_string(), cookie.to_string());
    headers.insert(
        "user-agent".to_string(),
        "better-authz-loadgen/1".to_string(),
    );
    headers.insert("x-forwarded-for".to_string(), "203.0.113.9".to_string());
    headers.insert(
        "x-request-id".to_string(),
        "0b1f2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d".to_string(),
    );
    CheckRequest {
        attributes: Some(AttributeContext {
            source: Some(Peer {
                address: Some(Address {
                    address: Some(address::Address::SocketAddress(SocketAddress {
                        address: "203.0.113.9".into(),
                        port_specifier: Some(PortSpecifier::PortValue(51234)),
                        ..Default::default()
                    })),
                }),
                ..Default::default()
            }),
            request: Some(Request {
                http: Some(HttpRequest {
                    method: "GET".into(),
                    path: path.into(),
                    host: "app.example".into(),
                    scheme: "http".into(),
                    protocol: "HTTP/1.1".into(),
                    headers,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}

// --- /proc ------------------------------------------------------------------------------------------------

/// utime + stime of these processes (all threads), in seconds.
fn cpu_seconds(pids: &[u32]) -> f64 {
    // USER_HZ is 100 on every Linux this runs on.
    const TICKS: f64 = 100.0;
    pids.iter()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok())
        .filter_map(|stat| {
            // The command name may contain spaces: fields start after the last ')'.
            let rest = &stat[stat.rfind(')')? + 2..];
            let fields: Vec<&str> = rest.split_whitespace().collect();
            // After ')': state is field 3, utime field 14, stime field 15 (1-based in proc(5)).
            let utime: f64 = fields.get(11)?.parse().ok()?;
            let stime: f64 = fields.get(12)?.parse().ok()?;
            Some((utime + stime) / TICKS)
        })
        .sum()
}

/// (busy, steal) CPU seconds of the whole machine, from `/proc/stat`: busy is user, nice,
/// system, irq and softirq (guest time is inside user); steal is time the hypervisor gave away.
fn machine_cpu_seconds() -> (f64, f64) {
    let Ok(stat) = std::fs::read_to_string("/proc/stat") else {
        return (0.0, 0.0);
    };
    let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else {
        return (0.0, 0.0);
    };
    let v: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    if v.len() < 8 {
        return (0.0, 0.0);
    }
    ((v[0] + v[1] + v[2] + v[5] + v[6]) / 100.0, v[7] / 100.0)
}

/// (VmHWM, VmRSS) in KiB, summed over the processes.
fn memory_kb(pids: &[u32]) -> (u64, u64) {
    let mut hwm = 0;
    let mut rss = 0;
    for pid in pids {
        if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
            for line in status.lines() {
                let kb = || {
                    line.split_whitespace()
                        .nth(1)
                        .and_then(|v| v.parse::<u64>().ok())
                        .unwrap_or(0)
                };
                if line.starts_with("VmHWM:") {
                    hwm += kb();
                } else if line.starts_with("VmRSS:") {
                    rss += kb();
                }
            }
        }
    }
    (hwm, rss)
}

fn round(v: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (v * f).round() / f
}
