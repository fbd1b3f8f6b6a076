//! Better Auth misbehaving under load, against the raw-TCP stand-in of `support/raw.rs` (the
//! real service in-process on port 0, through `support`): bursts of every fault, half gRPC and
//! half HTTP, leave no file descriptor, task, connection or in-flight lookup behind, and nothing
//! grows round after round; a Better Auth flapping between up and down (refusing, silent,
//! failing) under steady load never lets a down phase allow a check, every check ends within the
//! deadline plus [`MARGIN`], and checks succeed again, without a restart, as soon as it is back.
//! One fault at a time: `faults.rs`.

#[path = "support/raw.rs"]
mod raw;
mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use raw::*;
use support::*;

// ------------------------------------------------------------------------------------------
// Leaks
// ------------------------------------------------------------------------------------------

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

fn alive_tasks() -> usize {
    tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks()
}

/// What the test process holds, and the stand-in's view of it.
#[derive(Copy, Clone, Debug)]
struct Held {
    fds: usize,
    tasks: usize,
    /// Connections to the stand-in (each is two descriptors here: both ends are in-process).
    upstream: usize,
}

fn held(raw: &Raw) -> Held {
    Held {
        fds: open_fds(),
        tasks: alive_tasks(),
        upstream: raw.live(),
    }
}

/// Whether `now` is `base` plus nothing but kept-alive connections to the stand-in (each one
/// descriptor per end and one connection task) and `slack`.
fn within(base: Held, now: Held, slack: usize) -> bool {
    let pooled = now.upstream.saturating_sub(base.upstream);
    now.fds <= base.fds + 2 * pooled + slack && now.tasks <= base.tasks + pooled + slack
}

/// Wait (bounded, 3 s) until what is held is back to `base` plus pooled connections exactly;
/// what is left after that is judged by the caller, with its slack.
async fn settle(raw: &Raw, base: Held, breaks: bool) -> Held {
    // For modes that break connections, also wait for those to be closed: the caller asserts it.
    let done = |now: Held| within(base, now, 0) && (!breaks || now.upstream <= base.upstream + 1);
    let mut now = held(raw);
    // Up to 10 s: under CI's parallel property tests, closing connections that a 100 MB
    // stand-in is still writing into took longer than 3 s. The leak check itself is unchanged.
    for _ in 0..1000 {
        if done(now) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        now = held(raw);
    }
    now
}

/// A burst of concurrent checks, half gRPC and half HTTP, each with its own cookie (so that
/// none is coalesced with another), on clients created first and dropped after the burst. The
/// checks start together.
async fn burst(service: &Service, size: usize, round: usize) -> Vec<(Via, Checked)> {
    let go = Arc::new(tokio::sync::Barrier::new(size));
    let mut tasks = Vec::new();
    for i in 0..size {
        let via = BOTH[i % 2];
        let mut clients = Clients::new(service).await;
        let cookie = cookie_for(round * 1000 + i);
        let go = go.clone();
        tasks.push(tokio::spawn(async move {
            go.wait().await;
            let c = clients.check(via, "/api/u1/tasks", &cookie).await;
            (via, c)
        }));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bursts_of_faults_leak_no_descriptor_task_connection_or_lookup() {
    const BURST: usize = 16;
    const ROUNDS: usize = 3;
    const SLACK: usize = 2;
    let raw = Raw::start(Mode::Valid("u1".into())).await;
    let mut service = Service::start(args(&raw.url())).await;
    wait_ready(&service).await;
    // Warm up: one check per transport, the metrics connection, the upstream pool.
    {
        let mut clients = Clients::new(&service).await;
        recovers(&mut clients, Duration::from_secs(2)).await;
        assert_eq!(inflight(&service).await, 0.0);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let base = held(&raw);
    eprintln!("baseline {base:?}");

    let modes = [
        (Mode::Silent, 503),
        (Mode::Slow(Duration::from_secs(2)), 503),
        (Mode::HalfBodyThenHang, 503),
        (Mode::HalfBodyThenClose, 503),
        (Mode::CloseAtOnce, 503),
        (Mode::Huge { declared: false }, 500),
        (Mode::EndlessHeaders, 503),
        (Mode::Status(503), 503),
        (Mode::Status(429), 503),
        (Mode::Redirect("http://127.0.0.2:9/elsewhere".into()), 500),
    ];
    for (mode, status) in modes {
        raw.set(mode.clone());
        let mut after_first = None;
        for round in 0..ROUNDS {
            let start = Instant::now();
            let accepted = raw.shared.accepted.load(Ordering::SeqCst);
            for (via, c) in burst(&service, BURST, round).await {
                assert_eq!(c.status, status, "{mode:?} via {via:?}: {c:?}");
                assert!(c.elapsed < DEADLINE + MARGIN, "{mode:?} via {via:?}: {c:?}");
            }
            let took = start.elapsed();
            let now = settle(&raw, base, mode.breaks_connections()).await;
            let gauge = inflight(&service).await;
            let opened = raw.shared.accepted.load(Ordering::SeqCst) - accepted;
            eprintln!(
                "{mode:?} round {round}: burst {took:?}, {opened} connections opened, then \
                 {now:?}, inflight {gauge}"
            );
            assert_eq!(gauge, 0.0, "{mode:?}: lookups left in flight");
            assert!(
                within(base, now, SLACK),
                "{mode:?} round {round}: leaked: baseline {base:?}, now {now:?}"
            );
            if mode.breaks_connections() {
                // Every connection the service gave up on is closed (the probe may hold one).
                assert!(
                    now.upstream <= base.upstream + 1,
                    "{mode:?}: {now:?} vs {base:?}: connections left open to Better Auth"
                );
            } else {
                // Kept alive and reused, never more than the burst needed at once.
                assert!(
                    now.upstream <= base.upstream + BURST + 1,
                    "{mode:?}: {now:?}"
                );
            }
            // Later rounds reuse what the first kept: nothing grows round after round.
            match after_first {
                None => after_first = Some(now),
                Some(first) => assert!(
                    within(first, now, SLACK),
                    "{mode:?} round {round}: grew from {first:?} to {now:?}"
                ),
            }
        }
    }

    raw.set(Mode::Valid("u1".into()));
    let mut clients = Clients::new(&service).await;
    recovers(&mut clients, Duration::from_secs(2)).await;
    drop(clients);
    service.stop().await.unwrap();
}

// ------------------------------------------------------------------------------------------
// Flapping under load
// ------------------------------------------------------------------------------------------

/// How a down phase is down.
#[derive(Copy, Clone, Debug)]
enum Down {
    /// Not listening: connections refused, open ones closed.
    Refusing,
    /// Listening, never answering.
    Silent,
    /// Answering 503.
    Failing,
}

#[derive(Debug)]
struct Phase {
    up: bool,
    how: Option<Down>,
    start: Instant,
    end: Instant,
}

#[derive(Debug)]
struct Record {
    client: usize,
    via: Via,
    start: Instant,
    end: Instant,
    status: u16,
    code: String,
    user: Option<String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flapping_better_auth_under_load_never_allows_while_down_and_recovers() {
    const CLIENTS: usize = 4;
    const PHASES: usize = 14;
    const PHASE: Duration = Duration::from_millis(250);
    const MAX_CHECKS_PER_CLIENT: usize = 5_000;

    let raw = Raw::start(Mode::Valid("epoch0".into())).await;
    let mut service = Service::start(args(&raw.url())).await;
    let t0 = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let records = Arc::new(Mutex::new(Vec::<Record>::new()));

    // Load: each client sends checks back to back with its own cookie, on a path outside
    // the user pattern so that any session's user is allowed.
    let mut load = Vec::new();
    for client in 0..CLIENTS {
        let mut clients = Clients::new(&service).await;
        let (stop, records) = (stop.clone(), records.clone());
        let via = BOTH[client % 2];
        load.push(tokio::spawn(async move {
            let cookie = cookie_for(client);
            for _ in 0..MAX_CHECKS_PER_CLIENT {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let start = Instant::now();
                let c = clients.check(via, "/app/items", &cookie).await;
                records.lock().unwrap().push(Record {
                    client,
                    via,
                    start,
                    end: Instant::now(),
                    status: c.status,
                    code: c.code,
                    user: c.user,
                });
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }));
    }

    // Flap: up (answering for user `epoch<k>`), down (one of three ways), up, down… Each
    // switch is bracketed by `before` and `after`; windows are drawn conservatively: an up phase
    // runs from before its switch to after the next one (any answer it gave falls inside), a
    // down phase from after its switch to before the next one (nothing can be up inside).
    let mut phases: Vec<Phase> = Vec::new();
    let mut listening = true;
    let downs = [Down::Refusing, Down::Silent, Down::Failing];
    for k in 0..=PHASES {
        let up = k % 2 == 0;
        let how = (!up).then(|| downs[(k / 2) % downs.len()]);
        let before = if k == 0 { t0 } else { Instant::now() };
        match how {
            None => {
                let user = if k == PHASES {
                    "final".to_owned()
                } else {
                    format!("epoch{k}")
                };
                raw.set(Mode::Valid(user));
                if !listening {
                    raw.up().await;
                    listening = true;
                }
            }
            Some(Down::Refusing) => {
                raw.down().await;
                listening = false;
            }
            Some(Down::Silent) => raw.set(Mode::Silent),
            Some(Down::Failing) => raw.set(Mode::Status(503)),
        }
        let after = Instant::now();
        if let Some(last) = phases.last_mut() {
            last.end = if last.up { after } else { before };
        }
        let start = if up { before } else { after };
        phases.push(Phase {
            up,
            how,
            start,
            end: start,
        });
        if k < PHASES {
            tokio::time::sleep(PHASE).await;
        }
    }
    // The last phase is up for good.
    let up_for_good = phases.last().unwrap().start;

    // Under the same load, checks succeed again quickly, without a restart.
    let recovered = loop {
        let ok = {
            let records = records.lock().unwrap();
            let fresh: Vec<&Record> = records.iter().filter(|r| r.start >= up_for_good).collect();
            (0..CLIENTS).all(|c| fresh.iter().any(|r| r.client == c && r.status == 200))
        };
        if ok {
            break up_for_good.elapsed();
        }
        assert!(
            up_for_good.elapsed() < Duration::from_secs(2),
            "no recovery within 2 s of Better Auth coming back"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::SeqCst);
    for l in load {
        l.await.unwrap();
    }

    let records = std::mem::take(&mut *records.lock().unwrap());
    let (mut allowed, mut unavailable) = (0, 0);
    let mut slowest = Duration::ZERO;
    for r in records.iter() {
        slowest = slowest.max(r.end - r.start);
        assert!(
            r.end - r.start < DEADLINE + MARGIN,
            "check took {:?}: {r:?}",
            r.end - r.start
        );
        match r.status {
            200 => {
                allowed += 1;
                // The allow names the up phase that vouched for it, and that phase overlaps
                // the check: no allow out of a down phase, nothing stale.
                let user = r.user.as_deref().expect("allow carries the identity");
                let k = match user {
                    "final" => PHASES,
                    _ => user.strip_prefix("epoch").unwrap().parse().unwrap(),
                };
                let phase = &phases[k];
                assert!(phase.up, "allowed by a down phase: {r:?} {phase:?}");
                let end = if k == PHASES { r.end } else { phase.end };
                assert!(
                    r.start <= end && r.end >= phase.start,
                    "allow outside its phase: {r:?} {phase:?}"
                );
            }
            503 => {
                unavailable += 1;
                assert_eq!(r.code, "AUTH_UNAVAILABLE", "{r:?}");
            }
            other => panic!("status {other} while flapping: {r:?}"),
        }
    }
    // A check wholly inside a down phase can only have been denied.
    let mut inside_down = 0;
    for p in phases.iter().filter(|p| !p.up) {
        let how = p.how.expect("a down phase says how");
        for r in records
            .iter()
            .filter(|r| r.start >= p.start && r.end <= p.end)
        {
            inside_down += 1;
            assert_eq!(r.status, 503, "while {how:?}: {r:?}");
        }
    }
    let per_via = |via| records.iter().filter(|r| r.via == via).count();
    eprintln!(
        "{} checks ({} gRPC, {} HTTP): {allowed} allowed, {unavailable} unavailable \
         ({inside_down} wholly inside down phases); slowest {slowest:?}; recovered \
         {recovered:?} after Better Auth came back",
        records.len(),
        per_via(Via::Grpc),
        per_via(Via::Http)
    );
    assert!(allowed > 0 && unavailable > 0, "the flapping was observed");
    assert!(recovered < Duration::from_secs(2));
    assert_eq!(inflight(&service).await, 0.0);
    service.stop().await.unwrap();
}
