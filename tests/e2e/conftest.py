"""End-to-end harness: real Better Auth, todo back end, better-authz, Envoy and nginx on free loopback ports.

Everything here is a real process: Better Auth 1.7.25 on Node (demo/better-auth/server.mjs, memory adapter),
the stdlib todo back end (examples/todo-backend/app.py), the better-authz binary ($BETTER_AUTHZ_BIN,
default target/debug/better-authz), Envoy 1.40 from .tools/venv and the system nginx, with the shipped
configs rendered onto other ports by scripts/render-config.py. They are started by scripts/launcher.py,
the same launcher as the demo and the benchmark. Logs go to .e2e-logs/.
"""

from __future__ import annotations

import contextlib
import http.client
import itertools
import json
import os
import re
import socket
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
import launcher  # noqa: E402
from launcher import ROOT, NotReady, Proc, free_ports, render  # noqa: E402

# Shared assertion helpers of the adversarial test files: rewrite their asserts too (detailed failures).
pytest.register_assert_rewrite("adversary")

# E2E_LOG_DIR: another logs directory (it is wiped at start-up), so two runs on one machine do not delete
# each other's logs and nginx prefix directory.
LOG_DIR = Path(os.environ.get("E2E_LOG_DIR") or ROOT / ".e2e-logs").resolve()
READY_TIMEOUT = float(os.environ.get("E2E_READY_TIMEOUT", "60"))

# Better Auth's refresh interval in this stack: get-session slides the expiry and answers with a fresh
# Set-Cookie once this many seconds have passed since the last refresh.
SESSION_UPDATE_AGE = 2
# better-authz's deadline for Better Auth calls (generous for slow CI machines) and Envoy's Check deadline,
# which must stay above it so better-authz can answer its own 503 first.
UPSTREAM_TIMEOUT_MS = 1000
ENVOY_CHECK_TIMEOUT = "2s"

PROXIES = ("envoy", "nginx")
PASSWORD = "correct-horse-battery-staple"

# Distinct loopback source addresses for sign-ups: Better Auth rate-limits sign-up/sign-in per client IP
# (3 per 10 s), and both proxies pass the real peer address on, as they would for distinct browsers.
_source_ips = (f"127.0.{a}.{b}" for a, b in itertools.product(range(1, 250), range(2, 250)))


# --------------------------------------------------------------------------------------------- HTTP client

@dataclass
class Response:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header_values(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def header(self, name: str) -> str | None:
        values = self.header_values(name)
        return values[0] if values else None

    def json(self):
        return json.loads(self.body)

    @property
    def from_backend(self) -> bool:
        return self.header("x-served-by") == "todo-backend"

    def __repr__(self) -> str:
        return f"Response({self.status}, headers={self.headers!r}, body={self.body[:300]!r})"


def raw_request(port: int, method: str, path: str, headers: list[tuple[str, str]] = (),
                body: bytes | None = None, source_ip: str | None = None, timeout: float = 10) -> Response:
    """One request with headers sent exactly as given (duplicates and case preserved)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout,
                                      source_address=(source_ip, 0) if source_ip else None)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        for name, value in headers:
            conn.putheader(name, value)
        if body is not None:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        resp = conn.getresponse()
        return Response(resp.status, resp.getheaders(), resp.read())
    finally:
        conn.close()


def raw_bytes_request(port: int, data: bytes, timeout: float = 10) -> Response:
    """Send `data` byte for byte (a whole request, including what http.client refuses to send: CR, LF, NUL,
    non-ASCII, folded or malformed header lines) and parse the answer. A connection closed or reset without
    an answer is status 0."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        sock.sendall(data)
        resp = http.client.HTTPResponse(sock, method=data.split(b" ", 1)[0].decode("ascii", "replace"))
        try:
            resp.begin()
        except (http.client.HTTPException, ConnectionError):
            return Response(0, [], b"")
        return Response(resp.status, resp.getheaders(), resp.read())
    finally:
        sock.close()


@dataclass
class User:
    id: str
    email: str
    name: str
    cookie: str  # "better-auth.session_token=..." (the Cookie header value)
    source_ip: str


# --------------------------------------------------------------------------------------------- the stack

@dataclass
class Stack:
    ports: dict[str, int]
    procs: dict[str, Proc]
    allowed_count: int = 0          # answers that came from the back end, through either proxy
    proxied_count: int = 0
    history: list[str] = field(default_factory=list)
    bins: dict[str, Path] = field(default_factory=dict)   # "authz", "nginx": for ExtraProcs

    # -- URLs and ports
    def proxy_port(self, proxy: str) -> int:
        return self.ports[proxy]

    def origin(self, proxy: str) -> str:
        return f"http://127.0.0.1:{self.ports[proxy]}"

    # -- requests through a proxy (tallied for the back-end accounting test)
    def request(self, proxy: str, method: str, path: str, headers: list[tuple[str, str]] = (),
                body: bytes | None = None, source_ip: str | None = None) -> Response:
        resp = raw_request(self.ports[proxy], method, path, headers, body, source_ip)
        self.proxied_count += 1
        if resp.from_backend:
            self.allowed_count += 1
        self.history.append(f"{proxy} {method} {path} -> {resp.status}{' (back end)' if resp.from_backend else ''}")
        return resp

    def request_bytes(self, proxy: str, data: bytes, label: str = "") -> Response:
        """A raw request (see raw_bytes_request) through a proxy, tallied like request()."""
        resp = raw_bytes_request(self.ports[proxy], data)
        self.proxied_count += 1
        if resp.from_backend:
            self.allowed_count += 1
        self.history.append(f"{proxy} raw {label or data[:60]!r} -> {resp.status}"
                            f"{' (back end)' if resp.from_backend else ''}")
        return resp

    # -- what the back end received
    def backend_requests(self) -> list[dict]:
        resp = raw_request(self.ports["todo_admin"], "GET", "/requests")
        assert resp.status == 200, resp
        return resp.json()

    @contextlib.contextmanager
    def backend_delta(self):
        """Collect the requests the back end receives inside the with-block."""
        before = len(self.backend_requests())
        seen: list[dict] = []
        yield seen
        time.sleep(0.05)  # the back end records before it answers; this only guards against reordering
        seen.extend(self.backend_requests()[before:])

    # -- what Better Auth received (test-only recorder in demo/better-auth/server.mjs)
    def better_auth_requests(self) -> list[dict]:
        resp = raw_request(self.ports["better_auth"], "GET", "/__debug/requests")
        assert resp.status == 200, resp
        return resp.json()

    @contextlib.contextmanager
    def better_auth_lookups(self):
        """Collect the get-session requests Better Auth receives inside the with-block (better-authz's
        lookups; the readiness probe's /ok calls are left out)."""
        before = len(self.better_auth_requests())
        seen: list[dict] = []
        yield seen
        seen.extend(r for r in self.better_auth_requests()[before:]
                    if r["path"].startswith("/api/auth/get-session"))

    # -- Better Auth flows through a proxy
    def sign_up(self, proxy: str = "envoy", extra_headers: list[tuple[str, str]] = (),
                name: str | None = None) -> User:
        tag = uuid.uuid4().hex[:10]
        email = f"user-{tag}@example.com"
        name = name or f"User {tag}"
        ip = next(_source_ips)
        resp = self.request(proxy, "POST", "/api/auth/sign-up/email",
                            [("Content-Type", "application/json"), ("Origin", self.origin(proxy)),
                             *extra_headers],
                            json.dumps({"name": name, "email": email, "password": PASSWORD}).encode(),
                            source_ip=ip)
        assert resp.status == 200, f"sign-up through {proxy} failed: {resp!r}"
        cookie = session_cookie(resp)
        assert cookie, f"sign-up through {proxy} set no session cookie: {resp!r}"
        user = resp.json()["user"]
        return User(id=user["id"], email=email, name=name, cookie=cookie, source_ip=ip)

    def sign_in(self, proxy: str, user: User, extra_headers: list[tuple[str, str]] = ()) -> Response:
        return self.request(proxy, "POST", "/api/auth/sign-in/email",
                            [("Content-Type", "application/json"), ("Origin", self.origin(proxy)),
                             *extra_headers],
                            json.dumps({"email": user.email, "password": PASSWORD}).encode(),
                            source_ip=user.source_ip)

    def sign_out(self, proxy: str, user: User) -> Response:
        return self.request(proxy, "POST", "/api/auth/sign-out",
                            [("Content-Type", "application/json"), ("Origin", self.origin(proxy)),
                             ("Cookie", user.cookie)], b"{}", source_ip=user.source_ip)

    def tasks(self, proxy: str, user_id: str, cookie: str | None = None,
              headers: list[tuple[str, str]] = (), method: str = "GET", body: bytes | None = None) -> Response:
        hdrs = list(headers)
        if cookie:
            hdrs.append(("Cookie", cookie))
        if body is not None:
            hdrs.append(("Content-Type", "application/json"))
        return self.request(proxy, method, f"/api/{user_id}/tasks", hdrs, body)

    # -- process control
    def logs(self) -> str:
        parts = []
        for proc in self.procs.values():
            parts.append(f"--- {proc.name} ({'running' if proc.running() else 'stopped'}) {proc.log_path} ---\n"
                         f"{proc.tail()}")
        for extra in ("nginx/logs/error.log", "nginx/logs/access.log"):
            path = LOG_DIR / extra
            if path.exists():
                lines = path.read_text(errors="replace").splitlines()[-25:]
                parts.append(f"--- {path} ---\n" + "\n".join(lines))
        parts.append("--- last requests sent by the tests ---\n" + "\n".join(self.history[-15:]))
        return "\n".join(parts)

    def wait_ready(self, name: str) -> None:
        self.procs[name].wait_ready(READY_TIMEOUT)

    def restart(self, name: str) -> None:
        self.procs[name].stop()
        self.procs[name].start()
        self.wait_ready(name)


# --------------------------------------------------------------------------------------------- more processes

def metric_value(text: str, name: str, **labels: str) -> float:
    """The sum of every series of `name` in Prometheus text `text` whose labels include `labels` (0 if none)."""
    total = 0.0
    for line in text.splitlines():
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)", line)
        if not m or m.group(1) != name:
            continue
        got = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        if all(got.get(k) == v for k, v in labels.items()):
            total += float(m.group(3))
    return total


@dataclass
class Authz:
    """One better-authz process started by ExtraProcs: `ports` has "grpc", "http", "admin" (a listener turned
    off has no port)."""
    name: str
    proc: Proc
    ports: dict[str, int]

    def metrics(self) -> str:
        resp = raw_request(self.ports["admin"], "GET", "/metrics")
        assert resp.status == 200, resp
        return resp.body.decode()

    def metric(self, name: str, **labels: str) -> float:
        return metric_value(self.metrics(), name, **labels)

    def decisions(self, reason: str, transport: str = "http") -> float:
        return self.metric("better_authz_decisions_total", transport=transport, reason=reason)


def authz_env(better_auth: int, grpc: int | None, http: int | None, admin: int) -> dict[str, str]:
    """The stack's better-authz settings (Better Auth on port `better_auth`, public paths, user pattern) on these
    ports; None: that listener off."""
    return launcher.authz_env(f"http://127.0.0.1:{better_auth}", grpc, http, admin, UPSTREAM_TIMEOUT_MS)


class ExtraProcs:
    """Processes next to the session stack, sharing its Better Auth and todo back end: more better-authz
    instances (other settings), nginx front ends (test fixtures under tests/e2e/fixtures/, or the shipped
    nginx/nginx.conf), Envoy front ends (the shipped envoy/envoy.yaml) and, for
    settings the stack's cannot have, more Better Auth servers. Use as a context
    manager in a module fixture: everything is stopped on exit, also when start-up fails. While they run they
    are in `stack.procs` (their log tails appear in failure reports), and nginx listen ports registered under a
    name are in `stack.ports`, so `stack.request(name, ...)` reaches them and tallies back-end answers."""

    def __init__(self, stack: "Stack"):
        self.stack = stack
        self.procs: list[Proc] = []
        self.port_names: list[str] = []

    def __enter__(self) -> "ExtraProcs":
        return self

    def __exit__(self, *exc) -> None:
        launcher.stop_all(self.procs)
        for proc in self.procs:
            self.stack.procs.pop(proc.name, None)
        for name in self.port_names:
            self.stack.ports.pop(name, None)

    def _start(self, proc: Proc) -> None:
        assert proc.name not in self.stack.procs, proc.name
        self.procs.append(proc)
        self.stack.procs[proc.name] = proc
        proc.start()

    def authz(self, name: str, env: dict[str, str] | None = None, ready: str = "/readyz") -> Authz:
        """A better-authz with the stack's settings plus `env`; an address set to "off" in `env` gets no port; with
        AUTHZ_POLICY_FILE, without the shorthand variables (launcher.with_extra). Waits for `ready` on the admin
        port (use "/healthz" when Better Auth is deliberately unreachable)."""
        env = dict(env or {})
        grpc, http, admin = free_ports(3)
        ports = {"grpc": grpc, "http": http, "admin": admin}
        for key, var in (("grpc", "AUTHZ_GRPC_ADDR"), ("http", "AUTHZ_HTTP_ADDR")):
            if env.get(var) == "off":
                del ports[key]
        full = launcher.with_extra(authz_env(self.stack.ports["better_auth"], ports.get("grpc"), ports.get("http"),
                                             admin), env)
        proc = launcher.better_authz(LOG_DIR, self.stack.bins["authz"], full, name=name, ready=ready)
        self._start(proc)
        proc.wait_ready(READY_TIMEOUT)
        return Authz(name, proc, ports)

    def better_auth(self, name: str, env: dict[str, str] | None = None) -> int:
        """Another Better Auth (demo/better-auth/server.mjs: its own memory store and secret, the request
        recorder on) with `env` on top; returns its port once /api/auth/ok answers."""
        port = free_ports(1)[0]
        proc = launcher.better_auth(LOG_DIR, port, secret="e2e-" + uuid.uuid4().hex + uuid.uuid4().hex,
                                    env={"BETTER_AUTH_DEBUG_RECORD": "1", **(env or {})}, name=name)
        self._start(proc)
        proc.wait_ready(READY_TIMEOUT)
        return port

    def envoy(self, name: str, authz: "Authz", replace: list[str] = ()) -> int:
        """The shipped envoy/envoy.yaml (with the "OLD=NEW" texts of `replace`) in front of `authz` (its gRPC
        port), sharing the stack's Better Auth and back end, on a free port registered in stack.ports as `name`
        (and its admin port); waits until Envoy's health check sees `authz` healthy. Returns the listen port."""
        port, admin = free_ports(2)
        conf = launcher.render_envoy({"envoy": port, "envoy_admin": admin, "authz_grpc": authz.ports["grpc"],
                                      "better_auth": self.stack.ports["better_auth"], "todo": self.stack.ports["todo"]},
                                     LOG_DIR / f"{name}.yaml", ENVOY_CHECK_TIMEOUT, replace)
        proc = launcher.envoy(LOG_DIR, launcher.ENVOY_BIN, conf, admin, name=name)
        self._start(proc)
        for port_name, value in ((name, port), (f"{name}_admin", admin)):
            assert port_name not in self.stack.ports, port_name
            self.stack.ports[port_name] = value
            self.port_names.append(port_name)
        proc.wait_ready(READY_TIMEOUT)
        return port

    def nginx(self, name: str, template: str, ports: dict[int, int], listen: dict[str, int],
              replace: list[str] = ()) -> Proc:
        """nginx with `template` (relative to the repository) rendered with `ports` (template port -> real
        port) and the "OLD=NEW" texts of `replace`, prefix directory LOG_DIR/name. `listen`: name -> real port
        it listens on, registered in stack.ports and waited for."""
        prefix = launcher.nginx_prefix(LOG_DIR / name)
        conf = render(template, ports, LOG_DIR / f"{name}.conf", replace)
        nginx_bin = self.stack.bins["nginx"]
        problem = launcher.check_nginx(nginx_bin, prefix, conf)
        assert problem is None, f"nginx -t {conf} failed:\n{problem}"
        proc = launcher.nginx(LOG_DIR, nginx_bin, prefix, conf, listen.values(), name=name)
        self._start(proc)
        for port_name, port in listen.items():
            assert port_name not in self.stack.ports, port_name
            self.stack.ports[port_name] = port
            self.port_names.append(port_name)
        proc.wait_ready(READY_TIMEOUT)
        return proc


def process_rss_kib(pid: int) -> int:
    """VmRSS of a process, KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


def listening_ports(pid: int) -> set[int]:
    """TCP ports the process listens on (its sockets in LISTEN state, IPv4 and IPv6)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            if cols[3] == "0A" and cols[9] in inodes:  # 0A: TCP_LISTEN
                ports.add(int(cols[1].rsplit(":", 1)[1], 16))
    return ports


def session_cookie(resp: Response) -> str | None:
    for value in resp.header_values("set-cookie"):
        first = value.split(";", 1)[0].strip()
        if first.startswith("better-auth.session_token=") and first != "better-auth.session_token=":
            return first
    return None


@pytest.fixture(scope="session")
def stack(request):
    authz_bin = launcher.authz_bin_from_env(ROOT / "target" / "debug" / "better-authz")
    if not os.access(authz_bin, os.X_OK):
        pytest.fail(f"better-authz binary not found at {authz_bin}: build it with `cargo build` "
                    f"(or set BETTER_AUTHZ_BIN)", pytrace=False)
    if not launcher.ENVOY_BIN.exists():
        pytest.fail(f"{launcher.ENVOY_BIN} missing: run scripts/install-deps.sh", pytrace=False)
    if not (ROOT / "demo" / "better-auth" / "node_modules" / "better-auth").exists():
        pytest.fail("demo/better-auth/node_modules missing: run scripts/install-deps.sh", pytrace=False)
    nginx_bin = launcher.find_nginx()
    if nginx_bin is None:
        pytest.fail("nginx not found: run scripts/install-deps.sh", pytrace=False)

    launcher.fresh_log_dir(LOG_DIR)
    ports = dict(zip(launcher.DEMO_PORTS, free_ports(len(launcher.DEMO_PORTS))))
    try:
        procs = launcher.stack(
            LOG_DIR, ports, authz_bin=authz_bin, nginx_bin=nginx_bin,
            secret="e2e-" + uuid.uuid4().hex + uuid.uuid4().hex,
            better_auth_env={"SESSION_UPDATE_AGE": str(SESSION_UPDATE_AGE), "BETTER_AUTH_DEBUG_RECORD": "1"},
            upstream_timeout_ms=UPSTREAM_TIMEOUT_MS, envoy_check_timeout=ENVOY_CHECK_TIMEOUT)
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)
    st = Stack(ports=ports, procs=procs, bins={"authz": authz_bin, "nginx": nginx_bin})
    request.addfinalizer(lambda: launcher.stop_all(procs.values()))
    request.config._e2e_stack = st  # for the failure hook below

    try:
        for proc in procs.values():
            proc.launch(READY_TIMEOUT)
    except NotReady as exc:
        pytest.fail(f"could not start the stack: {exc}\n\n{st.logs()}", pytrace=False)
    return st


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed:
        st = getattr(item.config, "_e2e_stack", None)
        if st is not None:
            rep.sections.append(("e2e process logs (tails; full logs in .e2e-logs/)", st.logs()))
