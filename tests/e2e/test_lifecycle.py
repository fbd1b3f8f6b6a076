"""Soak and graceful shutdown: a bounded soak through Envoy, and SIGTERM with checks in flight on both
transports. The stack and the load generator are in lifecycle.py; logs and the generated configs:
.e2e-logs/lifecycle/.

Environment:
  SOAK_SECONDS  soak duration (default 120; the BENCHMARKS.md figures come from a 300 s run)
  SOAK_RATE     soak request rate, requests/s (default 200)
  SOAK_REPORT   where the soak writes its markdown figures (default .e2e-logs/lifecycle/soak.md;
                bench/soak-latest.md for the run whose figures go into BENCHMARKS.md)
"""

from __future__ import annotations

import datetime
import http.client
import json
import os
import re
import statistics
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from conftest import ROOT, raw_request
from lifecycle import (Base, authz_bin, cpu_seconds, deployment, log_tails, mix, percentile, rss_kib, run_load,
                       running_base)

LOG_DIR = ROOT / ".e2e-logs" / "lifecycle"

SOAK_SECONDS = float(os.environ.get("SOAK_SECONDS", "120"))
SOAK_RATE = float(os.environ.get("SOAK_RATE", "200"))
SOAK_REPORT = Path(os.environ.get("SOAK_REPORT", str(LOG_DIR / "soak.md")))
SOAK_WARMUP = 10.0          # seconds of load before the first RSS window (pools, allocator arenas fill)
SOAK_WINDOW = 30.0          # first and last RSS windows
RSS_MARGIN_RATIO = 0.10     # last window may exceed the first by 10 % ...
RSS_MARGIN_KIB = 2048       # ... or 2 MiB, whichever is larger (see test_soak_through_envoy)
# The soak's deadlines are longer than conftest's: it hunts leaks, errors and wrong decisions of better-authz,
# and on a shared machine a whole-machine stall of > 1 s happens within minutes; better-authz then rightly
# fails the checks caught in it closed with 503 AUTH_UNAVAILABLE. Latency is reported, not bounded.
SOAK_UPSTREAM_TIMEOUT_MS = 3000
SOAK_CHECK_TIMEOUT = "5s"


@pytest.fixture(scope="module")
def base():
    with running_base(LOG_DIR) as b:
        yield b


class RssSampler(threading.Thread):
    """VmRSS of one process every second, with the time since `t0`."""

    def __init__(self, pid: int, t0: float):
        super().__init__(name="rss-sampler", daemon=True)
        self.pid, self.t0 = pid, t0
        self.samples: list[tuple[float, int]] = []
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            try:
                self.samples.append((time.monotonic() - self.t0, rss_kib(self.pid)))
            except (OSError, RuntimeError):
                return
            self.halt.wait(1.0)


# --------------------------------------------------------------------------------------------- soak

def test_soak_through_envoy(base: Base):
    """SOAK_RATE req/s of the mix through the shipped Envoy config (ports and Check deadline changed) for
    SOAK_SECONDS: no 5xx, no transport error, no wrong decision; better-authz checked every request exactly
    once; the back end received exactly the allowed requests; RSS flat.

    RSS margin: the mean of the last 30 s may exceed the mean of the first 30 s after a 10 s warm-up by
    10 % or 2 MiB, whichever is larger. better-authz sits around 10-20 MiB; glibc's per-thread arenas and
    the connection pools still move it by a few hundred KiB after warm-up, so a tighter bound flakes. A
    leak does not hide in it: between the windows' centres lie (SOAK_SECONDS - 40) s, i.e. 16 000
    requests at 200 req/s in the default 120 s (a 2 MiB bound catches > ~130 B leaked per request) and
    52 000 in a 300 s run (> ~40 B per request)."""
    assert SOAK_SECONDS >= SOAK_WARMUP + 2 * 5, "SOAK_SECONDS too small"
    window = min(SOAK_WINDOW, (SOAK_SECONDS - SOAK_WARMUP) / 2)
    cases = mix(base.users)
    base.backend_clear()
    loadavg_before = os.getloadavg()
    with deployment(base, "soak", check_timeout=SOAK_CHECK_TIMEOUT,
                    authz_env={"AUTHZ_UPSTREAM_TIMEOUT_MS": str(SOAK_UPSTREAM_TIMEOUT_MS)}) as (envoy, (authz,)):
        checks_before = authz.total_decisions()
        cpu_before = cpu_seconds(authz.pid)
        rss_idle = rss_kib(authz.pid)
        t0 = time.monotonic()
        sampler = RssSampler(authz.pid, t0)
        sampler.start()
        result = run_load(envoy.port, cases, SOAK_RATE, SOAK_SECONDS)
        sampler.halt.set()
        sampler.join(5)
        cpu_used = cpu_seconds(authz.pid) - cpu_before
        checks = authz.total_decisions() - checks_before
        ext_authz = envoy.stats("http.ingress_http.ext_authz")
        logs = log_tails(authz.proc, envoy.proc, *base.procs)
    loadavg_after = os.getloadavg()
    backend_seen = base.backend_count()

    samples = sampler.samples
    first = [kib for t, kib in samples if SOAK_WARMUP <= t < SOAK_WARMUP + window]
    last = [kib for t, kib in samples if t >= result.ended - t0 - window]
    assert first and last, f"too few RSS samples: {samples}"
    rss_first, rss_last = statistics.mean(first), statistics.mean(last)
    rss_peak = max(kib for _, kib in samples)
    lat = sorted(result.latencies_ms)
    figures = {
        "rate_target": SOAK_RATE, "rate": result.sent / result.duration, "seconds": result.duration,
        "requests": result.sent, "by_kind": dict(result.by_kind), "statuses": dict(result.statuses),
        "errors": len(result.errors), "wrong": len(result.wrong), "missed": result.missed_slots,
        "checks": checks, "backend": backend_seen, "allowed": result.allowed,
        "window": window, "rss_idle": rss_idle, "rss_first": rss_first, "rss_last": rss_last, "rss_peak": rss_peak,
        "cpu_pct": 100 * cpu_used / result.duration,
        "p50": percentile(lat, 50), "p90": percentile(lat, 90), "p99": percentile(lat, 99),
        "p999": percentile(lat, 99.9), "max": lat[-1] if lat else float("nan"),
        "loadavg": (loadavg_before, loadavg_after), "ext_authz": ext_authz,
    }
    write_soak_report(figures, samples)
    print(f"\nsoak: {result.summary()}\nsoak figures: {json.dumps(figures, default=str)}\nreport: {SOAK_REPORT}")

    assert result.sent >= 0.9 * SOAK_RATE * SOAK_SECONDS, f"load fell short:\n{result.summary()}\n{logs}"
    assert result.errors == [], f"errors under load:\n{result.summary()}\n{logs}"
    assert result.wrong == [], f"wrong decisions under load:\n{result.summary()}\n{logs}"
    assert checks == result.sent, f"better-authz counted {checks} checks for {result.sent} requests"
    assert backend_seen == result.allowed == result.by_kind["own"], (backend_seen, result.allowed, result.by_kind)
    margin = max(RSS_MARGIN_RATIO * rss_first, RSS_MARGIN_KIB)
    assert rss_last <= rss_first + margin, (
        f"RSS grew: first {window:.0f}s mean {rss_first:.0f} KiB, last {window:.0f}s mean {rss_last:.0f} KiB "
        f"(margin {margin:.0f} KiB); samples {samples}")


def write_soak_report(f: dict, samples: list[tuple[float, int]]) -> None:
    binary = authz_bin()
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        head = "?"
    kinds = f["by_kind"]
    mib = lambda kib: f"{kib / 1024:.1f} MiB"  # noqa: E731
    timeline = ", ".join(f"{kib / 1024:.1f}" for t, kib in samples[:: max(1, len(samples) // 20)])
    n = max(f["requests"], 1)
    share = lambda kind: f"{kinds.get(kind, 0)} ({100 * kinds.get(kind, 0) / n:.0f} %)"  # noqa: E731
    where = binary.relative_to(ROOT) if binary.is_relative_to(ROOT) else binary
    w = f["window"]
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    rss = f"{mib(f['rss_first'])} / {mib(f['rss_last'])} / {mib(f['rss_peak'])}"
    lat = " / ".join(f"{f[k]:.1f}" for k in ("p50", "p90", "p99", "p999", "max"))
    text = f"""### Soak through Envoy (`tests/e2e/test_lifecycle.py::test_soak_through_envoy`)

{when}; `{where}` at `{head}`; {os.cpu_count()} cores shared with
the load generator, Envoy, Better Auth, the back end and other jobs (load average {f['loadavg'][0][0]:.1f} before,
{f['loadavg'][1][0]:.1f} after).

Path: Python client (8 threads, HTTP/1.1 keep-alive, open loop at a fixed rate) → Envoy 1.40 (shipped
`envoy/envoy.yaml`, ports changed, Check deadline {SOAK_CHECK_TIMEOUT}) → better-authz (gRPC ext_authz,
`AUTHZ_UPSTREAM_TIMEOUT_MS={SOAK_UPSTREAM_TIMEOUT_MS}`, no cache, `RUST_LOG=info`) → Better Auth 1.7.25
(Node 20, memory adapter); allowed requests → the Python todo back end. All on 127.0.0.1.
Mix, 5 signed-in users in rotation:
own path → 200: {share('own')}; another user's path → 403: {share('other')};
no cookie → 401: {share('none')}; forged signature → 401: {share('forged')}.

| Figure | Value |
|---|---|
| Rate (target / achieved) | {f['rate_target']:.0f} / {f['rate']:.1f} req/s |
| Duration | {f['seconds']:.0f} s (first {SOAK_WARMUP:.0f} s warm-up) |
| Requests | {f['requests']} |
| Checks counted by better-authz (`better_authz_decisions_total`) | {f['checks']:.0f} |
| Requests the back end received / allowed answers | {f['backend']} / {f['allowed']} |
| Errors (5xx or transport) | {f['errors']} |
| Wrong decisions | {f['wrong']} |
| Schedule slots skipped (client > 1 s behind) | {f['missed']} |
| better-authz RSS idle (before load) | {mib(f['rss_idle'])} |
| better-authz RSS, mean of the first {w:.0f} s after warm-up / of the last {w:.0f} s / peak | {rss} |
| better-authz CPU (utime + stime over the run) | {f['cpu_pct']:.1f} % of one core |
| Latency at the client p50 / p90 / p99 / p99.9 / max | {lat} ms |

better-authz RSS (MiB), evenly spaced samples through the run: {timeline}.

The RSS bound the test asserts: last-window mean ≤ first-window mean + max(10 %, 2 MiB). Latency is the
whole round trip as the Python client measured it (Envoy, better-authz, Better Auth and, for allowed
requests, the Python back end) on a shared 2-core machine: an upper bound on better-authz's share, not a
measurement of it.
"""
    SOAK_REPORT.parent.mkdir(parents=True, exist_ok=True)
    SOAK_REPORT.write_text(text)


# --------------------------------------------------------------------------------------------- graceful shutdown

class StandInBetterAuth:
    """A STAND-IN for Better Auth, not the real one: the real Better Auth answers in a few milliseconds,
    too fast to hold checks in flight while a signal arrives. This one knows the tokens `tok<n>` (cookie
    `better-auth.session_token=tok<n>.sig`) as users `u<n>`, answers get-session after `delay` seconds in
    Better Auth's shape, and /api/auth/ok at once (better-authz's readiness probe)."""

    def __init__(self, delay: float):
        self.delay = delay
        self.release = threading.Event()     # set at teardown: sleeping answers return at once
        self.lock = threading.Lock()
        self.arrivals = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def _send(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                if self.path == "/api/auth/ok":
                    return self._send(200, b'{"ok":true}')
                if not self.path.startswith("/api/auth/get-session"):
                    return self._send(404, b'{"error":"not found"}')
                with outer.lock:
                    outer.arrivals += 1
                outer.release.wait(outer.delay)
                match = re.search(r"better-auth\.session_token=tok(\d+)\.sig", self.headers.get("Cookie", ""))
                if not match:
                    return self._send(200, b"null")
                uid = f"u{match.group(1)}"
                expires = (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=1))
                body = {"session": {"id": f"s-{uid}", "userId": uid, "token": "x",
                                    "expiresAt": expires.strftime("%Y-%m-%dT%H:%M:%S.000Z")},
                        "user": {"id": uid, "email": f"{uid}@example.com", "name": f"User {uid}"}}
                return self._send(200, json.dumps(body).encode())

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request, client_address):  # better-authz hung up (shutdown timeout)
                pass

        self.server = Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, name="stand-in-better-auth", daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.release.set()
        self.server.shutdown()
        self.server.server_close()

    def wait_arrivals(self, n: int, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if self.arrivals >= n:
                    return self.arrivals
            time.sleep(0.02)
        return self.arrivals


def _in_flight(fn, n: int) -> tuple[list[threading.Thread], list]:
    results: list = [None] * n

    def run(i: int) -> None:
        try:
            results[i] = fn(i)
        except Exception as exc:  # recorded, judged by the test
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    return threads, results


def _envoy_check(port: int, i: int, timeout: float) -> tuple[int, bool, str | None]:
    """Request i through Envoy: even i on the user's own path (200), odd i on the next user's (403)."""
    path = f"/api/u{i if i % 2 == 0 else i + 1}/tasks"
    resp = raw_request(port, "GET", path, [("Cookie", f"better-auth.session_token=tok{i}.sig")], timeout=timeout)
    code = None if resp.from_backend else (resp.json().get("error_code") if resp.body.startswith(b"{") else None)
    return resp.status, resp.from_backend, code


def _nginx_style_check(port: int, i: int, timeout: float) -> tuple[int, str | None]:
    """The HTTP transport as nginx's auth_request uses it, straight to better-authz's HTTP listener."""
    path = f"/api/u{i if i % 2 == 0 else i + 1}/tasks"
    resp = raw_request(port, "GET", "/auth", [("X-Original-URI", path), ("X-Original-Method", "GET"),
                                              ("Cookie", f"better-auth.session_token=tok{i}.sig")], timeout=timeout)
    return resp.status, resp.header("x-user-id")


def test_sigterm_answers_every_in_flight_check_then_exits_0(base: Base):
    """SIGTERM while checks are in flight on both transports (held by a slow stand-in Better Auth):
    every in-flight check gets its right answer (200 with the right identity / 403), the process stops
    taking new connections, and exits 0 once they are answered, well inside AUTHZ_SHUTDOWN_TIMEOUT_MS."""
    n_grpc, n_http, delay, shutdown_timeout_ms = 12, 6, 2.0, 6000
    with StandInBetterAuth(delay) as standin, deployment(
            base, "drain", better_auth_url=f"http://127.0.0.1:{standin.port}", check_timeout="8s",
            authz_env={"AUTHZ_UPSTREAM_TIMEOUT_MS": "5000",
                       "AUTHZ_SHUTDOWN_TIMEOUT_MS": str(shutdown_timeout_ms)}) as (envoy, (authz,)):
        base.backend_clear()
        grpc_threads, grpc_results = _in_flight(lambda i: _envoy_check(envoy.port, i, 15), n_grpc)
        http_threads, http_results = _in_flight(lambda i: _nginx_style_check(authz.http, n_grpc + i, 15), n_http)
        arrived = standin.wait_arrivals(n_grpc + n_http, timeout=10)
        assert arrived == n_grpc + n_http, f"only {arrived} lookups in flight\n{log_tails(authz.proc, envoy.proc)}"
        sent = authz.terminate()
        time.sleep(0.3)
        # New connections are no longer taken (the listeners are closed while the old ones drain).
        try:
            late = raw_request(authz.http, "GET", "/auth", [("X-Original-URI", "/api/u0/tasks")], timeout=2)
            late_outcome = f"answered {late.status}"
        except OSError as exc:
            late_outcome = type(exc).__name__
        rc, exited_at = authz.wait_exit(timeout=shutdown_timeout_ms / 1000 + 5)
        for t in grpc_threads + http_threads:
            t.join(15)
        logs = log_tails(authz.proc, envoy.proc)
    took = exited_at - sent

    assert rc == 0, f"exit code {rc} after SIGTERM\n{logs}"
    assert took < shutdown_timeout_ms / 1000, f"exit took {took:.2f}s\n{logs}"
    assert took > 0.5, f"exited after {took:.2f}s: cannot have waited for the in-flight checks\n{logs}"
    assert late_outcome == "ConnectionRefusedError", f"a new connection after SIGTERM: {late_outcome}"
    for i, r in enumerate(grpc_results):
        want = (200, True, None) if i % 2 == 0 else (403, False, "USER_MISMATCH")
        assert r == want, f"Envoy request {i}: {r!r}, want {want}\n{logs}"
    for j, r in enumerate(http_results):
        i = n_grpc + j
        want = (200, f"u{i}") if i % 2 == 0 else (403, None)
        assert r == want, f"HTTP check {i}: {r!r}, want {want}\n{logs}"
    assert "draining in-flight checks" in logs


def test_shutdown_timeout_bounds_a_stuck_drain_and_fails_closed(base: Base):
    """A Better Auth that never answers (stand-in, 30 s) holds checks past AUTHZ_SHUTDOWN_TIMEOUT_MS
    (1.5 s): the process still exits 0 on time, and the checks it abandons fail closed (Envoy's 503
    status_on_error, a dropped connection for the HTTP transport, which nginx maps to 503), never open."""
    n_grpc, n_http, shutdown_timeout_ms = 4, 2, 1500
    with StandInBetterAuth(30.0) as standin, deployment(
            base, "stuck", better_auth_url=f"http://127.0.0.1:{standin.port}", check_timeout="25s",
            authz_env={"AUTHZ_UPSTREAM_TIMEOUT_MS": "20000",
                       "AUTHZ_SHUTDOWN_TIMEOUT_MS": str(shutdown_timeout_ms)}) as (envoy, (authz,)):
        base.backend_clear()
        grpc_threads, grpc_results = _in_flight(lambda i: _envoy_check(envoy.port, i, 20), n_grpc)
        http_threads, http_results = _in_flight(lambda i: _nginx_style_check(authz.http, n_grpc + i, 20), n_http)
        assert standin.wait_arrivals(n_grpc + n_http, timeout=10) == n_grpc + n_http
        sent = authz.terminate()
        rc, exited_at = authz.wait_exit(timeout=shutdown_timeout_ms / 1000 + 5)
        for t in grpc_threads + http_threads:
            t.join(10)
        logs = log_tails(authz.proc, envoy.proc)
        backend_seen = base.backend_count()
    took = exited_at - sent

    assert rc == 0, f"exit code {rc}\n{logs}"
    assert shutdown_timeout_ms / 1000 - 0.1 <= took < shutdown_timeout_ms / 1000 + 1.5, f"exit took {took:.2f}s"
    assert "did not finish before the shutdown timeout" in logs
    for r in grpc_results:
        assert r == (503, False, None), f"abandoned check through Envoy: {r!r} (want Envoy's bare 503)\n{logs}"
    for r in http_results:
        assert isinstance(r, (OSError, http.client.HTTPException)), f"abandoned HTTP check answered: {r!r}"
    assert backend_seen == 0
