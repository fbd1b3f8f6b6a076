//! Better Auth misbehaving, one fault at a time. The real service runs in-process on port 0
//! (through `support`) against **stand-in Better Auths** on loopback (raw TCP, `support/raw.rs`)
//! that fail the ways a real one can: refusing connections, accepting and never answering,
//! answering past the deadline, sending half a body then closing or hanging, answering 5xx or
//! 429, redirecting to another host, streaming a 100 MB body or endless headers. The same faults
//! in bursts, and flapping between up and down under load: `faults_load.rs`.
//!
//! Every fault must end in a deny with the documented code (503 `AUTH_UNAVAILABLE` when Better
//! Auth cannot answer, 500 `AUTH_ERROR` when it answers something that is not a session) within
//! the configured deadline plus [`MARGIN`], through both transports; leave no lookup in flight
//! nor (100 MB body) the connection open; and the service must recover, without a restart, as
//! soon as Better Auth answers again.

#[path = "support/raw.rs"]
mod raw;
mod support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use raw::*;
use support::*;

/// One fault, through both transports: the right deny within the deadline, then recovery
/// without a restart once the stand-in answers valid sessions again.
async fn fault(mode: Mode, status: u16, code: &str, details: &[&str]) -> Vec<Checked> {
    let raw = Raw::start(mode.clone()).await;
    let mut service = Service::start(args(&raw.url())).await;
    let mut clients = Clients::new(&service).await;
    let mut seen = Vec::new();
    for via in BOTH {
        let c = clients.check(via, "/api/u1/tasks", &session_cookie()).await;
        let ctx = format!("{mode:?} via {via:?}: {c:?}");
        assert_eq!((c.status, c.code.as_str()), (status, code), "{ctx}");
        assert!(
            details.contains(&c.detail.as_str()),
            "{ctx}: detail not one of {details:?}"
        );
        assert!(!c.detail.contains(TOKEN) && c.user.is_none(), "{ctx}");
        assert!(c.elapsed < DEADLINE + MARGIN, "{ctx}: too slow");
        seen.push(c);
    }
    assert!(raw.session_calls() >= 2, "{mode:?}: the stand-in was asked");

    raw.set(Mode::Valid("u1".into()));
    let took = recovers(&mut clients, Duration::from_secs(2)).await;
    assert!(
        took < Duration::from_secs(1),
        "{mode:?}: recovery took {took:?}"
    );

    assert_eq!(inflight(&service).await, 0.0, "{mode:?}: inflight gauge");
    drop(clients);
    service.stop().await.expect("clean shutdown");
    seen
}

const TIMEOUT: &str = "Better Auth did not answer in time";
const UNREACHABLE: &str = "Better Auth could not be reached";
const BAD_ANSWER: &str = "Better Auth answered something that is not a session";

// ------------------------------------------------------------------------------------------
// One fault at a time
// ------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connections_are_503_and_recover_when_better_auth_listens_again() {
    let raw = Raw::start(Mode::Valid("u1".into())).await;
    raw.down().await;
    let mut service = Service::start(args(&raw.url())).await;
    let mut clients = Clients::new(&service).await;
    for via in BOTH {
        let c = clients.check(via, "/api/u1/tasks", &session_cookie()).await;
        assert_eq!(
            (c.status, c.code.as_str(), c.detail.as_str()),
            (503, "AUTH_UNAVAILABLE", UNREACHABLE),
            "{via:?}"
        );
        assert!(c.elapsed < DEADLINE + MARGIN, "{via:?}: {:?}", c.elapsed);
    }
    assert_eq!(raw.session_calls(), 0);

    raw.up().await;
    let took = recovers(&mut clients, Duration::from_secs(2)).await;
    assert!(took < Duration::from_secs(1), "recovery took {took:?}");
    drop(clients);
    service.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepting_and_never_answering_is_503_at_the_deadline() {
    let seen = fault(Mode::Silent, 503, "AUTH_UNAVAILABLE", &[TIMEOUT]).await;
    for c in seen {
        // It is the deadline that ends the wait, not something sooner.
        assert!(c.elapsed >= DEADLINE - Duration::from_millis(20), "{c:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answering_past_the_deadline_is_503() {
    fault(
        Mode::Slow(Duration::from_secs(3)),
        503,
        "AUTH_UNAVAILABLE",
        &[TIMEOUT],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_a_body_then_close_is_503() {
    fault(
        Mode::HalfBodyThenClose,
        503,
        "AUTH_UNAVAILABLE",
        &[UNREACHABLE, TIMEOUT],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_a_body_then_silence_is_503_at_the_deadline() {
    fault(Mode::HalfBodyThenHang, 503, "AUTH_UNAVAILABLE", &[TIMEOUT]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_without_an_answer_is_503() {
    fault(Mode::CloseAtOnce, 503, "AUTH_UNAVAILABLE", &[UNREACHABLE]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_and_rate_limiting_are_503() {
    for (status, detail) in [
        (500, "Better Auth answered with a server error"),
        (502, "Better Auth answered with a server error"),
        (503, "Better Auth answered with a server error"),
        (504, "Better Auth answered with a server error"),
        (429, "Better Auth is rate limiting session checks"),
    ] {
        fault(Mode::Status(status), 503, "AUTH_UNAVAILABLE", &[detail]).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endless_headers_are_refused_within_the_deadline() {
    fault(
        Mode::EndlessHeaders,
        503,
        "AUTH_UNAVAILABLE",
        &[UNREACHABLE, TIMEOUT],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_to_another_host_is_500_and_not_followed() {
    // The other host is a Better Auth that would vouch for the session: following the
    // redirect would allow. It must never be asked.
    let other = Raw::start_on("127.0.0.2", Mode::Valid("u1".into())).await;
    let location = format!("{}/api/auth/get-session", other.url());
    fault(Mode::Redirect(location), 500, "AUTH_ERROR", &[BAD_ANSWER]).await;
    assert_eq!(other.session_calls(), 0, "the redirect was followed");
}

fn rss_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_100_mb_body_is_500_without_reading_it() {
    for declared in [true, false] {
        let mode = Mode::Huge { declared };
        let raw = Raw::start(mode.clone()).await;
        let mut service = Service::start(args(&raw.url())).await;
        let mut clients = Clients::new(&service).await;
        // Warm up every path once so that what follows measures the body alone.
        raw.set(Mode::Valid("u1".into()));
        recovers(&mut clients, Duration::from_secs(2)).await;
        raw.set(mode.clone());

        let (rss_before, peak_before) = (rss_kib("VmRSS:"), rss_kib("VmHWM:"));
        for via in BOTH {
            let c = clients.check(via, "/api/u1/tasks", &session_cookie()).await;
            let ctx = format!("{mode:?} via {via:?}: {c:?}");
            assert_eq!(
                (c.status, c.code.as_str(), c.detail.as_str()),
                (500, "AUTH_ERROR", BAD_ANSWER),
                "{ctx}"
            );
            assert!(c.elapsed < DEADLINE + MARGIN, "{ctx}: too slow");
        }
        // The service hung up: the stand-in's writes fail long before 100 MB.
        for _ in 0..200 {
            if raw.live() <= 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let written = raw.shared.huge_written.load(Ordering::SeqCst);
        let (rss_after, peak_after) = (rss_kib("VmRSS:"), rss_kib("VmHWM:"));
        eprintln!(
            "{mode:?}: stand-in wrote {written} B before the hang-up; RSS {rss_before} -> \
             {rss_after} KiB, peak {peak_before} -> {peak_after} KiB"
        );
        assert!(
            raw.live() <= 1,
            "{mode:?}: {} connections still open",
            raw.live()
        );
        assert!(
            written < 32 * 1024 * 1024,
            "{mode:?}: {written} B were read"
        );
        assert!(
            peak_after.saturating_sub(peak_before) < 32 * 1024
                && rss_after.saturating_sub(rss_before) < 32 * 1024,
            "{mode:?}: memory grew: RSS {rss_before} -> {rss_after} KiB, peak {peak_before} -> \
             {peak_after} KiB"
        );

        raw.set(Mode::Valid("u1".into()));
        recovers(&mut clients, Duration::from_secs(2)).await;
        drop(clients);
        service.stop().await.unwrap();
    }
}
