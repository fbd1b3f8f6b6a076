"""Helpers of the lifecycle tests (test_lifecycle.py: soak and graceful shutdown; test_rolling_restart.py:
rolling restarts and dead endpoints).

Each test module has its own stack (not conftest's `stack`): a real Better Auth and todo back end shared by
its tests (`running_base`), and per test better-authz instance(s) behind their own Envoy (`deployment`), with
a config generated at run time from the shipped envoy/envoy.yaml (ports rewritten by
scripts/render-config.py, then the few edits each test names). Everything listens on 127.0.0.1, ports picked
free, started by scripts/launcher.py. Every load loop (`run_load`) is bounded in requests and in time, and
stops by itself.
"""

from __future__ import annotations

import collections
import contextlib
import http.client
import json
import os
import re
import signal
import subprocess
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import launcher
from conftest import (ENVOY_CHECK_TIMEOUT, PASSWORD, READY_TIMEOUT, ROOT, UPSTREAM_TIMEOUT_MS, User, _source_ips,
                      free_ports, raw_request, session_cookie)
from launcher import ENVOY_BIN, Proc, wait_until

# Envoy's health checks with envoy_config(fast_health_checks=True), for the rolling restarts: every 0.5 s
# (+ up to 0.1 s jitter), a host unhealthy after 2 network failures.
HC_INTERVAL_S = 0.5
HC_JITTER_S = 0.1
HC_UNHEALTHY_THRESHOLD = 2


def retry_policy() -> list[str]:
    """The ext_authz `grpc_service.retry_policy` these tests recommend for envoy/envoy.yaml: retry a Check on
    another instance when the connection or stream to one fails before an answer: connect refused
    (instance gone), REFUSED_STREAM (instance draining), reset. A Check is read-only, so a retry is always
    safe; better-authz's own denials (503 AUTH_UNAVAILABLE included) are OK responses and never retried.
    Envoy 1.40 details:
    - only `grpc_service.retry_policy` applies to ext_authz; `grpc_service.envoy_grpc.retry_policy` is
      documented as xDS-only and changes nothing;
    - Envoy converts the core RetryPolicy into a route retry policy whose per-try timeout is the back-off
      `max_interval`: a max_interval below the Check deadline times ordinary Checks out (per-try 504 →
      503). 5 s is above any Check deadline, so `timeout` alone bounds a Check, and two retries at a
      10 ms base never back off anywhere near it (at most ~30 ms);
    - `previous_hosts` makes a retry pick an instance not tried yet for this Check; without it a retry
      goes to the round robin's next pick, which is the dead instance again about half the time."""
    return [
        "retry_on: connect-failure,refused-stream,reset,unavailable",
        "num_retries: 2",
        "retry_back_off: {base_interval: 0.01s, max_interval: 5s}",
        "retry_host_predicate:",
        "- name: envoy.retry_host_predicates.previous_hosts",
        "  typed_config:",
        '    "@type": type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate',
        "host_selection_retry_max_attempts: 3",
    ]


# The better_authz cluster's default circuit breaker allows 3 concurrent retries: an instance going away
# fails every Check in flight to it at once, and the retries beyond 3 overflow into 503s. A retry budget
# (a share of the active Checks, never fewer than 10) scales with the traffic instead.
RETRY_CIRCUIT_BREAKER = [
    "circuit_breakers:",
    "  thresholds:",
    "  - retry_budget: {budget_percent: {value: 25.0}, min_retry_concurrency: 10}",
]

USERS = 5


# --------------------------------------------------------------------------------------------- helpers

def _get_text(url: str, timeout: float = 5) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return resp.read().decode()


def authz_bin() -> Path:
    path = launcher.authz_bin_from_env(ROOT / "target" / "debug" / "better-authz")
    if not os.access(path, os.X_OK):
        pytest.fail(f"better-authz binary not found at {path}: `cargo build` or set BETTER_AUTHZ_BIN",
                    pytrace=False)
    return path


def _sub_once(text: str, pattern: str, repl: str, flags: int = re.M) -> str:
    """Regex substitution that must match exactly once: a drifted envoy.yaml fails loudly, not silently."""
    new, count = re.subn(pattern, repl, text, flags=flags)
    assert count == 1, f"expected exactly one match of {pattern!r} in envoy.yaml, found {count}"
    return new


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def percentile(sorted_values: list[float], p: float) -> float:
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, int(round(p / 100 * len(sorted_values) + 0.5)) - 1))
    return sorted_values[k]


# --------------------------------------------------------------------------------------------- processes

@dataclass
class AuthzInstance:
    name: str
    grpc: int
    http: int
    admin: int
    proc: Proc

    @property
    def pid(self) -> int:
        assert self.proc.pid is not None
        return self.proc.pid

    def start(self) -> None:
        self.proc.start()

    def wait_ready(self) -> None:
        self.proc.wait_ready(READY_TIMEOUT)

    def terminate(self) -> float:
        """SIGTERM; returns the monotonic time it was sent."""
        assert self.proc.popen is not None
        sent = time.monotonic()
        self.proc.popen.send_signal(signal.SIGTERM)
        return sent

    def wait_exit(self, timeout: float) -> tuple[int | None, float]:
        """(exit code or None if still running after `timeout`, monotonic time of exit)."""
        assert self.proc.popen is not None
        try:
            rc = self.proc.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return None, time.monotonic()
        return rc, time.monotonic()

    def decisions(self) -> dict[tuple[str, str], float]:
        """better_authz_decisions_total by (transport, reason)."""
        out: dict[tuple[str, str], float] = {}
        for line in _get_text(f"http://127.0.0.1:{self.admin}/metrics").splitlines():
            if line.startswith("better_authz_decisions_total{"):
                labels = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}", 1)[0]))
                out[(labels.get("transport", ""), labels.get("reason", ""))] = float(line.rsplit(" ", 1)[1])
        return out

    def total_decisions(self) -> float:
        return sum(self.decisions().values())


def authz_instance(log_dir: Path, name: str, better_auth_url: str,
                   extra_env: dict[str, str] | None = None) -> AuthzInstance:
    grpc, http_port, admin = free_ports(3)
    env = {**launcher.authz_env(better_auth_url, grpc, http_port, admin, UPSTREAM_TIMEOUT_MS), **(extra_env or {})}
    return AuthzInstance(name, grpc, http_port, admin, launcher.better_authz(log_dir, authz_bin(), env, name=name))


def envoy_config(name: str, log_dir: Path, *, envoy: int, admin: int, better_auth: int, todo: int,
                 authz_grpc: list[int], check_timeout: str = ENVOY_CHECK_TIMEOUT, fast_health_checks: bool = False,
                 health_checks: bool = True, ext_authz_retry: str | None = None) -> Path:
    """envoy/envoy.yaml rendered onto our ports, then: one better_authz endpoint per entry of
    `authz_grpc`; optionally health checks every HC_INTERVAL_S, or none at all; optionally retry_policy()
    on the ext_authz gRPC service, at `grpc_service.retry_policy` ("grpc_service") or at
    `grpc_service.envoy_grpc.retry_policy` ("envoy_grpc"), with RETRY_CIRCUIT_BREAKER on the cluster.
    Validated with `envoy --mode validate`."""
    out = log_dir / f"{name}.yaml"
    launcher.render_envoy({"envoy": envoy, "envoy_admin": admin, "authz_grpc": authz_grpc[0],
                           "better_auth": better_auth, "todo": todo}, out, check_timeout)
    text = out.read_text()
    if len(authz_grpc) > 1:
        # Duplicate the `- endpoint:` block of the better_authz cluster once per further instance.
        pattern = (r"^(?P<ind> *)- endpoint:\n(?:(?P=ind) +.*\n)*?"
                   rf"(?P=ind) +socket_address: \{{address: 127\.0\.0\.1, port_value: {authz_grpc[0]}\}}\n")
        match = re.search(pattern, text, re.M)
        assert match, "better_authz endpoint block not found in envoy.yaml"
        block = match.group(0)
        extra = "".join(block.replace(f"port_value: {authz_grpc[0]}}}", f"port_value: {port}}}")
                        for port in authz_grpc[1:])
        text = text[:match.end()] + extra + text[match.end():]
    if fast_health_checks:
        text = _sub_once(text, r"^( +)interval: 5s$", rf"\1interval: {HC_INTERVAL_S}s")
        text = _sub_once(text, r"^( +)interval_jitter: 1s$", rf"\1interval_jitter: {HC_JITTER_S}s")
        text = _sub_once(text, r"^( +)no_traffic_interval: 5s$", rf"\1no_traffic_interval: {HC_INTERVAL_S}s")
        text = _sub_once(text, r"^( +)unhealthy_threshold: \d+$", rf"\1unhealthy_threshold: {HC_UNHEALTHY_THRESHOLD}")
    if not health_checks:
        text = _sub_once(text, r"^( +)health_checks:\n(?:\1[-# ].*\n)+", "")
    if ext_authz_retry == "grpc_service" and "envoy.retry_host_predicates.previous_hosts" in text:
        ext_authz_retry = None  # envoy/envoy.yaml ships the retry policy already: test that one
    if ext_authz_retry:
        match = re.search(r"^( +)envoy_grpc: \{cluster_name: better_authz\}\n", text, re.M)
        assert match, "ext_authz envoy_grpc line not found in envoy.yaml"
        ind = match.group(1)
        policy = retry_policy()
        if ext_authz_retry == "envoy_grpc":
            block = f"{ind}envoy_grpc:\n{ind}  cluster_name: better_authz\n{ind}  retry_policy:\n"
            block += "".join(f"{ind}    {line}\n" for line in policy)
        else:
            assert ext_authz_retry == "grpc_service", ext_authz_retry
            block = match.group(0) + f"{ind}retry_policy:\n" + "".join(f"{ind}  {line}\n" for line in policy)
        text = text[:match.start()] + block + text[match.end():]
        match = re.search(r"^( +)- name: better_authz\n", text, re.M)
        assert match, "better_authz cluster not found in envoy.yaml"
        ind = match.group(1) + "  "
        text = text[:match.end()] + "".join(f"{ind}{line}\n" for line in RETRY_CIRCUIT_BREAKER) + text[match.end():]
    out.write_text(text)
    check = subprocess.run([str(ENVOY_BIN), "--mode", "validate", "-c", str(out), "--log-level", "warn"],
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, f"envoy --mode validate {out} failed:\n{check.stdout}{check.stderr}"
    return out


class EnvoyProc:
    """Envoy with a config of envoy_config(); ready at /ready (the tests wait for the hosts they need)."""

    def __init__(self, name: str, log_dir: Path, config: Path, port: int, admin: int):
        self.port, self.admin = port, admin
        self.proc = launcher.envoy(log_dir, ENVOY_BIN, config, admin, authz_health=False, name=name)

    def start(self) -> None:
        self.proc.launch(READY_TIMEOUT)

    def authz_hosts(self) -> dict[int, str]:
        """Envoy's health flags per better_authz endpoint port ("healthy", "/failed_active_hc", ...)."""
        try:
            text = _get_text(f"http://127.0.0.1:{self.admin}/clusters", timeout=2)
        except Exception:
            return {}
        hosts = {}
        for line in text.splitlines():
            parts = line.split("::")
            if len(parts) == 4 and parts[0] == "better_authz" and parts[2] == "health_flags":
                hosts[int(parts[1].rsplit(":", 1)[1])] = parts[3]
        return hosts

    def wait_host(self, port: int, healthy: bool, timeout: float = READY_TIMEOUT) -> float:
        want = "healthy" if healthy else "unhealthy"

        def seen() -> bool:
            flags = self.authz_hosts().get(port)
            return flags is not None and ((flags == "healthy") == healthy)

        wait_until(self.proc, f"Envoy to see better-authz :{port} {want}", seen, timeout)
        return time.monotonic()

    def stats(self, prefix: str) -> dict[str, int]:
        out = {}
        for line in _get_text(f"http://127.0.0.1:{self.admin}/stats?filter={prefix}").splitlines():
            name, _, value = line.partition(": ")
            if value.strip().isdigit():
                out[name] = int(value)
        return out


def log_tails(*procs: Proc) -> str:
    return "\n".join(f"--- {p.name} ({'running' if p.running() else 'stopped'}) {p.log_path} ---\n{p.tail()}"
                     for p in procs)


# --------------------------------------------------------------------------------------------- shared stack

@dataclass
class Base:
    """Better Auth and the todo back end, shared by the tests of one module; logs in `log_dir`."""
    log_dir: Path
    better_auth: int
    todo: int
    todo_admin: int
    procs: list[Proc]
    users: list[User] = field(default_factory=list)

    @property
    def better_auth_url(self) -> str:
        return f"http://127.0.0.1:{self.better_auth}"

    def backend_count(self) -> int:
        resp = raw_request(self.todo_admin, "GET", "/requests", timeout=60)
        assert resp.status == 200, resp
        return len(resp.json())

    def backend_clear(self) -> None:
        assert raw_request(self.todo_admin, "DELETE", "/requests").status == 200

    def sign_up(self, name: str) -> User:
        """Straight to Better Auth (no proxy involved), from a distinct loopback address: sign-up is rate
        limited per client address."""
        email = f"lc-{name.lower()}-{os.urandom(4).hex()}@example.com"
        for attempt in range(3):  # Better Auth's sign-up rate limit: wait out its 10 s window, at most twice
            ip = next(_source_ips)
            resp = raw_request(self.better_auth, "POST", "/api/auth/sign-up/email",
                               [("Content-Type", "application/json"), ("Origin", self.better_auth_url),
                                ("X-Forwarded-For", ip)],
                               json.dumps({"name": name, "email": email, "password": PASSWORD}).encode(),
                               source_ip=ip)
            if resp.status != 429 or attempt == 2:
                break
            time.sleep(11)
        assert resp.status == 200, f"sign-up failed: {resp!r}"
        cookie = session_cookie(resp)
        assert cookie, resp
        return User(id=resp.json()["user"]["id"], email=email, name=name, cookie=cookie, source_ip=ip)


@contextlib.contextmanager
def running_base(log_dir: Path):
    """A Base with USERS signed-up users, for a module fixture: `log_dir` emptied of files first; everything
    stopped on exit."""
    log_dir.mkdir(parents=True, exist_ok=True)
    for old in log_dir.iterdir():
        if old.is_file():
            old.unlink()
    if not ENVOY_BIN.exists():
        pytest.fail(f"{ENVOY_BIN} missing: run scripts/install-deps.sh", pytrace=False)
    ba, todo, todo_admin = free_ports(3)
    better_auth = launcher.better_auth(log_dir, ba, secret="lifecycle-" + os.urandom(24).hex(),
                                       trusted_origins=[f"http://127.0.0.1:{ba}"])
    backend = launcher.todo_backend(log_dir, todo, todo_admin)
    b = Base(log_dir, ba, todo, todo_admin, [better_auth, backend])
    try:
        for proc in b.procs:
            proc.launch(READY_TIMEOUT)
        b.users = [b.sign_up(f"Load{i}") for i in range(USERS)]
        yield b
    finally:
        launcher.stop_all(b.procs)


@contextlib.contextmanager
def deployment(b: Base, name: str, instances: int = 1, authz_env: dict[str, str] | None = None,
               better_auth_url: str | None = None, dead_endpoints: int = 0, **envoy_opts):
    """`instances` better-authz processes behind one Envoy, whose better_authz cluster lists
    `dead_endpoints` more addresses where nothing listens; yields (Envoy, [instances]); stops them all."""
    authz = [authz_instance(b.log_dir, f"{name}-authz-{chr(ord('a') + i)}", better_auth_url or b.better_auth_url,
                            authz_env) for i in range(instances)]
    envoy_port, envoy_admin, *dead = free_ports(2 + dead_endpoints)
    conf = envoy_config(f"{name}-envoy", b.log_dir, envoy=envoy_port, admin=envoy_admin, better_auth=b.better_auth,
                        todo=b.todo, authz_grpc=[a.grpc for a in authz] + dead, **envoy_opts)
    envoy = EnvoyProc(f"{name}-envoy", b.log_dir, conf, envoy_port, envoy_admin)
    try:
        for a in authz:
            a.start()
        for a in authz:
            a.wait_ready()
        envoy.start()
        if envoy_opts.get("health_checks", True):
            for a in authz:
                envoy.wait_host(a.grpc, healthy=True)
        yield envoy, authz
    finally:
        envoy.proc.stop()
        for a in authz:
            a.proc.stop(timeout=15)


# --------------------------------------------------------------------------------------------- load

@dataclass(frozen=True)
class Case:
    kind: str                  # own | other | none | forged
    path: str
    cookie: str | None
    status: int                # the right answer
    code: str | None           # the right error_code for a denial


def mix(users: list[User]) -> list[Case]:
    """Per user: own path twice (200), another user's path (403), no cookie (401), forged signature (401).
    40 % allowed, 60 % denied, every denial but `none` costing a Better Auth lookup like an allow does."""
    cases = []
    for i, user in enumerate(users):
        other = users[(i + 1) % len(users)]
        name, value = user.cookie.split("=", 1)
        token, _, sig = value.partition(".")
        forged = f"{name}={token}.{('B' if sig.startswith('A') else 'A') * 4}{sig[4:]}"
        own = Case("own", f"/api/{user.id}/tasks", user.cookie, 200, None)
        cases += [own,
                  Case("other", f"/api/{other.id}/tasks", user.cookie, 403, "USER_MISMATCH"),
                  Case("none", f"/api/{user.id}/tasks", None, 401, "SESSION_REQUIRED"),
                  own,
                  Case("forged", f"/api/{user.id}/tasks", forged, 401, "SESSION_INVALID")]
    return cases


def judge(case: Case, status: int, headers: list[tuple[str, str]], body: bytes) -> str | None:
    """None when the answer is right, else what is wrong."""
    served = any(k.lower() == "x-served-by" and v == "todo-backend" for k, v in headers)
    if case.status == 200:
        # The back end itself answers 403 when x-user-id is not the path's user: 200 from it proves the
        # identity header was right.
        return None if status == 200 and served else f"expected 200 from the back end, got {status}"
    if served:
        return f"expected {case.status} {case.code}, but the back end answered {status}"
    if status != case.status:
        return f"expected {case.status} {case.code}, got {status}"
    try:
        code = json.loads(body).get("error_code")
    except ValueError:
        code = None
    return None if code == case.code else f"expected {case.code}, got {status} {body[:120]!r}"


@dataclass
class LoadResult:
    started: float = 0.0
    ended: float = 0.0
    sent: int = 0
    missed_slots: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    statuses: collections.Counter = field(default_factory=collections.Counter)
    by_kind: collections.Counter = field(default_factory=collections.Counter)
    allowed: int = 0           # answers from the back end
    errors: list[tuple[float, str]] = field(default_factory=list)   # (t, what): 5xx and transport errors
    wrong: list[tuple[float, str]] = field(default_factory=list)    # (t, what): other wrong answers

    @property
    def duration(self) -> float:
        return self.ended - self.started

    def merge(self, other: "LoadResult") -> None:
        self.sent += other.sent
        self.missed_slots += other.missed_slots
        self.latencies_ms += other.latencies_ms
        self.statuses.update(other.statuses)
        self.by_kind.update(other.by_kind)
        self.allowed += other.allowed
        self.errors += other.errors
        self.wrong += other.wrong

    def summary(self) -> str:
        lat = sorted(self.latencies_ms)
        return (f"{self.sent} requests in {self.duration:.1f}s ({self.sent / max(self.duration, 1e-9):.1f}/s), "
                f"statuses {dict(self.statuses)}, kinds {dict(self.by_kind)}, errors {len(self.errors)}, "
                f"wrong {len(self.wrong)}, missed slots {self.missed_slots}, p50 {percentile(lat, 50):.1f} ms, "
                f"p99 {percentile(lat, 99):.1f} ms, max {max(lat, default=0):.1f} ms; "
                f"first problems: {(self.errors + self.wrong)[:10]}")


def run_load(port: int, cases: list[Case], rate: float, seconds: float, threads: int = 8,
             stop: threading.Event | None = None) -> LoadResult:
    """Open-loop load at `rate` requests/s for at most `seconds` (or until `stop`), spread over `threads`
    keep-alive HTTP/1.1 connections. A thread that falls more than 1 s behind its schedule skips slots
    (counted) instead of bursting. Hard bounds: rate × seconds requests, seconds + 15 s wall time."""
    stop = stop or threading.Event()
    period = threads / rate
    start = time.monotonic() + 0.05
    end = start + seconds
    max_per_thread = int(rate * seconds / threads) + 1
    parts = [LoadResult() for _ in range(threads)]

    def worker(i: int) -> None:
        res = parts[i]
        conn: http.client.HTTPConnection | None = None
        try:
            for k in range(max_per_thread):
                slot = start + (k + i / threads) * period
                if slot >= end or stop.is_set():
                    break
                now = time.monotonic()
                if slot > now:
                    time.sleep(slot - now)
                elif now - slot > 1.0:
                    res.missed_slots += 1
                    continue
                case = cases[(k * threads + i) % len(cases)]
                headers = {"Cookie": case.cookie} if case.cookie else {}
                t0 = time.perf_counter()
                try:
                    if conn is None:
                        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                    conn.request("GET", case.path, headers=headers)
                    resp = conn.getresponse()
                    body = resp.read()
                    status, resp_headers = resp.status, resp.getheaders()
                    if resp.will_close:
                        conn.close()
                        conn = None
                except (OSError, http.client.HTTPException) as exc:
                    res.sent += 1
                    res.by_kind[case.kind] += 1
                    res.statuses["error"] += 1
                    res.errors.append((time.monotonic() - start, f"{case.kind}: {type(exc).__name__}: {exc}"))
                    if conn is not None:
                        conn.close()
                        conn = None
                    continue
                res.latencies_ms.append((time.perf_counter() - t0) * 1000)
                res.sent += 1
                res.by_kind[case.kind] += 1
                res.statuses[status] += 1
                if any(k.lower() == "x-served-by" and v == "todo-backend" for k, v in resp_headers):
                    res.allowed += 1
                problem = judge(case, status, resp_headers, body)
                if problem:
                    where = res.errors if status >= 500 else res.wrong
                    where.append((round(time.monotonic() - start, 3), f"{case.kind} {case.path}: {problem}"))
        finally:
            if conn is not None:
                conn.close()

    pool = [threading.Thread(target=worker, args=(i,), name=f"load-{i}", daemon=True) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(max(0.0, end - time.monotonic()) + 15)
    stop.set()
    result = LoadResult(started=start, ended=time.monotonic())
    for part in parts:
        result.merge(part)
    assert not any(t.is_alive() for t in pool), "load threads did not stop"
    return result


