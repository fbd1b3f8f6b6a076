#!/usr/bin/env python3
"""Start and stop the better-authz stack on loopback (standard library only).

The stack: Better Auth (demo/better-auth/server.mjs), the todo back end (examples/todo-backend/app.py),
better-authz, Envoy (envoy/envoy.yaml) and nginx (nginx/nginx.conf). One implementation for

  - demo/run.sh, through this file's `demo` command (the shipped configs on their own ports);
  - bench/bench.py and tests/e2e/conftest.py, which import it (free ports, configs rendered onto them
    by scripts/render-config.py).

It holds the processes (own session, log file, SIGTERM then SIGKILL), free ports, readiness checks, config
rendering and each component's argv and environment; callers add their own settings on top.

    python3 scripts/launcher.py demo --authz-bin PATH [--smoke] [--envoy-bin PATH] [--nginx-bin PATH]
                                     [--ready-timeout SECONDS]
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Callable, Iterable

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".tools" / "venv"
ENVOY_BIN = VENV / "bin" / "envoy"
ENVOY_CONFIG = ROOT / "envoy" / "envoy.yaml"
NGINX_CONFIG = ROOT / "nginx" / "nginx.conf"
READY_TIMEOUT = 60.0

# The ports of the shipped configs; the demo uses them as they are, everyone else renders the configs
# onto free ports with these names.
DEMO_PORTS = {
    "better_auth": 3000, "todo": 8000, "todo_admin": 8001,
    "authz_grpc": 9001, "authz_http": 9002, "authz_admin": 9090,
    "envoy": 8080, "nginx": 8081, "envoy_admin": 9901,
}
PORT_LABELS = {
    "better_auth": "Better Auth", "todo": "todo back end", "todo_admin": "todo back end admin",
    "authz_grpc": "better-authz gRPC", "authz_http": "better-authz HTTP", "authz_admin": "better-authz admin",
    "envoy": "Envoy", "nginx": "nginx", "envoy_admin": "Envoy admin",
}
# The ports each shipped config names (render-config.py insists that every mapped port occurs).
ENVOY_PORTS = ("envoy", "envoy_admin", "authz_grpc", "better_auth", "todo")
NGINX_PORTS = ("nginx", "authz_http", "better_auth", "todo")
SHIPPED_CHECK_TIMEOUT = "0.25s"  # envoy/envoy.yaml's ext_authz deadline
# The credentials the stack's better-authz reads (AUTHZ_CREDENTIALS; the binary's default is `cookie`): the
# session cookie, Better Auth's bearer plugin (Authorization: Bearer) and its API-key plugin (x-api-key), all
# three enabled in demo/better-auth/server.mjs and passed on by both shipped proxy configs. Only stack() sets
# it: authz_env() (more instances in the tests, the benchmark) keeps the binary's default.
STACK_CREDENTIALS = "cookie,bearer,api-key"
# What the stack's better-authz hands the back end besides x-user-id/-email/-name (only stack() sets these too):
# the jwt plugin's token (AUTHZ_HEADER_JWT) and fields of get-session's answer (AUTHZ_HEADER_MAP: the admin
# plugin's role and impersonator, the organization plugin's active organization). envoy/envoy.yaml and
# nginx/nginx.conf name the same headers (nginx copies them from the /auth answer; both remove a client's
# copies on the route to Better Auth).
STACK_HEADER_JWT = "x-user-jwt"
STACK_HEADER_MAP = ("x-user-role=user.role,x-org-id=session.activeOrganizationId,"
                    "x-impersonated-by=session.impersonatedBy")
# Every header the stack's better-authz sets for the back end on an allow with a session (and removes on others).
STACK_SESSION_HEADERS = (STACK_HEADER_JWT, *(entry.split("=", 1)[0] for entry in STACK_HEADER_MAP.split(",")))
# The route policy the demo runs with (AUTHZ_POLICY_FILE), and the header nginx/nginx.conf names a policy route in
# on its /auth subrequest (AUTHZ_ROUTE_HEADER; Envoy names it in the Check's context_extensions).
DEMO_POLICY = ROOT / "demo" / "policy.yaml"
ROUTE_HEADER = "x-authz-route"
# The shorthand of a policy (public prefixes, the per-user pattern): better-authz refuses it next to a policy file.
SHORTHAND_VARS = ("AUTHZ_PUBLIC_PATHS", "AUTHZ_USER_PATH_PATTERN")


# --------------------------------------------------------------------------------------------- processes

class NotReady(RuntimeError):
    """A process exited, or did not pass a readiness check in time."""

    def __init__(self, proc: "Proc", what: str, timeout: float, exited: bool):
        self.proc, self.what, self.timeout, self.exited = proc, what, timeout, exited
        head = (f"{proc.name} exited while waiting for {what}" if exited
                else f"timed out after {timeout:.0f}s waiting for {what}")
        super().__init__(f"{head}\n--- {proc.log_path} ---\n{proc.tail()}")


class Proc:
    """One child process. Own session: a Ctrl-C meant for the launcher does not reach the children first, and
    stop() ends each one by its own pid. stdin is /dev/null; stdout and stderr are appended to
    `log_dir`/`name`.log, each start headed by its command line. `ready`: (what, check) pairs that
    wait_ready() waits for in order; `extra_logs`: more files worth showing when it fails."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str] | None = None, *, log_dir: Path,
                 ready: Iterable[tuple[str, Callable[[], bool]]] = (), extra_logs: Iterable[Path] = (),
                 cwd: Path = ROOT):
        self.name = name
        self.argv = [str(a) for a in argv]
        # NO_COLOR: plain log files (tracing-subscriber and Better Auth's logger honour it).
        self.env = {**os.environ, "NO_COLOR": "1", **(env or {})}
        self.cwd = cwd
        self.log_path = Path(log_dir) / f"{name}.log"
        self.ready = list(ready)
        self.extra_logs = list(extra_logs)
        self.popen: subprocess.Popen | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        with open(self.log_path, "ab") as log:
            log.write(f"\n===== start #{self.starts}: {' '.join(self.argv)}\n".encode())
            log.flush()
            self.popen = subprocess.Popen(self.argv, env=self.env, cwd=self.cwd, stdin=subprocess.DEVNULL,
                                          stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        for what, check in self.ready:
            wait_until(self, what, check, timeout)

    def launch(self, timeout: float = READY_TIMEOUT) -> None:
        self.start()
        self.wait_ready(timeout)

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen else None

    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def terminate(self) -> None:
        if self.running():
            self.popen.send_signal(signal.SIGTERM)

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM, then SIGKILL if it is still running after `timeout` seconds."""
        if not self.running():
            return
        self.terminate()
        self._reap(time.monotonic() + timeout)

    def _reap(self, deadline: float) -> None:
        assert self.popen is not None
        try:
            self.popen.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(5)

    def tail(self, lines: int = 25) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


def stop_all(procs: Iterable[Proc], timeout: float = 5.0) -> None:
    """SIGTERM to every process, last started first; SIGKILL to those still running after `timeout` seconds."""
    procs = list(procs)[::-1]
    for proc in procs:
        try:
            proc.terminate()
        except OSError:
            pass
    deadline = time.monotonic() + timeout
    for proc in procs:
        if proc.popen is None:
            continue
        try:
            proc._reap(deadline)
        except Exception as exc:  # keep stopping the others
            print(f"launcher: stopping {proc.name} failed: {exc}", file=sys.stderr)


def free_ports(count: int) -> list[int]:
    """Ports the kernel hands out for port 0, all held open together so they are distinct."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def port_free(port: int) -> bool:
    """Nothing listens on 127.0.0.1:`port`. TIME_WAIT leftovers of an earlier run do not count, as for the
    servers themselves (SO_REUSEADDR)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            s.listen(1)
        except OSError:
            return False
    return True


# --------------------------------------------------------------------------------------------- readiness

def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return 200 <= resp.status < 300
    except Exception:
        return False


def tcp_ok(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def http_ready(label: str, url: str) -> tuple[str, Callable[[], bool]]:
    return f"{label} {url}", lambda: http_ok(url)


def tcp_ready(label: str, port: int) -> tuple[str, Callable[[], bool]]:
    return f"{label} listening on 127.0.0.1:{port}", lambda: tcp_ok(port)


def envoy_authz_healthy(admin_port: int) -> bool:
    """Envoy's active gRPC health check marks every better_authz endpoint healthy."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/clusters", timeout=2) as resp:
            text = resp.read().decode()
    except Exception:
        return False
    flags = [line for line in text.splitlines() if line.startswith("better_authz::") and "::health_flags::" in line]
    return bool(flags) and all(line.endswith("::healthy") for line in flags)


def wait_until(proc: Proc, what: str, check: Callable[[], bool], timeout: float = READY_TIMEOUT) -> None:
    """Poll `check` until it passes; NotReady when `proc` exits first or `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    while not check():
        if not proc.running():
            raise NotReady(proc, what, timeout, exited=True)
        if time.monotonic() > deadline:
            raise NotReady(proc, what, timeout, exited=False)
        time.sleep(0.1)


# --------------------------------------------------------------------------------------------- configs

def render(src: str | Path, ports: dict[int, int], out: Path, replace: Iterable[str] = ()) -> Path:
    """scripts/render-config.py: `src` (relative to the repository) with `ports` (old -> new) and `replace`
    ("OLD=NEW" texts), written to `out`."""
    argv = [sys.executable, str(ROOT / "scripts" / "render-config.py"), str(ROOT / src), "-o", str(out)]
    for old, new in ports.items():
        argv += ["--port", f"{old}={new}"]
    for item in replace:
        argv += ["--replace", item]
    subprocess.run(argv, check=True)
    return out


def _render_shipped(src: Path, names: Iterable[str], ports: dict[str, int], out: Path,
                    replace: list[str]) -> Path:
    mapping = {DEMO_PORTS[name]: ports[name] for name in names}
    if not replace and all(old == new for old, new in mapping.items()):
        return src
    return render(src, mapping, out, replace)


def render_envoy(ports: dict[str, int], out: Path, check_timeout: str | None = None,
                 replace: Iterable[str] = ()) -> Path:
    """envoy/envoy.yaml on `ports` (names of DEMO_PORTS), its Check deadline set to `check_timeout`, with the
    "OLD=NEW" texts of `replace`; the shipped file itself when nothing changes."""
    timeout = [f"timeout: {SHIPPED_CHECK_TIMEOUT}=timeout: {check_timeout}"] if check_timeout else []
    return _render_shipped(ENVOY_CONFIG, ENVOY_PORTS, ports, out, [*timeout, *replace])


def render_nginx(ports: dict[str, int], out: Path, replace: Iterable[str] = ()) -> Path:
    """nginx/nginx.conf on `ports` with the "OLD=NEW" texts of `replace`; the shipped file itself when nothing
    changes."""
    return _render_shipped(NGINX_CONFIG, NGINX_PORTS, ports, out, list(replace))


def nginx_prefix(prefix: Path) -> Path:
    """An nginx prefix directory (logs/, tmp/) its workers can enter: they run as an unprivileged user when
    the launcher runs as root."""
    for d in (prefix, prefix / "logs", prefix / "tmp"):
        d.mkdir(parents=True, exist_ok=True)
        d.chmod(0o755)
    return prefix


def check_nginx(binary: str | Path, prefix: Path, config: Path) -> str | None:
    """`nginx -t`: None when the config is good, else nginx's complaint."""
    res = subprocess.run([str(binary), "-t", "-q", "-p", str(prefix), "-c", str(config)],
                         capture_output=True, text=True)
    return None if res.returncode == 0 else (res.stdout + res.stderr).strip() or f"exit code {res.returncode}"


def find_nginx() -> Path | None:
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None)
    return Path(found) if found else None


def authz_bin_from_env(default: Path) -> Path:
    """$BETTER_AUTHZ_BIN (relative to the repository) or `default`."""
    path = Path(os.environ.get("BETTER_AUTHZ_BIN") or default)
    return path if path.is_absolute() else ROOT / path


# --------------------------------------------------------------------------------------------- components
# `wrap`: a command prefix such as ["taskset", "-c", "1"]; it must exec the command (the pid stays the same).

def better_auth(log_dir: Path, port: int, *, secret: str, trusted_origins: Iterable[str] = (),
                env: dict[str, str] | None = None, wrap: list[str] = (), name: str = "better-auth") -> Proc:
    url = f"http://127.0.0.1:{port}"
    full = {"PORT": str(port), "HOST": "127.0.0.1", "BETTER_AUTH_SECRET": secret, "BETTER_AUTH_URL": url}
    if trusted_origins:
        full["TRUSTED_ORIGINS"] = ",".join(trusted_origins)
    return Proc(name, [*wrap, "node", ROOT / "demo" / "better-auth" / "server.mjs"], {**full, **(env or {})},
                log_dir=log_dir, ready=[http_ready(name, f"{url}/api/auth/ok")])


def todo_backend(log_dir: Path, port: int, admin_port: int, *, wrap: list[str] = ()) -> Proc:
    return Proc("todo-backend", [*wrap, sys.executable, ROOT / "examples" / "todo-backend" / "app.py"],
                {"PORT": str(port), "ADMIN_PORT": str(admin_port), "HOST": "127.0.0.1"}, log_dir=log_dir,
                ready=[http_ready("todo back end admin", f"http://127.0.0.1:{admin_port}/healthz")])


def authz_env(better_auth_url: str, grpc: int | None, http: int | None, admin: int,
              upstream_timeout_ms: int | None = None) -> dict[str, str]:
    """better-authz in front of Better Auth at `better_auth_url`: /api/auth/ public, /api/{user_id}/ per user,
    on these ports (None: that listener off); RUST_LOG from the environment, else info."""
    env = {
        "BETTER_AUTH_URL": better_auth_url,
        "AUTHZ_PUBLIC_PATHS": "/api/auth/",
        "AUTHZ_USER_PATH_PATTERN": "/api/{user_id}/",
        "AUTHZ_GRPC_ADDR": f"127.0.0.1:{grpc}" if grpc else "off",
        "AUTHZ_HTTP_ADDR": f"127.0.0.1:{http}" if http else "off",
        "AUTHZ_ADMIN_ADDR": f"127.0.0.1:{admin}",
        "RUST_LOG": os.environ.get("RUST_LOG") or "info",
    }
    if upstream_timeout_ms is not None:
        env["AUTHZ_UPSTREAM_TIMEOUT_MS"] = str(upstream_timeout_ms)
    return env


def with_extra(env: dict[str, str], extra: dict[str, str] | None) -> dict[str, str]:
    """`env` with `extra` on top. A policy file (AUTHZ_POLICY_FILE) replaces the shorthand variables, which
    better-authz refuses next to it: they are dropped unless `extra` sets them itself."""
    extra = extra or {}
    if extra.get("AUTHZ_POLICY_FILE"):
        env = {k: v for k, v in env.items() if k not in SHORTHAND_VARS}
    return {**env, **extra}


def better_authz(log_dir: Path, binary: Path, env: dict[str, str], *, name: str = "better-authz",
                 ready: str = "/readyz", wrap: list[str] = ()) -> Proc:
    """better-authz with `env` (see authz_env); ready when its admin port answers `ready` with 2xx."""
    admin = env["AUTHZ_ADMIN_ADDR"]
    return Proc(name, [*wrap, binary], env, log_dir=log_dir,
                ready=[http_ready(f"{name}", f"http://{admin}{ready}")])


def envoy(log_dir: Path, binary: Path, config: Path, admin_port: int, *, authz_health: bool = True,
          args: Iterable[str] = (), name: str = "envoy", wrap: list[str] = ()) -> Proc:
    """Envoy with `config`; ready at /ready and, with `authz_health`, once its gRPC health check has seen every
    better-authz endpoint healthy (before that it fails every Check closed)."""
    ready = [http_ready("Envoy", f"http://127.0.0.1:{admin_port}/ready")]
    if authz_health:
        ready.append(("Envoy to see better-authz healthy (gRPC health check)", lambda: envoy_authz_healthy(admin_port)))
    return Proc(name, [*wrap, binary, "-c", config, "--disable-hot-restart", "--log-level", "warn", *args],
                log_dir=log_dir, ready=ready)


def nginx(log_dir: Path, binary: Path, prefix: Path, config: Path, listen: Iterable[int], *, name: str = "nginx",
          wrap: list[str] = ()) -> Proc:
    """nginx with `config` and prefix directory `prefix` (see nginx_prefix); ready when every port of `listen`
    accepts connections."""
    return Proc(name, [*wrap, binary, "-p", prefix, "-c", config], log_dir=log_dir,
                ready=[tcp_ready(name, port) for port in listen], extra_logs=[prefix / "logs" / "error.log"])


def stack(log_dir: Path, ports: dict[str, int], *, authz_bin: Path, nginx_bin: Path, envoy_bin: Path = ENVOY_BIN,
          secret: str, better_auth_env: dict[str, str] | None = None, authz_extra: dict[str, str] | None = None,
          upstream_timeout_ms: int | None = None, envoy_check_timeout: str | None = None) -> dict[str, Proc]:
    """The whole stack on `ports` (the names of DEMO_PORTS), in start order: better_auth, todo, authz, envoy,
    nginx. Renders the configs into `log_dir` when the ports or the Check deadline differ from the shipped
    ones, and prepares nginx's prefix `log_dir`/nginx. Raises RuntimeError when `nginx -t` fails."""
    p = ports
    envoy_conf = render_envoy(p, log_dir / "envoy.yaml", envoy_check_timeout)
    nginx_conf = render_nginx(p, log_dir / "nginx.conf")
    prefix = nginx_prefix(log_dir / "nginx")
    problem = check_nginx(nginx_bin, prefix, nginx_conf)
    if problem:
        raise RuntimeError(f"nginx -t failed:\n{problem}")
    # Both proxies are the browser-facing origins (server.mjs's default, on the demo ports).
    origins = [f"http://{host}:{p[proxy]}" for proxy in ("envoy", "nginx") for host in ("127.0.0.1", "localhost")]
    authz = with_extra({**authz_env(f"http://127.0.0.1:{p['better_auth']}", p["authz_grpc"], p["authz_http"],
                                    p["authz_admin"], upstream_timeout_ms), "AUTHZ_CREDENTIALS": STACK_CREDENTIALS,
                        "AUTHZ_HEADER_JWT": STACK_HEADER_JWT, "AUTHZ_HEADER_MAP": STACK_HEADER_MAP}, authz_extra)
    return {
        "better_auth": better_auth(log_dir, p["better_auth"], secret=secret, trusted_origins=origins,
                                   env=better_auth_env),
        "todo": todo_backend(log_dir, p["todo"], p["todo_admin"]),
        "authz": better_authz(log_dir, authz_bin, authz),
        "envoy": envoy(log_dir, envoy_bin, envoy_conf, p["envoy_admin"]),
        "nginx": nginx(log_dir, nginx_bin, prefix, nginx_conf, [p["nginx"]]),
    }


def fresh_log_dir(path: Path) -> Path:
    """Empty `path` (created, 0755 so nginx workers can reach their prefix inside it)."""
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    path.chmod(0o755)
    return path


# --------------------------------------------------------------------------------------------- the demo

DEMO_LOGS = ROOT / ".demo-logs"


def _say(msg: str) -> None:
    print(f"\033[1m==> {msg}\033[0m", flush=True)


def _err(msg: str) -> None:
    print(f"demo: ERROR: {msg}", file=sys.stderr, flush=True)


def _tail_log(proc: Proc) -> None:
    for path in (proc.log_path, *proc.extra_logs):
        print(f"----- last lines of {path} -----", file=sys.stderr)
        try:
            print("\n".join(path.read_text(errors="replace").splitlines()[-30:]), file=sys.stderr)
        except OSError:
            pass
    sys.stderr.flush()


def _walkthrough(p: dict[str, int], logs: Path) -> str:
    jar = logs / "cookies.txt"
    envoy_url, nginx_url = f"http://127.0.0.1:{p['envoy']}", f"http://127.0.0.1:{p['nginx']}"
    better_auth_url = f"http://127.0.0.1:{p['better_auth']}"
    return f"""
\033[1m==> everything is up\033[0m
  Envoy  (ext_authz gRPC)      {envoy_url}      admin http://127.0.0.1:{p['envoy_admin']}
  nginx  (auth_request)        {nginx_url}
  Better Auth                  http://127.0.0.1:{p['better_auth']}/api/auth/ok
  todo back end                http://127.0.0.1:{p['todo']}        what it saw: http://127.0.0.1:{p['todo_admin']}/requests
  better-authz                 gRPC 127.0.0.1:{p['authz_grpc']}, HTTP http://127.0.0.1:{p['authz_http']}/auth,
                               http://127.0.0.1:{p['authz_admin']}/readyz and /metrics
  logs                         {logs}/

Try it (paste into another shell):

  # 1. Sign up through Envoy: /api/auth/ is public. The cookie jar keeps the session cookie.
  curl -s -c {jar} -H 'Origin: {envoy_url}' -H 'Content-Type: application/json' \\
       -d '{{"name":"Alice","email":"alice@example.com","password":"correct-horse-battery"}}' \\
       {envoy_url}/api/auth/sign-up/email
  USER_ID=$(curl -s -b {jar} {envoy_url}/api/auth/get-session \\
       | python3 -c 'import json,sys; print(json.load(sys.stdin)["user"]["id"])'); echo $USER_ID

  # 2. No cookie: 401 from better-authz, the back end never sees the request.
  curl -i {envoy_url}/api/$USER_ID/tasks
  curl -i {nginx_url}/api/$USER_ID/tasks

  # 3. With the cookie: 200; the back end gets x-user-id/-email/-name from better-authz.
  curl -i -b {jar} -H 'Content-Type: application/json' -d '{{"title":"buy milk"}}' \\
       {envoy_url}/api/$USER_ID/tasks
  curl -i -b {jar} {envoy_url}/api/$USER_ID/tasks
  curl -i -b {jar} {nginx_url}/api/$USER_ID/tasks

  # 4. A forged identity header is overwritten; another user's path is 403.
  curl -i -b {jar} -H 'x-user-id: someone-else' {envoy_url}/api/$USER_ID/tasks
  curl -i -b {jar} {envoy_url}/api/someone-else/tasks
  curl -i -b {jar} {nginx_url}/api/someone-else/tasks

  # 5. Without a cookie: a bearer token (Better Auth's bearer plugin; sign-in answers it in the
  #    set-auth-token header) or an API key (the API-key plugin; created here with the cookie session).
  #    The bearer session also creates an organization (the organization plugin), which makes it that
  #    session's active organization.
  TOKEN=$(curl -s -o /dev/null -D - -H 'Origin: {envoy_url}' -H 'Content-Type: application/json' \\
       -d '{{"email":"alice@example.com","password":"correct-horse-battery"}}' {envoy_url}/api/auth/sign-in/email \\
       | tr -d '\\r' | sed -n 's/^set-auth-token: //Ip')
  curl -s -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \\
       -d '{{"name":"Acme","slug":"acme"}}' {envoy_url}/api/auth/organization/create; echo
  curl -i -H "Authorization: Bearer $TOKEN" {envoy_url}/api/$USER_ID/tasks
  KEY=$(curl -s -b {jar} -H 'Origin: {envoy_url}' -H 'Content-Type: application/json' -d '{{}}' \\
       {envoy_url}/api/auth/api-key/create | python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])')
  curl -i -H "x-api-key: $KEY" {envoy_url}/api/$USER_ID/tasks
  curl -i -H "x-api-key: $KEY" {nginx_url}/api/$USER_ID/tasks

  # 6. What the back end received for those three calls (its admin port records raw headers). Besides
  #    x-user-id/-email/-name, better-authz sets x-user-jwt (the jwt plugin's token: the back end can verify
  #    it with {better_auth_url}/api/auth/jwks; none for an API key, Better Auth issues none) and, from the
  #    session, x-user-role (admin plugin) and x-org-id (the active organization: the bearer session's).
  #    The demo runs AUTHZ_STRIP_CREDENTIALS=true: the back end gets neither the bearer token nor the key
  #    (nor the session cookie), through Envoy and through nginx.
  curl -s http://127.0.0.1:{p['todo_admin']}/requests | python3 -c '
import json, sys
print()
for r in json.load(sys.stdin)[-3:]:
    h = {{k.lower(): v for k, v in r["headers"]}}
    print(r["method"], r["path"], {{k: (v[:24] + "...") if len(v) > 24 else v for k, v in h.items()
          if k.startswith(("x-user", "x-org", "x-impersonated")) or k in ("cookie", "authorization", "x-api-key")}})'
  # The JWT's payload (a JWS: header.payload.signature, base64url):
  curl -s -H "Authorization: Bearer $TOKEN" {envoy_url}/api/$USER_ID/tasks > /dev/null
  curl -s http://127.0.0.1:{p['todo_admin']}/requests | python3 -c '
import base64, json, sys
jwt = dict((k.lower(), v) for k, v in json.load(sys.stdin)[-1]["headers"])["x-user-jwt"]
part = jwt.split(".")[1]; print(json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))))'

  # 7. The route policy: demo/policy.yaml (reread within a second of a change; see what it decides with
  #    `better-authz policy explain demo/policy.yaml GET /orgs/X/tasks`). Better Auth's test-only endpoints
  #    (its own port, never through the proxies) stand in for an admin console and a verification mail.
  #    The admin area needs the admin role: 403 ROLE_REQUIRED, then 200. /reports/ has no route of its own:
  #    Envoy's route and nginx's location name the `admin` route for it.
  curl -i -b {jar} {envoy_url}/admin/stats
  curl -i -b {jar} {nginx_url}/reports/q3
  curl -s -H 'Content-Type: application/json' -d "{{\\"userId\\":\\"$USER_ID\\",\\"role\\":\\"admin\\"}}" \\
       {better_auth_url}/__debug/role; echo
  curl -i -b {jar} {envoy_url}/admin/stats
  curl -i -b {jar} {nginx_url}/reports/q3
  #    An organization's pages need the owner or admin role in it: Alice owns Acme (step 5). Her own id in its
  #    place names no organization she is in: 403 ORG_FORBIDDEN.
  ORG_ID=$(curl -s -b {jar} {envoy_url}/api/auth/organization/list \\
       | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["id"])')
  curl -i -b {jar} {envoy_url}/orgs/$ORG_ID/tasks
  curl -i -b {jar} {nginx_url}/orgs/$USER_ID/tasks
  #    A method the `own` route does not list: 403 NO_ROUTE.
  curl -i -b {jar} -X DELETE {envoy_url}/api/$USER_ID/tasks
  #    The account page needs a verified email (403 EMAIL_UNVERIFIED, then 200) and sends a browser without
  #    a session to the sign-in page (302, callbackURL on {envoy_url}); an API call keeps its 401.
  curl -i -b {jar} {envoy_url}/account/
  curl -s -H 'Content-Type: application/json' -d "{{\\"userId\\":\\"$USER_ID\\"}}" \\
       {better_auth_url}/__debug/verify-email > /dev/null
  curl -i -b {jar} {nginx_url}/account/
  curl -i -H 'Accept: text/html' {nginx_url}/account/
  curl -i {envoy_url}/account/

  # 8. All the back end received, and better-authz's metrics (per route: better_authz_route_decisions_total).
  curl -s http://127.0.0.1:{p['todo_admin']}/requests | python3 -m json.tool
  curl -s http://127.0.0.1:{p['authz_admin']}/metrics | grep -v '^#' | head -40

Press Ctrl-C to stop everything."""


def _call(port: int, method: str, path: str, headers: dict | None = None, body: str | None = None,
          source: str | None = None) -> tuple[int, list[tuple[str, str]], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10, source_address=(source, 0) if source else None)
    conn.request(method, path, body=body, headers=headers or {})
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, resp.getheaders(), data


def _session_cookie(headers: list[tuple[str, str]]) -> str:
    """The session cookie an answer sets (`name=value`), past the clearing one Better Auth sends first when it
    replaces a session (impersonation)."""
    values = [v.split(";", 1)[0] for k, v in headers if k.lower() == "set-cookie"]
    return next((v for v in reversed(values) if v.startswith("better-auth.session_token=")
                 and v != "better-auth.session_token="), "")


def _smoke(p: dict[str, int]) -> bool:
    """The walkthrough, checked: sign up through Envoy, then 401 / 200 / 403 through both proxies, and 200 with
    the bearer token from the sign-up and with an API key; then what the back end received: the JWT and the
    mapped headers (role, active organization), and through Envoy (AUTHZ_STRIP_CREDENTIALS=true) no cookie,
    bearer token or key; then the route policy (_smoke_policy)."""
    failures = []

    def expect(label, got, want):
        ok = got == want
        print(f"  {'ok  ' if ok else 'FAIL'} {label}: {got} (want {want})", flush=True)
        if not ok:
            failures.append(label)

    envoy_port, nginx_port = p["envoy"], p["nginx"]
    email = f"smoke-{uuid.uuid4().hex[:8]}@example.com"
    status, headers, body = _call(envoy_port, "POST", "/api/auth/sign-up/email",
                                 {"Content-Type": "application/json", "Origin": f"http://127.0.0.1:{envoy_port}"},
                                 json.dumps({"name": "Smoke", "email": email, "password": "correct-horse-battery"}))
    expect("sign-up through Envoy", status, 200)
    cookie = _session_cookie(headers)
    user_id = json.loads(body)["user"]["id"] if status == 200 else "missing"
    token = next((v for k, v in headers if k.lower() == "set-auth-token"), "")
    status, _, body = _call(envoy_port, "POST", "/api/auth/api-key/create",
                           {"Content-Type": "application/json", "Origin": f"http://127.0.0.1:{envoy_port}",
                            "Cookie": cookie}, "{}")
    expect("API key created through Envoy", status, 200)
    key = json.loads(body).get("key", "") if status == 200 else ""
    # An organization, created with the bearer token (no Origin needed without a cookie): it becomes the
    # session's active organization (the cookie and the token are the same session).
    status, _, body = _call(envoy_port, "POST", "/api/auth/organization/create",
                           {"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
                           json.dumps({"name": "Smoke Org", "slug": f"smoke-{uuid.uuid4().hex[:8]}"}))
    expect("organization created through Envoy", status, 200)
    org_id = json.loads(body).get("id", "") if status == 200 else "missing"
    for name, port in (("Envoy", envoy_port), ("nginx", nginx_port)):
        expect(f"{name}: no cookie", _call(port, "GET", f"/api/{user_id}/tasks")[0], 401)
        expect(f"{name}: with cookie", _call(port, "GET", f"/api/{user_id}/tasks", {"Cookie": cookie})[0], 200)
        expect(f"{name}: other user's path", _call(port, "GET", "/api/someone-else/tasks", {"Cookie": cookie})[0], 403)
        expect(f"{name}: bearer token", _call(port, "GET", f"/api/{user_id}/tasks",
                                             {"Authorization": f"Bearer {token}"})[0], 200)
        expect(f"{name}: API key", _call(port, "GET", f"/api/{user_id}/tasks", {"x-api-key": key})[0], 200)
    seen = json.loads(_call(p["todo_admin"], "GET", "/requests")[2])
    expect("requests the back end saw", len(seen), 6)
    if len(seen) != 6:
        return False

    def jwt_sub(jwt):
        try:
            part = jwt.split(".")[1]
            return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))).get("sub")
        except (IndexError, ValueError):
            return f"not a JWT: {jwt[:20]!r}"

    # In order: Envoy's cookie, bearer and API-key calls, then nginx's.
    calls = [(proxy, credential) for proxy in ("Envoy", "nginx") for credential in ("cookie", "bearer", "API key")]
    for i, (proxy, credential) in enumerate(calls):
        h = {}
        for k, v in seen[i]["headers"]:
            h.setdefault(k.lower(), []).append(v)
        label = f"back end, {proxy} {credential} call"
        if credential == "API key":
            expect(f"{label}: x-user-jwt (Better Auth issues none for keys)", h.get("x-user-jwt"), None)
            expect(f"{label}: x-org-id (a key's session has no active organization)", h.get("x-org-id"), None)
        else:
            expect(f"{label}: x-user-jwt sub", [jwt_sub(v) for v in h.get("x-user-jwt", [])], [user_id])
            expect(f"{label}: x-org-id", h.get("x-org-id"), [org_id])
        expect(f"{label}: x-user-role", h.get("x-user-role"), ["user"])
        stripped = {"cookie": "cookie", "bearer": "authorization", "API key": "x-api-key"}[credential]
        expect(f"{label}: {stripped} (stripped)", h.get(stripped), None)
    _smoke_policy(p, expect, {"id": user_id, "cookie": cookie, "email": email}, org_id)
    return not failures


def _smoke_policy(p: dict[str, int], expect: Callable, user: dict, org_id: str) -> None:
    """demo/policy.yaml through both proxies: the admin area and Envoy's / nginx's /reports/ (naming the `admin`
    route) for a user and an admin; an organization's pages for its owner and a plain member; a method the `own`
    route does not list; the account page for an unverified email (API and browser), a browser without a
    session (302 to the sign-in page), a verified email, and an admin impersonating the user."""
    envoy_port = p["envoy"]
    origin = f"http://127.0.0.1:{envoy_port}"
    json_headers = {"Content-Type": "application/json", "Origin": origin}

    def debug(endpoint: str, body: dict) -> dict:
        status, _, data = _call(p["better_auth"], "POST", f"/__debug/{endpoint}", {"Content-Type": "application/json"},
                                json.dumps(body))
        expect(f"Better Auth /__debug/{endpoint}", status, 200)
        return json.loads(data) if status == 200 else {}

    # A second user, made an admin (the admin plugin's user.role), owning an organization the first user is a
    # plain member of. Its own client address: Better Auth allows 3 sign-ups per 10 s and address.
    status, headers, body = _call(envoy_port, "POST", "/api/auth/sign-up/email", json_headers, json.dumps(
        {"name": "Admin", "email": f"admin-{user['email']}", "password": "correct-horse-battery"}), source="127.0.0.2")
    expect("admin sign-up through Envoy", status, 200)
    admin_cookie = _session_cookie(headers)
    admin_id = json.loads(body)["user"]["id"] if status == 200 else "missing"
    debug("role", {"userId": admin_id, "role": "admin"})
    team = debug("organization", {"userId": admin_id, "members": [{"userId": user["id"], "role": "member"}]})

    def code(data: bytes) -> str | None:
        try:
            return json.loads(data).get("error_code")
        except (ValueError, AttributeError):
            return None

    def check(label, port, method, path, cookie, want, want_code=None, accept="application/json"):
        status, headers, data = _call(port, method, path, {"Cookie": cookie, "Accept": accept} if cookie
                                      else {"Accept": accept})
        got = (status, code(data)) if want_code else status
        expect(label, got, (want, want_code) if want_code else want)
        return headers

    for name, port in (("Envoy", envoy_port), ("nginx", p["nginx"])):
        check(f"{name}: admin area, user", port, "GET", "/admin/stats", user["cookie"], 403, "ROLE_REQUIRED")
        check(f"{name}: admin area, admin", port, "GET", "/admin/stats", admin_cookie, 200)
        check(f"{name}: /reports/ (names `admin`), user", port, "GET", "/reports/q3", user["cookie"], 403,
              "ROLE_REQUIRED")
        check(f"{name}: /reports/ (names `admin`), admin", port, "GET", "/reports/q3", admin_cookie, 200)
        check(f"{name}: own organization, owner", port, "GET", f"/orgs/{org_id}/tasks", user["cookie"], 200)
        check(f"{name}: organization, owner", port, "GET", f"/orgs/{team['id']}/tasks", admin_cookie, 200)
        check(f"{name}: organization, plain member", port, "GET", f"/orgs/{team['id']}/tasks", user["cookie"], 403,
              "ORG_FORBIDDEN")
        check(f"{name}: organization, the user's id in its place", port, "GET", f"/orgs/{user['id']}/tasks",
              user["cookie"], 403, "ORG_FORBIDDEN")
        check(f"{name}: own tasks, DELETE (not listed)", port, "DELETE", f"/api/{user['id']}/tasks", user["cookie"],
              403, "NO_ROUTE")
        check(f"{name}: account, unverified email", port, "GET", "/account/", user["cookie"], 403, "EMAIL_UNVERIFIED")
        check(f"{name}: account, unverified email, browser", port, "GET", "/account/", user["cookie"], 403,
              "EMAIL_UNVERIFIED", accept="text/html")
        check(f"{name}: account, no session, API", port, "GET", "/account/", "", 401, "SESSION_REQUIRED")
        headers = check(f"{name}: account, no session, browser", port, "GET", "/account/?tab=keys", "", 302,
                        accept="text/html,application/xhtml+xml")
        location = next((v for k, v in headers if k.lower() == "location"), None)
        expect(f"{name}: the sign-in redirect", location,
               f"{origin}/sign-in?callbackURL=http%3A%2F%2F127.0.0.1%3A{envoy_port}%2Faccount%2F%3Ftab%3Dkeys")
    debug("verify-email", {"userId": user["id"]})
    # The admin impersonates the user (the admin plugin): the session is the user's, impersonatedBy the admin.
    status, headers, _ = _call(envoy_port, "POST", "/api/auth/admin/impersonate-user",
                               {**json_headers, "Cookie": admin_cookie}, json.dumps({"userId": user["id"]}))
    expect("admin impersonates the user through Envoy", status, 200)
    impersonated = _session_cookie(headers)
    for name, port in (("Envoy", envoy_port), ("nginx", p["nginx"])):
        check(f"{name}: account, verified email", port, "GET", "/account/", user["cookie"], 200)
        check(f"{name}: account, impersonated", port, "GET", "/account/", impersonated, 403,
              "IMPERSONATION_FORBIDDEN")


def _on_signal(signum, _frame):
    raise SystemExit(128 + signum)


def demo(args: argparse.Namespace) -> int:
    p = DEMO_PORTS
    _say("checking that the demo ports are free")
    for name, port in p.items():
        if not port_free(port):
            _err(f"port 127.0.0.1:{port} (needed for {PORT_LABELS[name]}) is already in use; stop whatever listens "
                 f"there (e.g. an earlier demo: ss -ltnp 'sport = :{port}') and try again")
            return 1

    logs = fresh_log_dir(DEMO_LOGS)
    try:
        # A fresh random secret per run: the memory adapter forgets every user on restart anyway.
        # AUTHZ_STRIP_CREDENTIALS=true: the todo API reads x-user-id only, so it gets no session cookie,
        # bearer token or API key, through Envoy and nginx.
        # AUTHZ_FORWARD_AUTH=nginx: only nginx calls the HTTP listener here, so /auth trusts exactly what
        # nginx/nginx.conf sets (X-Original-URI, X-Original-Method, Host). Envoy uses gRPC, which ignores it.
        # The routes: demo/policy.yaml (instead of the shorthand variables), routes named by nginx in
        # X-Authz-Route (Envoy names them in the Check). Better Auth's test-only /__debug/ endpoints stand in
        # for an admin console and a verification mail (make an admin, an organization, a verified email); they
        # answer on its own loopback port only, never through the proxies.
        procs = stack(logs, p, authz_bin=args.authz_bin, nginx_bin=args.nginx_bin, envoy_bin=args.envoy_bin,
                      secret=secrets.token_urlsafe(32), better_auth_env={"BETTER_AUTH_DEBUG_RECORD": "1"},
                      authz_extra={"AUTHZ_FORWARD_AUTH": "nginx", "AUTHZ_STRIP_CREDENTIALS": "true",
                                   "AUTHZ_POLICY_FILE": str(DEMO_POLICY), "AUTHZ_ROUTE_HEADER": ROUTE_HEADER})
    except RuntimeError as exc:
        _err(str(exc))
        return 1
    messages = {
        "better_auth": f"starting Better Auth on 127.0.0.1:{p['better_auth']}",
        "todo": f"starting the todo back end on 127.0.0.1:{p['todo']} (admin {p['todo_admin']})",
        "authz": f"starting better-authz (gRPC {p['authz_grpc']}, HTTP {p['authz_http']}, admin {p['authz_admin']})",
        "envoy": f"starting Envoy on 127.0.0.1:{p['envoy']} (admin {p['envoy_admin']})",
        "nginx": f"starting nginx on 127.0.0.1:{p['nginx']}",
    }
    started: list[Proc] = []
    try:
        for key, proc in procs.items():
            _say(messages[key])
            started.append(proc)
            try:
                proc.launch(args.ready_timeout)
            except NotReady as exc:
                _err(f"{proc.name} exited during start-up" if exc.exited
                     else f"{proc.name} was not ready after {args.ready_timeout:g}s ({exc.what})")
                _tail_log(proc)
                return 1
            print(f"    {proc.name} ready", flush=True)

        print(_walkthrough(p, logs), flush=True)
        if args.smoke:
            _say("smoke test: running the walkthrough")
            if not _smoke(p):
                return 1
            _say("smoke test passed")
            return 0

        while True:
            for proc in started:
                if not proc.running():
                    _err(f"{proc.name} stopped unexpectedly")
                    _tail_log(proc)
                    return 1
            time.sleep(1)
    finally:
        if started:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            _say(f"stopping {' '.join(proc.name for proc in started)}")
            stop_all(started)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    d = sub.add_parser("demo", help="the stack on the demo ports, until Ctrl-C or SIGTERM (demo/run.sh)")
    d.add_argument("--authz-bin", type=Path, required=True, help="the better-authz binary")
    d.add_argument("--envoy-bin", type=Path, default=ENVOY_BIN)
    d.add_argument("--nginx-bin", type=Path, default=None, help="default: nginx on PATH, else /usr/sbin/nginx")
    d.add_argument("--ready-timeout", type=float, default=float(os.environ.get("READY_TIMEOUT") or READY_TIMEOUT),
                   help="seconds to wait for each component (default: $READY_TIMEOUT, else 60)")
    d.add_argument("--smoke", action="store_true", help="run the walkthrough, check the answers and exit")
    args = parser.parse_args(argv)
    args.authz_bin = args.authz_bin.absolute()
    args.envoy_bin = args.envoy_bin.absolute()
    args.nginx_bin = (args.nginx_bin or find_nginx() or Path("/usr/sbin/nginx")).absolute()
    for path, what in ((args.authz_bin, "better-authz binary"), (args.envoy_bin, "envoy"), (args.nginx_bin, "nginx")):
        if not os.access(path, os.X_OK):
            _err(f"{what} not found at {path}")
            return 1
    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    return demo(args)


if __name__ == "__main__":
    sys.exit(main())
