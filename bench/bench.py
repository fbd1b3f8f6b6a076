#!/usr/bin/env python3
"""The better-authz benchmark: five rows, one run, one machine (standard library only).

Started by bench/run.sh, which installs and builds what this needs. It starts the real Better Auth,
signs up BENCH_USERS users, starts better-authz, the todo back end, Envoy, nginx and the FastAPI
design, runs every row with the same load generator (target/release/examples/loadgen) at the same
concurrency, stops everything it started, prints a table and writes JSON + markdown.

Rows:
  1 direct   GET /api/auth/get-session on Better Auth (the floor of any delegating design)
  2 envoy    Envoy + better-authz (gRPC ext_authz) + todo back end
  3 nginx    nginx + better-authz (auth_request) + todo back end
  4 fastapi  FastAPI dependency forwarding the cookie with httpx (uvicorn) -- the design replaced
  5 service  gRPC Check straight at better-authz, a stand-in Better Auth that answers at once
  2c envoy_cached  as 2, better-authz with its session cache on (AUTHZ_CACHE_TTL_MS)
  2d envoy_bare    the same Envoy without the ext_authz filter (the ceiling: what Envoy and the back end cost)
  2e floor         as 2, examples/floor.rs in better-authz's place: the same libraries (tonic, hyper, tokio,
                   mimalloc) doing only the protocol, no policy (the floor under better-authz's CPU per check)
  2f floor_cached  as 2e, the floor memoizing user ids by cookie (the floor under 2c)

Environment (all optional): see bench/run.sh.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import re
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import launcher  # noqa: E402
from launcher import NotReady, Proc, free_ports  # noqa: E402

LOGS = ROOT / ".bench-logs"


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    return int(raw) if raw else default


def env_float(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    return float(raw) if raw else default


USERS = env_int("BENCH_USERS", 50)
CONCURRENCY = env_int("BENCH_CONCURRENCY", 32)
DURATION = env_float("BENCH_DURATION", 20)
WARMUP = env_float("BENCH_WARMUP", 5)
ROWS = [r.strip() for r in os.environ.get("BENCH_ROWS", "direct,envoy,envoy_cached,envoy_bare,floor,floor_cached,nginx,fastapi,service")
        .split(",") if r.strip()]
PIN = os.environ.get("BENCH_PIN", "auto")
UPSTREAM_TIMEOUT_MS = env_int("BENCH_AUTHZ_UPSTREAM_TIMEOUT_MS", 1000)
OUT_JSON = Path(os.environ.get("BENCH_OUT", ROOT / "bench/results/latest.json"))
OUT_MD = OUT_JSON.with_suffix(".md")
UPDATE_DOC = os.environ.get("BENCH_UPDATE_DOC", "1") == "1"
NOTE = os.environ.get("BENCH_NOTE", "")
READY_TIMEOUT = env_float("BENCH_READY_TIMEOUT", 60)
PRIME = env_float("BENCH_PRIME", 20)
# Every HTTP row sends what a browser sends (a User-Agent); the direct rows also carry the
# X-Forwarded-For that better-authz adds, so Better Auth does the same work per request in every row.
BROWSER = ["--header", "User-Agent: Mozilla/5.0 (X11; Linux x86_64) better-authz-bench/1"]
DIRECT = [*BROWSER, "--header", "X-Forwarded-For: 127.0.0.1"]
LATENCY_LOAD = env_float("BENCH_LATENCY_LOAD", 0.5)
REPEAT_DIRECT = os.environ.get("BENCH_REPEAT_DIRECT", "1") == "1"
# Row 2c: how long better-authz keeps a valid session (longer than a row, so every measured check is a hit).
CACHE_TTL_MS = env_int("BENCH_CACHE_TTL_MS", 300_000)

AUTHZ_BIN = launcher.authz_bin_from_env(ROOT / "target/release/better-authz")
FLOOR_BIN = Path(os.environ.get("BENCH_FLOOR_BIN", ROOT / "target/release/examples/floor"))
LOADGEN_BIN = Path(os.environ.get("BENCH_LOADGEN_BIN", ROOT / "target/release/examples/loadgen"))
ENVOY_BIN = launcher.ENVOY_BIN
BENCH_VENV = ROOT / ".tools/bench-venv"
NGINX_BIN = launcher.find_nginx() or Path("/usr/sbin/nginx")

ROW_TITLES = {
    "direct": "1. Direct get-session (Better Auth)",
    "envoy": "2. Envoy + better-authz (gRPC)",
    "envoy_cached": "2c. Envoy + better-authz, sessions cached",
    "envoy_bare": "2d. Envoy without ext_authz (ceiling)",
    "floor": "2e. Envoy + floor server (same libraries, no policy)",
    "floor_cached": "2f. Envoy + floor server, memoized",
    "nginx": "3. nginx + better-authz (auth_request)",
    "fastapi": "4. FastAPI dependency + httpx",
    "service": "5. better-authz alone (stand-in Better Auth)",
    "direct_again": "1′. Direct get-session again (drift check)",
}
# Open loop at a fixed rate (a fraction of row 1's, or for 5b of row 5's, throughput).
OPEN_TITLES = {
    "direct": "1b. Direct, open loop {rate:,} req/s",
    "envoy": "2b. Envoy + better-authz, open loop {rate:,} req/s",
    "envoy_cached": "2c-b. Envoy + better-authz cached, open loop {rate:,} req/s",
    "envoy_bare": "2d-b. Envoy without ext_authz, open loop {rate:,} req/s",
    "floor": "2e-b. Envoy + floor server, open loop {rate:,} req/s",
    "floor_cached": "2f-b. Envoy + floor server memoized, open loop {rate:,} req/s",
    "nginx": "3b. nginx + better-authz, open loop {rate:,} req/s",
    "fastapi": "4b. FastAPI + httpx, open loop {rate:,} req/s",
    "service": "5b. better-authz alone, open loop {rate:,} checks/s",
    "standin": "5c. stand-in alone (no better-authz), open loop {rate:,} req/s",
}
BA_ROWS = ("direct", "envoy", "envoy_cached", "envoy_bare", "floor", "floor_cached", "nginx", "fastapi")
ENVOY_ROWS = ("envoy", "envoy_cached", "envoy_bare", "floor", "floor_cached")
FLOOR_ROWS = ("floor", "floor_cached")
# The proxy (and its listener in `ports`) in front of each proxied row.
PROXY_OF = {"envoy": "envoy", "envoy_cached": "envoy_cached", "envoy_bare": "envoy_bare", "nginx": "nginx",
            "floor": "envoy_floor", "floor_cached": "envoy_floor_cached"}


def plan_rows() -> list[str]:
    """The closed-loop rows asked for, the drift check, then the open-loop rows (b)."""
    ba = [r for r in ROWS if r in BA_ROWS]
    rows = list(ba)
    if REPEAT_DIRECT and "direct" in ba and len(ba) > 1:
        rows.append("direct_again")
    if LATENCY_LOAD > 0 and "direct" in ba:
        rows += [f"{r}_open" for r in ba]
    if "service" in ROWS:
        rows.append("service")
        if LATENCY_LOAD > 0:
            rows += ["service_open", "standin_open"]
    return rows


def say(msg: str) -> None:
    print(f"\033[1m==> {msg}\033[0m", flush=True)


# --- CPU placement ---------------------------------------------------------------------------------------
# With 2 cores the load generator and the proxies share a core: the system under test of each row
# gets the other one to itself. Rows 1-4: Better Auth (the part every design pays, and the bottleneck
# of a real deployment) on the SUT core, everything else on the load core. Row 5: better-authz alone
# on the SUT core, the load generator and the stand-in on the load core.
NCPU = len(os.sched_getaffinity(0))
if PIN == "auto":
    PIN_ON = NCPU >= 2
else:
    PIN_ON = PIN == "1"
CPUS = sorted(os.sched_getaffinity(0))
SUT_CPU = str(CPUS[-1])
LOAD_CPUS = ",".join(str(c) for c in CPUS[:-1]) if NCPU >= 2 else str(CPUS[0])


def taskset(cpus: str) -> list[str]:
    return ["taskset", "-c", cpus] if PIN_ON else []


def pinned(cpus: str, cmd: list[str]) -> list[str]:
    return [*taskset(cpus), *cmd]


# --- processes -------------------------------------------------------------------------------------------
PROCS: list[Proc] = []


def start(proc: Proc) -> Proc:
    """Start `proc` and wait until it is ready; stop_all() stops it."""
    PROCS.append(proc)
    try:
        proc.launch(READY_TIMEOUT)
    except NotReady as exc:
        print(f"----- {proc.log_path} -----", proc.tail(20), sep="\n", file=sys.stderr)
        raise SystemExit(f"bench: {proc.name} exited during start-up" if exc.exited
                         else f"bench: {proc.name} not ready after {READY_TIMEOUT}s ({exc.what})") from None
    return proc


def stop_all() -> None:
    launcher.stop_all(PROCS)
    PROCS.clear()


def on_signal(signum, _frame):
    raise SystemExit(128 + signum)


def http_get(url: str, headers: dict | None = None, timeout: float = 2) -> tuple[int, bytes]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def without_ext_authz(config: Path, out: Path) -> Path:
    """The rendered Envoy configuration without its ext_authz filter and the per-route settings that name it:
    the same listener, routes, access logs and clusters, no authorization (row 2d, the ceiling)."""
    lines = config.read_text().splitlines(keepends=True)
    kept: list[str] = []
    skip_indent: int | None = None
    for line in lines:
        indent = len(line) - len(line.lstrip())
        if skip_indent is not None:
            if line.strip() and indent <= skip_indent:
                skip_indent = None
            else:
                continue
        stripped = line.strip()
        if stripped == "- name: envoy.filters.http.ext_authz" or stripped == "typed_per_filter_config:":
            skip_indent = indent
            continue
        kept.append(line)
    text = "".join(kept)
    if any("ext_authz" in line.split("#", 1)[0] for line in kept):
        raise SystemExit(f"bench: could not remove ext_authz from {config}")
    out.write_text(text)
    return out


def children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        out += [int(p) for p in task.read_text().split()]
    return out


# --- Better Auth users -----------------------------------------------------------------------------------

def sign_up(base: str, i: int, run_id: str) -> tuple[str, str]:
    body = json.dumps({"name": f"Bench User {i}", "email": f"bench-{run_id}-{i}@example.com",
                       "password": f"bench-password-{run_id}-{i}"}).encode()
    # Distinct client addresses: Better Auth limits sign-ups to 3 per 10 s per address and path.
    req = urllib.request.Request(f"{base}/api/auth/sign-up/email", data=body, method="POST", headers={
        "Content-Type": "application/json", "Origin": base,
        "X-Forwarded-For": f"10.77.{i // 250}.{i % 250 + 1}"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        user_id = json.loads(resp.read())["user"]["id"]
        cookies = [v.split(";", 1)[0] for k, v in resp.getheaders() if k.lower() == "set-cookie"]
    cookie = "; ".join(c for c in cookies if c.startswith("better-auth."))
    if "better-auth.session_token=" not in cookie:
        raise SystemExit(f"bench: sign-up {i} returned no session cookie")
    status, data = http_get(f"{base}/api/auth/get-session", {"Cookie": cookie})
    if status != 200 or json.loads(data)["user"]["id"] != user_id:
        raise SystemExit(f"bench: the cookie of user {i} does not validate ({status})")
    return user_id, cookie


def standin_users(n: int) -> list[tuple[str, str]]:
    """Well-formed (token.signature) but made-up cookies for the stand-in, which accepts anything."""
    users = []
    for i in range(n):
        token = secrets.token_urlsafe(24).replace("-", "a").replace("_", "b")
        sig = secrets.token_urlsafe(32).replace("-", "c").replace("_", "d")
        users.append(("u1", f"better-auth.session_token={token}.{sig}%3D"))
    return users


def write_users(path: Path, users: list[tuple[str, str]]) -> None:
    path.write_text("".join(f"{uid}\t{cookie}\n" for uid, cookie in users))


# --- better-authz metrics --------------------------------------------------------------------------------
METRIC_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)$")


def scrape(admin_port: int) -> dict[tuple[str, str], float]:
    _, body = http_get(f"http://127.0.0.1:{admin_port}/metrics", timeout=5)
    out = {}
    for line in body.decode().splitlines():
        m = METRIC_LINE.match(line)
        if m:
            out[(m.group(1), m.group(2) or "")] = float(m.group(3))
    return out


def histogram(before: dict, after: dict, name: str, label: str) -> dict:
    """Mean and quantiles (bucket interpolation, like PromQL histogram_quantile) of the delta."""
    def delta(metric: str, labels: str) -> float:
        return after.get((metric, labels), 0.0) - before.get((metric, labels), 0.0)

    count = delta(f"{name}_count", "{" + label + "}")
    total = delta(f"{name}_sum", "{" + label + "}")
    buckets = []
    for (metric, labels), _ in after.items():
        if metric == f"{name}_bucket" and label in labels:
            le = re.search(r'le="([^"]+)"', labels).group(1)
            buckets.append((float("inf") if le == "+Inf" else float(le), delta(metric, labels)))
    buckets.sort()
    res = {"count": int(count), "mean_ms": round(total / count * 1000, 3) if count else None}
    for q in (0.5, 0.95, 0.99):
        rank = q * count
        prev_le, prev_n, value = 0.0, 0.0, None
        for le, n in buckets:
            if n >= rank and count:
                if le == float("inf"):
                    value = prev_le
                else:
                    value = prev_le + (le - prev_le) * ((rank - prev_n) / (n - prev_n) if n > prev_n else 1)
                break
            prev_le, prev_n = le, n
        res[f"p{int(q * 100)}_ms"] = round(value * 1000, 3) if value is not None else None
    return res


def authz_view(before: dict, after: dict, transport: str) -> dict:
    check = histogram(before, after, "better_authz_check_duration_seconds", f'transport="{transport}"')
    upstream = histogram(before, after, "better_authz_better_auth_request_duration_seconds", 'outcome="valid"')
    own = None
    if check["mean_ms"] is not None and upstream["mean_ms"] is not None:
        own = round(check["mean_ms"] - upstream["mean_ms"], 3)
    def total(metric: str, label: str = "") -> float:
        return sum(v - before.get(k, 0.0) for k, v in after.items() if k[0] == metric and label in k[1])

    checks = total("better_authz_decisions_total", f'transport="{transport}"')
    calls = total("better_authz_better_auth_request_duration_seconds_count")
    return {"check": check, "better_auth_call": upstream, "mean_own_ms": own,
            "checks": int(checks), "better_auth_calls": int(calls),
            "better_auth_calls_per_check": round(calls / checks, 3) if checks else None,
            "coalesced": int(total("better_authz_coalesced_total")),
            "shed": int(total("better_authz_shed_total"))}


# --- the rows --------------------------------------------------------------------------------------------

def loadgen(args: list[str], label: str, watch: dict[str, list[int]], warmup: float = WARMUP,
            duration: float = DURATION, quiet: bool = False) -> dict:
    watch_arg = ",".join(f"{name}={'+'.join(map(str, pids))}" for name, pids in watch.items())
    cmd = pinned(LOAD_CPUS, [str(LOADGEN_BIN), *args, "--concurrency", str(CONCURRENCY),
                             "--duration", str(duration), "--warmup", str(warmup), "--label", label,
                             "--watch", watch_arg])
    if not quiet:
        print(f"    {label}: {CONCURRENCY} connections, {warmup:g} s warm-up + {duration:g} s"
              + (f", open loop at {args[args.index('--rate') + 1]} req/s" if "--rate" in args else ""), flush=True)
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=warmup + duration + 60)
    (LOGS / f"loadgen-{label}.log").write_text(res.stderr + res.stdout)
    if res.returncode != 0:
        raise SystemExit(f"bench: loadgen failed for {label}:\n{res.stderr}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def version_of(cmd: list[str], pattern: str = r"\d+\.\d+(\.\d+)?") -> str | None:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
        m = re.search(pattern, out.stdout + out.stderr)
        return m.group(0) if m else None
    except (OSError, subprocess.TimeoutExpired):
        return None


def machine_info() -> dict:
    cpu = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem = Path("/proc/meminfo").read_text().splitlines()[0].split()[1]
    load = os.getloadavg()
    return {"nproc": os.cpu_count(), "cpus_allowed": NCPU, "cpu_model": cpu,
            "mem_gib": round(int(mem) / 1024 / 1024, 1), "kernel": platform.release(),
            "loadavg_before": [round(x, 2) for x in load]}


def versions() -> dict:
    py = str(BENCH_VENV / "bin/python")
    pkgs = {}
    out = subprocess.run([py, "-m", "pip", "freeze"], capture_output=True, text=True).stdout
    for line in out.splitlines():
        if "==" in line:
            k, v = line.split("==", 1)
            if k.lower() in ("fastapi", "uvicorn", "httpx", "uvloop", "httptools", "starlette"):
                pkgs[k.lower()] = v
    git = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--", "src", "Cargo.toml", "Cargo.lock"],
                           capture_output=True, text=True).stdout.strip()
    ba = json.loads((ROOT / "demo/better-auth/node_modules/better-auth/package.json").read_text())["version"]
    return {
        "better_authz": (git.stdout.strip() or "unknown") + ("+dirty-src" if dirty else ""),
        "rustc": version_of(["rustc", "--version"]),
        "better_auth": ba,
        "node": version_of(["node", "--version"]),
        "envoy": version_of([str(ENVOY_BIN), "--version"], r"\d+\.\d+\.\d+"),
        "nginx": version_of([str(NGINX_BIN), "-v"]),
        "python": platform.python_version(),
        **pkgs,
    }


def main() -> int:
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    floor = [(FLOOR_BIN, "the floor server (cargo build --release --example floor)")] \
        if any(r in ROWS for r in FLOOR_ROWS) else []
    for path, what in ((AUTHZ_BIN, "better-authz"), (LOADGEN_BIN, "loadgen"), (ENVOY_BIN, "envoy"),
                       (NGINX_BIN, "nginx"), (BENCH_VENV / "bin/uvicorn", "uvicorn"), *floor):
        if not os.access(path, os.X_OK):
            raise SystemExit(f"bench: {what} not found at {path}: run bench/run.sh")
    unknown = [r for r in ROWS if r not in ROW_TITLES]
    if unknown:
        raise SystemExit(f"bench: unknown rows {unknown}; known: {list(ROW_TITLES)}")

    launcher.fresh_log_dir(LOGS)
    nginx_prefix = launcher.nginx_prefix(LOGS / "nginx")

    started = dt.datetime.now(dt.timezone.utc)
    machine = machine_info()
    vers = versions()
    say(f"machine: {machine['nproc']} CPUs ({machine['cpu_model']}), load average {machine['loadavg_before']}")
    if PIN_ON:
        say(f"CPU placement: system under test on CPU {SUT_CPU}, load generator and the rest on CPU {LOAD_CPUS}")

    names = ("better_auth", "todo", "todo_admin", "envoy", "envoy_admin", "nginx", "fastapi",
             "authz_envoy_grpc", "authz_envoy_http", "authz_envoy_admin",
             "authz_nginx_grpc", "authz_nginx_http", "authz_nginx_admin",
             "authz_alone_grpc", "authz_alone_http", "authz_alone_admin",
             "envoy_cached", "envoy_cached_admin", "authz_cached_grpc", "authz_cached_http", "authz_cached_admin",
             "envoy_bare", "envoy_bare_admin",
             "envoy_floor", "envoy_floor_admin", "floor_grpc", "floor_http", "floor_admin",
             "envoy_floor_cached", "envoy_floor_cached_admin", "floor_cached_grpc", "floor_cached_http",
             "floor_cached_admin")
    ports = dict(zip(names, free_ports(len(names))))
    ba_url = f"http://127.0.0.1:{ports['better_auth']}"

    try:
        # --- Better Auth ---
        say(f"starting Better Auth (node) on {ba_url}")
        origins = [f"http://127.0.0.1:{ports['envoy']}", f"http://127.0.0.1:{ports['nginx']}"]
        ba = start(launcher.better_auth(LOGS, ports["better_auth"], secret=secrets.token_urlsafe(32),
                                        trusted_origins=origins, wrap=taskset(SUT_CPU)))

        say(f"signing up {USERS} users")
        run_id = secrets.token_hex(4)
        with ThreadPoolExecutor(4) as pool:
            users = list(pool.map(lambda i: sign_up(ba_url, i, run_id), range(USERS)))
        users_file = LOGS / "users.tsv"
        write_users(users_file, users)

        # --- better-authz: one instance per proxy, so each row's peak RSS is its own ---
        def start_authz(name: str, upstream: str, prefix: str, cpus: str, extra: dict | None = None) -> Proc:
            env = {**launcher.authz_env(upstream, ports[prefix + "_grpc"], ports[prefix + "_http"],
                                        ports[prefix + "_admin"], UPSTREAM_TIMEOUT_MS), "RUST_LOG": "info",
                   **(extra or {})}
            return start(launcher.better_authz(LOGS, AUTHZ_BIN, env, name=name, wrap=taskset(cpus)))

        def start_envoy(name: str, listener: str, grpc: int) -> Proc:
            """An Envoy on `ports[listener]` in front of the ext_authz server on `grpc`."""
            cfg = launcher.render_envoy({**ports, "envoy": ports[listener], "envoy_admin": ports[listener + "_admin"],
                                         "authz_grpc": grpc}, LOGS / f"{name}.yaml",
                                        check_timeout=f"{UPSTREAM_TIMEOUT_MS / 1000 + 0.5:g}s")
            return start(launcher.envoy(LOGS, ENVOY_BIN, cfg, ports[listener + "_admin"], args=["--cpuset-threads"],
                                        name=name, wrap=taskset(LOAD_CPUS)))

        need_proxy = any(r in ROWS for r in (*ENVOY_ROWS, "nginx"))
        procs: dict[str, Proc] = {}
        if need_proxy:
            say("starting the todo back end")
            procs["todo"] = start(launcher.todo_backend(LOGS, ports["todo"], ports["todo_admin"],
                                                        wrap=taskset(LOAD_CPUS)))
        if "envoy" in ROWS:
            say("starting better-authz for Envoy, and Envoy")
            procs["authz_envoy"] = start_authz("better-authz-envoy", ba_url, "authz_envoy", LOAD_CPUS)
            # The benchmark measures latency, not deadlines: the check may take up to better-authz's own
            # (generous) Better Auth deadline, plus margin.
            cfg = launcher.render_envoy({**ports, "authz_grpc": ports["authz_envoy_grpc"]}, LOGS / "envoy.yaml",
                                        check_timeout=f"{UPSTREAM_TIMEOUT_MS / 1000 + 0.5:g}s")
            procs["envoy"] = start(launcher.envoy(LOGS, ENVOY_BIN, cfg, ports["envoy_admin"], args=["--cpuset-threads"],
                                                  wrap=taskset(LOAD_CPUS)))
        if "envoy_cached" in ROWS:
            say("starting better-authz with its cache on, and an Envoy for it")
            procs["authz_envoy_cached"] = start_authz("better-authz-cached", ba_url, "authz_cached", LOAD_CPUS,
                                                      {"AUTHZ_CACHE_TTL_MS": str(CACHE_TTL_MS)})
            cfg = launcher.render_envoy({**ports, "envoy": ports["envoy_cached"], "envoy_admin": ports["envoy_cached_admin"],
                                         "authz_grpc": ports["authz_cached_grpc"]}, LOGS / "envoy-cached.yaml",
                                        check_timeout=f"{UPSTREAM_TIMEOUT_MS / 1000 + 0.5:g}s")
            procs["envoy_cached"] = start(launcher.envoy(LOGS, ENVOY_BIN, cfg, ports["envoy_cached_admin"],
                                                         args=["--cpuset-threads"], name="envoy-cached",
                                                         wrap=taskset(LOAD_CPUS)))
        if "envoy_bare" in ROWS:
            say("starting an Envoy without the ext_authz filter (ceiling)")
            cfg = launcher.render_envoy({**ports, "envoy": ports["envoy_bare"], "envoy_admin": ports["envoy_bare_admin"],
                                         "authz_grpc": ports["authz_envoy_grpc"]}, LOGS / "envoy-bare-full.yaml")
            cfg = without_ext_authz(cfg, LOGS / "envoy-bare.yaml")
            procs["envoy_bare"] = start(launcher.envoy(LOGS, ENVOY_BIN, cfg, ports["envoy_bare_admin"], authz_health=False,
                                                       args=["--cpuset-threads"], name="envoy-bare",
                                                       wrap=taskset(LOAD_CPUS)))
        for row in FLOOR_ROWS:
            if row in ROWS:
                say(f"starting the floor server{' (memoizing)' if row == 'floor_cached' else ''}, and an Envoy for it")
                env = {**launcher.authz_env(ba_url, ports[row + "_grpc"], ports[row + "_http"], ports[row + "_admin"],
                                            UPSTREAM_TIMEOUT_MS),
                       **({"AUTHZ_CACHE_TTL_MS": str(CACHE_TTL_MS)} if row == "floor_cached" else {})}
                procs[row] = start(launcher.better_authz(LOGS, FLOOR_BIN, env, name=row, wrap=taskset(LOAD_CPUS)))
                procs[PROXY_OF[row]] = start_envoy(PROXY_OF[row].replace("_", "-"), PROXY_OF[row],
                                                   ports[row + "_grpc"])
        if "nginx" in ROWS:
            say("starting better-authz for nginx, and nginx")
            procs["authz_nginx"] = start_authz("better-authz-nginx", ba_url, "authz_nginx", LOAD_CPUS)
            cfg = launcher.render_nginx({**ports, "authz_http": ports["authz_nginx_http"]}, LOGS / "nginx.conf")
            procs["nginx"] = start(launcher.nginx(LOGS, NGINX_BIN, nginx_prefix, cfg, [ports["nginx"]],
                                                  wrap=taskset(LOAD_CPUS)))
        if "fastapi" in ROWS:
            say("starting the FastAPI design (uvicorn)")
            procs["fastapi"] = start(Proc("fastapi", [
                *taskset(LOAD_CPUS), BENCH_VENV / "bin/uvicorn", "fastapi_app:app", "--app-dir", ROOT / "bench",
                "--host", "127.0.0.1", "--port", str(ports["fastapi"]), "--loop", "uvloop", "--http", "httptools",
                "--log-level", "warning"], {"BETTER_AUTH_URL": ba_url, "SESSION_TIMEOUT_MS": str(UPSTREAM_TIMEOUT_MS)},
                log_dir=LOGS, ready=[launcher.http_ready("fastapi", f"http://127.0.0.1:{ports['fastapi']}/healthz")]))

        # --- smoke: every path answers 200 for a real user before anything is measured ---
        uid, cookie = users[0]
        checks = {"direct": f"{ba_url}/api/auth/get-session", "envoy": f"http://127.0.0.1:{ports['envoy']}/api/{uid}/tasks",
                  "envoy_cached": f"http://127.0.0.1:{ports['envoy_cached']}/api/{uid}/tasks",
                  "nginx": f"http://127.0.0.1:{ports['nginx']}/api/{uid}/tasks",
                  "floor": f"http://127.0.0.1:{ports['envoy_floor']}/api/{uid}/tasks",
                  "floor_cached": f"http://127.0.0.1:{ports['envoy_floor_cached']}/api/{uid}/tasks",
                  "fastapi": f"http://127.0.0.1:{ports['fastapi']}/api/{uid}/tasks"}
        for row, url in checks.items():
            if row in ROWS:
                status, _ = http_get(url, {"Cookie": cookie}, timeout=5)
                if status != 200:
                    raise SystemExit(f"bench: smoke check of {row} answered {status}, not 200 ({url})")
                if row != "direct" and http_get(url, timeout=5)[0] != 401:
                    raise SystemExit(f"bench: smoke check of {row} without a cookie did not answer 401")
        if "envoy_bare" in ROWS:
            # No ext_authz: the client itself sends the identity better-authz would have set.
            url = f"http://127.0.0.1:{ports['envoy_bare']}/api/{uid}/tasks"
            status, _ = http_get(url, {"x-user-id": uid}, timeout=5)
            if status != 200:
                raise SystemExit(f"bench: smoke check of envoy_bare answered {status}, not 200 ({url})")

        results: dict[str, dict] = {}
        ba_pid = [ba.pid]
        if PRIME > 0 and any(r in ROWS for r in BA_ROWS):
            # Node compiles hot code as it runs: warm Better Auth up once, before any row.
            say(f"warming Better Auth up ({PRIME:g} s of get-session, not measured)")
            loadgen(["http", "--url", f"{ba_url}/api/auth/get-session", "--users", str(users_file), *DIRECT],
                    "prime", {}, warmup=0, duration=PRIME, quiet=True)

        standin_state: dict = {}

        def service_target() -> tuple[list[str], dict, int]:
            if not standin_state:
                standin = start(Proc("standin", [*taskset(LOAD_CPUS), LOADGEN_BIN, "standin"], log_dir=LOGS))
                deadline = time.monotonic() + 10
                url = None
                while url is None and time.monotonic() < deadline:
                    m = re.search(r"listening on (http://\S+)", (LOGS / "standin.log").read_text())
                    url = m.group(1) if m else time.sleep(0.1)
                if not url:
                    raise SystemExit("bench: the stand-in did not start")
                alone = start_authz("better-authz-alone", url, "authz_alone", SUT_CPU)
                fake = LOGS / "standin-users.tsv"
                write_users(fake, standin_users(USERS))
                standin_state.update(standin=standin, alone=alone, fake=fake, url=url)
            st = standin_state
            st["url"] = url if "url" not in st else st["url"]
            return (["grpc", "--addr", f"127.0.0.1:{ports['authz_alone_grpc']}", "--users", str(st["fake"])],
                    {"better-authz": [st["alone"].pid], "standin": [st["standin"].pid]}, ports["authz_alone_admin"])

        def target(base: str) -> tuple[list[str], dict, int | None, str | None]:
            """loadgen arguments, processes to watch, better-authz admin port and transport of a row."""
            if base == "direct":
                return (["http", "--url", f"{ba_url}/api/auth/get-session", "--users", str(users_file), *DIRECT],
                        {"better-auth": ba_pid}, None, None)
            if base in (*ENVOY_ROWS, "nginx"):
                req = urllib.request.Request(f"http://127.0.0.1:{ports['todo_admin']}/requests", method="DELETE")
                urllib.request.urlopen(req, timeout=5).read()  # the back end records every request
                proxy = procs[PROXY_OF[base]]
                proxy_name = "nginx" if base == "nginx" else "envoy"
                watch = {proxy_name: [proxy.pid, *children(proxy.pid)], "todo-backend": [procs["todo"].pid],
                         "better-auth": ba_pid}
                args = ["http", "--url", f"http://127.0.0.1:{ports[PROXY_OF[base]]}/api/{{user_id}}/tasks",
                        "--users", str(users_file), *BROWSER]
                if base in FLOOR_ROWS:
                    return args, {"floor": [procs[base].pid], **watch}, None, None
                if base == "envoy_bare":
                    # The identity better-authz would have set, sent by the client (Envoy passes it on).
                    return [*args, "--header", "x-user-id: {user_id}"], watch, None, None
                authz = {"envoy": "authz_envoy", "envoy_cached": "authz_envoy_cached", "nginx": "authz_nginx"}[base]
                admin = {"envoy": "authz_envoy_admin", "envoy_cached": "authz_cached_admin",
                         "nginx": "authz_nginx_admin"}[base]
                return (args, {"better-authz": [procs[authz].pid], **watch}, ports[admin],
                        "http" if base == "nginx" else "grpc")
            if base == "fastapi":
                return (["http", "--url", f"http://127.0.0.1:{ports['fastapi']}/api/{{user_id}}/tasks",
                         "--users", str(users_file), *BROWSER],
                        {"fastapi": [procs["fastapi"].pid], "better-auth": ba_pid}, None, None)
            args, watch, admin = service_target()
            if base == "standin":
                # The floor under 5b: the same load straight at the stand-in, what loopback HTTP and
                # the load generator cost on this machine without better-authz in between.
                return (["http", "--url", f"{standin_state['url']}/api/auth/get-session", "--users",
                         str(standin_state["fake"])], {"standin": watch["standin"]}, None, None)
            return args, watch, admin, "grpc"

        for row in plan_rows():
            base = row.removesuffix("_again").removesuffix("_open")
            if base in ("service", "standin") and not standin_state and PROCS:
                # Nothing else may run during the stand-in rows: an idle Node still collects garbage
                # after a busy spell (on better-authz's core), and Envoy and the back ends wake up.
                say("stopping Better Auth, the proxies and the back ends before the stand-in rows")
                stop_all()
            args, watch, admin, transport = target(base)
            title = ROW_TITLES.get(row, row)
            if row.endswith("_open"):
                reference = results.get("service" if base in ("service", "standin") else "direct")
                if not reference:
                    continue
                rate = max(1, round(reference["rps"] * LATENCY_LOAD))
                args += ["--rate", str(rate)]
                title = OPEN_TITLES[base].format(rate=rate, load=LATENCY_LOAD)
            say(title)
            time.sleep(2)  # let the previous row's connections close
            before = scrape(admin) if admin else None
            r = loadgen(args, row, watch)
            if admin:
                r["authz_metrics"] = authz_view(before, scrape(admin), transport)
            r["title"] = title
            results[row] = r
            print_row(row, r)
    finally:
        say("stopping everything the benchmark started")
        stop_all()

    doc = {
        "started_at": started.isoformat(timespec="seconds"),
        "finished_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine, "versions": vers, "note": NOTE or None,
        "config": {"users": USERS, "concurrency": CONCURRENCY, "warmup_s": WARMUP, "duration_s": DURATION,
                   "pinning": ({"sut_cpu": SUT_CPU, "load_cpus": LOAD_CPUS} if PIN_ON else None),
                   "authz_upstream_timeout_ms": UPSTREAM_TIMEOUT_MS},
        "rows": results,
        "summary": summarize(results),
    }
    OUT_JSON.parent.mkdir(parents=True, exist_ok=True)
    OUT_JSON.write_text(json.dumps(doc, indent=2) + "\n")
    md = markdown(doc)
    OUT_MD.write_text(md)
    print()
    print(md)
    say(f"wrote {OUT_JSON.relative_to(ROOT) if OUT_JSON.is_relative_to(ROOT) else OUT_JSON} and {OUT_MD.name}")
    plot_charts(OUT_JSON)
    if UPDATE_DOC:
        update_doc(md)
    return 0


# --- reporting -------------------------------------------------------------------------------------------

def authz_proc(r: dict) -> dict | None:
    return r.get("procs", {}).get("better-authz")


def server_proc(r: dict) -> dict | None:
    """The ext_authz server of a row: better-authz, or the floor server in rows 2e and 2f."""
    return authz_proc(r) or r.get("procs", {}).get("floor")


def print_row(row: str, r: dict) -> None:
    lat = r["latency_ms"]
    extra = ""
    p = server_proc(r)
    if p:
        who = "better-authz" if authz_proc(r) else "floor"
        extra = f", {who} {p['cpu_us_per_request']} µs CPU/check, peak RSS {p['vm_hwm_kb'] / 1024:.1f} MiB"
    print(f"    {r['rps']:.0f} req/s, p50 {lat['p50']:.2f} ms, p95 {lat['p95']:.2f} ms, p99 {lat['p99']:.2f} ms, "
          f"errors {r['errors']}, non-2xx {sum(r['non_2xx'].values())}{extra}", flush=True)


def ratio(a, b):
    return round(a / b, 3) if a is not None and b else None


def summarize(rows: dict) -> dict:
    s: dict = {"vs_direct": {}, "vs_fastapi": {}}
    for row, r in rows.items():
        if row.startswith(("service", "standin")):
            continue
        suffix = "_open" if row.endswith("_open") else ""
        for base in ("direct", "fastapi"):
            b = rows.get(base + suffix)
            if b:
                s[f"vs_{base}"][row] = {
                    "throughput": ratio(r["rps"], b["rps"]),
                    "p95": ratio(r["latency_ms"]["p95"], b["latency_ms"]["p95"]),
                    "p99": ratio(r["latency_ms"]["p99"], b["latency_ms"]["p99"]),
                }
    peaks = [p["vm_hwm_kb"] / 1024 for r in rows.values() if (p := authz_proc(r))]
    if "service" in rows:
        r = rows["service"]
        p = authz_proc(r)
        per_check = p["cpu_us_per_request"] if p else None
        s["service_alone"] = {
            "checks_per_s": r["rps"],
            "authz_cpu_cores": p["cpu_cores"] if p else None,
            "checks_per_cpu_second": round(1e6 / per_check) if per_check else None,
            "p99_ms_end_to_end": r["latency_ms"]["p99"],
            "p99_ms_in_service": r.get("authz_metrics", {}).get("check", {}).get("p99_ms"),
            "peak_rss_mib": round(p["vm_hwm_kb"] / 1024, 1) if p else None,
        }
    if "service_open" in rows:
        r = rows["service_open"]
        s["service_alone_open_loop"] = {
            "rate": r["rate"], "p50_ms": r["latency_ms"]["p50"], "p99_ms": r["latency_ms"]["p99"],
            "p999_ms": r["latency_ms"]["p999"],
            "p99_ms_in_service": r.get("authz_metrics", {}).get("check", {}).get("p99_ms"),
        }
        if "standin_open" in rows:
            b = rows["standin_open"]["latency_ms"]
            o = s["service_alone_open_loop"]
            o["floor_p50_ms"], o["floor_p99_ms"] = b["p50"], b["p99"]
            o["added_p50_ms"] = round(o["p50_ms"] - b["p50"], 3)
            o["added_p99_ms"] = round(o["p99_ms"] - b["p99"], 3)

    # The targets better-authz was built to, as measured in this run (shown, not asserted).
    t = []
    def target(name, measured, goal, ok):
        t.append({"target": name, "measured": measured, "goal": goal, "met": ok})
    if "service_alone" in s and s["service_alone"]["checks_per_cpu_second"]:
        v = s["service_alone"]["checks_per_cpu_second"]
        target("service alone: checks per CPU-second of better-authz (5)", f"{v:,.0f}", "≥ 60,000", v >= 60000)
    if "service_alone_open_loop" in s:
        o = s["service_alone_open_loop"]
        v = o["p99_ms"]
        target(f"service alone: p99 of a whole check at {o['rate']:,.0f}/s (5b, end to end)", f"{v:.3f} ms", "< 1 ms", v < 1)
        if "added_p99_ms" in o:
            v = o["added_p99_ms"]
            target("service alone: p99 added latency (5b − 5c)", f"{v:.3f} ms", "< 1 ms", v < 1)
    for row, goal in (("envoy", 40), ("envoy_open", 40), ("envoy_cached", 8), ("envoy_cached_open", 8)):
        p = authz_proc(rows[row]) if row in rows else None
        if p:
            v = p["cpu_us_per_request"]
            target(f"better-authz CPU per check, {rows[row]['title'].split(' ', 1)[0].rstrip('.')} "
                   f"({'from the cache' if 'cached' in row else 'asking Better Auth'})", f"{v:.1f} µs", f"≤ {goal} µs",
                   v <= goal)
    if "envoy_open" in rows and "direct_open" in rows:
        v = rows["envoy_open"]["latency_ms"]["p95"] - rows["direct_open"]["latency_ms"]["p95"]
        target("Envoy p95 at half of Better Auth's capacity minus the direct call's (2b − 1b)", f"{v:.1f} ms",
               "≤ 5 ms", v <= 5)
    if peaks:
        target("better-authz RSS under load (peak of all rows)", f"{max(peaks):.1f} MiB", "< 30 MiB", max(peaks) < 30)
    if "envoy" in rows and "direct" in rows:
        v = s["vs_direct"]["envoy"]["throughput"]
        target("Envoy throughput vs direct get-session (1), same concurrency", f"{v:.0%}", "≥ 90 %", v >= 0.9)
        if "direct_again" in rows:
            # Rows 2-4 ran between 1 and 1′: their mean is the floor while they ran, if it drifted.
            floor = (rows["direct"]["rps"] + rows["direct_again"]["rps"]) / 2
            v = rows["envoy"]["rps"] / floor
            s["envoy_vs_direct_bracketed"] = round(v, 3)
            target("Envoy throughput vs the mean of 1 and 1′ (drift-corrected)", f"{v:.0%}", "≥ 90 %", v >= 0.9)
        v = rows["envoy"]["latency_ms"]["p95"]
        target("Envoy p95 end to end, closed loop (Better Auth saturated)", f"{v:.1f} ms", "far below 50 ms (< 25 ms)", v < 25)
    if "envoy_open" in rows:
        v = rows["envoy_open"]["latency_ms"]["p95"]
        target(f"Envoy p95 end to end, open loop at {LATENCY_LOAD:.0%} of direct", f"{v:.1f} ms", "far below 50 ms (< 25 ms)", v < 25)
    if "envoy" in rows and "fastapi" in rows:
        e, f = rows["envoy"], rows["fastapi"]
        target("Envoy ahead of FastAPI: throughput", f"{e['rps'] / f['rps']:.1f}×", "> 1×", e["rps"] > f["rps"])
        target("Envoy ahead of FastAPI: p99", f"{e['latency_ms']['p99']:.0f} vs {f['latency_ms']['p99']:.0f} ms",
               "lower", e["latency_ms"]["p99"] < f["latency_ms"]["p99"])
    s["targets"] = t
    return s


def fmt(v, spec: str = ".1f", none: str = "–") -> str:
    return none if v is None else format(v, spec)


def markdown(doc: dict) -> str:
    rows = doc["rows"]
    m, c, v = doc["machine"], doc["config"], doc["versions"]
    s = doc["summary"]
    out = []
    out.append(f"Run {doc['started_at']} on **{m['nproc']} CPUs** ({m['cpu_model']}, {m['mem_gib']} GiB, "
               f"Linux {m['kernel']}); load average before the run {m['loadavg_before']}.")
    pin = c["pinning"]
    out.append(f"{c['users']} distinct signed-in users, cookies rotated round robin; {c['concurrency']} concurrent "
               f"kept-alive connections; {c['warmup_s']:g} s warm-up (excluded) + {c['duration_s']:g} s measured per row"
               + (f"; system under test on CPU {pin['sut_cpu']}, load generator and the rest on CPU {pin['load_cpus']}."
                  if pin else "; no CPU pinning."))
    if doc.get("note"):
        out.append(f"Note: {doc['note']}")
    busiest = max((r["machine"]["unwatched_cores"] for r in rows.values()), default=0)
    if busiest > 0.1:
        out.append(f"**The machine was shared**: processes outside the benchmark used up to {busiest:.2f} cores "
                   f"during a row (column *rest of the machine* below); those rows are pessimistic.")
    out.append("")
    out.append("Ratios compare closed-loop rows with rows 1 and 4, open-loop rows with 1b and 4b.")
    out.append("")
    out.append("| Row | req/s | p50 ms | p95 ms | p99 ms | errors | non-2xx | better-authz CPU µs/check | better-authz peak RSS MiB | req/s vs (1) | req/s vs (4) | p95 vs (4) | p99 vs (4) |")
    out.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    vd, vf = s.get("vs_direct", {}), s.get("vs_fastapi", {})
    for row, r in rows.items():
        lat = r["latency_ms"]
        p = server_proc(r)
        out.append("| " + " | ".join([
            r["title"], f"{r['rps']:,.0f}", f"{lat['p50']:.2f}", f"{lat['p95']:.2f}", f"{lat['p99']:.2f}",
            str(r["errors"]), str(sum(r["non_2xx"].values())),
            fmt(p["cpu_us_per_request"] if p else None), fmt(p["vm_hwm_kb"] / 1024 if p else None),
            fmt(vd.get(row, {}).get("throughput"), ".2f"), fmt(vf.get(row, {}).get("throughput"), ".2f"),
            fmt(vf.get(row, {}).get("p95"), ".2f"), fmt(vf.get(row, {}).get("p99"), ".2f"),
        ]) + " |")
    out.append("")
    out.append("CPU used during the measured window (cores = CPU seconds / wall seconds):")
    out.append("")
    out.append("| Row | " + " | ".join(["Better Auth", "better-authz (2e, 2f: floor)", "proxy", "back end", "stand-in", "loadgen",
                                        "rest of the machine", "steal"]) + " |")
    out.append("|---|" + "---:|" * 8)
    for row, r in rows.items():
        procs = r["procs"]
        def cores(*names):
            for n in names:
                if n in procs:
                    return f"{procs[n]['cpu_cores']:.2f}"
            return "–"
        out.append(f"| {r['title']} | {cores('better-auth')} | {cores('better-authz', 'floor')} | {cores('envoy', 'nginx')} | "
                   f"{cores('todo-backend', 'fastapi')} | {cores('standin')} | {cores('loadgen')} | "
                   f"{r['machine']['unwatched_cores']:.2f} | {r['machine']['steal_cores']:.2f} |")
    out.append("")
    if "service_alone" in s:
        a = s["service_alone"]
        out.append(f"- **Service alone (5)**: {a['checks_per_s']:,.0f} checks/s with better-authz using "
                   f"{fmt(a['authz_cpu_cores'], '.2f')} of its core = **{fmt(a['checks_per_cpu_second'], ',.0f')} checks "
                   f"per CPU-second**; peak RSS **{fmt(a['peak_rss_mib'])} MiB**. At this saturating load p99 is "
                   f"{a['p99_ms_end_to_end']:.2f} ms end to end (load generator → better-authz → stand-in → back), "
                   f"{fmt(a['p99_ms_in_service'], '.2f')} ms inside better-authz by its own histogram: queueing for a busy core.")
    if "service_alone_open_loop" in s:
        o = s["service_alone_open_loop"]
        out.append(f"- **Added latency (5b)**: at {o['rate']:,.0f} checks/s open loop (a check sent late because all "
                   f"connections were busy is timed from when it was due), p50 {o['p50_ms']:.3f} ms, **p99 {o['p99_ms']:.3f} ms**, p99.9 {o['p999_ms']:.3f} ms "
                   f"end to end, stand-in call and the load generator's own gRPC client included; p99 "
                   f"{fmt(o['p99_ms_in_service'], '.3f')} ms inside better-authz (histogram buckets, interpolated)"
                   + (f". The same load straight at the stand-in (5c) has p50 {o['floor_p50_ms']:.3f} ms, p99 "
                      f"{o['floor_p99_ms']:.3f} ms: better-authz adds **{o['added_p50_ms']:.3f} ms at p50 and "
                      f"{o['added_p99_ms']:.3f} ms at p99**." if "added_p99_ms" in o else "."))
    for suffix, kind in (("", "closed loop"), ("_open", "open loop")):
        bare, cached, full = (rows.get(r + suffix) for r in ("envoy_bare", "envoy_cached", "envoy"))
        def envoy_us(r):
            return r["procs"].get("envoy", {}).get("cpu_us_per_request") if r else None
        def authz_us(r):
            p = authz_proc(r) if r else None
            return p["cpu_us_per_request"] if p else None
        if bare and (cached or full):
            parts = [f"Envoy {fmt(envoy_us(bare))} µs per request without ext_authz ({bare['rps']:,.0f} req/s)"]
            for r in (cached, full):
                if r:
                    parts.append(f"{fmt(envoy_us(r))} µs with it ({r['title'].split(' ', 1)[0].rstrip('.')}, "
                                 f"{r['rps']:,.0f} req/s; better-authz {fmt(authz_us(r))} µs per check)")
            out.append(f"- **What ext_authz costs, {kind}**: " + "; ".join(parts) + ". The difference in Envoy's "
                       "column is Envoy's own gRPC client; better-authz's column is ours.")
    for suffix, kind in (("", "closed loop"), ("_open", "open loop")):
        pairs = [(rows.get("envoy" + suffix), rows.get("floor" + suffix), "asking Better Auth"),
                 (rows.get("envoy_cached" + suffix), rows.get("floor_cached" + suffix), "from the cache")]
        parts = []
        for ours, floor, what in pairs:
            o, f = (server_proc(ours) if ours else None), (server_proc(floor) if floor else None)
            if o and f:
                parts.append(f"{what}, better-authz {o['cpu_us_per_request']:.1f} µs per check "
                             f"({ours['title'].split(' ', 1)[0].rstrip('.')}) against the floor's "
                             f"{f['cpu_us_per_request']:.1f} µs ({floor['title'].split(' ', 1)[0].rstrip('.')}): "
                             f"**{o['cpu_us_per_request'] - f['cpu_us_per_request']:.1f} µs of our own**")
        if parts:
            out.append(f"- **Above the floor, {kind}** (the floor server is the same libraries doing only the "
                       "protocol: decode, one Better Auth call or a map lookup, answer): " + "; ".join(parts) + ".")
    for row in ("envoy", "envoy_cached", "nginx", "envoy_open", "envoy_cached_open", "nginx_open"):
        if row in rows and "authz_metrics" in rows[row]:
            am = rows[row]["authz_metrics"]
            out.append(f"- **{rows[row]['title']}**: better-authz made {am['better_auth_calls']:,} Better Auth calls for "
                       f"{am['checks']:,} checks ({fmt(am['better_auth_calls_per_check'], '.2f')} per check; "
                       f"{am['coalesced']:,} coalesced, {am['shed']:,} shed); its check p99 "
                       f"{fmt(am['check']['p99_ms'], '.2f')} ms, Better Auth call p99 "
                       f"{fmt(am['better_auth_call']['p99_ms'], '.2f')} ms.")
    if s.get("targets"):
        out.append("")
        out.append("| Target | Measured | Goal | Met |")
        out.append("|---|---:|---:|:---:|")
        for t in s["targets"]:
            out.append(f"| {t['target']} | {t['measured']} | {t['goal']} | {'yes' if t['met'] else '**no**'} |")
    out.append("")
    out.append("Versions: " + ", ".join(f"{k} {val}" for k, val in v.items() if val) + ".")
    return "\n".join(out) + "\n"


def plot_charts(path: Path) -> None:
    """bench/plot.py (matplotlib, in the bench venv) draws the charts BENCHMARKS.md embeds, next to `path`.
    A failure is reported, not fatal: the numbers are written already."""
    res = subprocess.run([str(BENCH_VENV / "bin/python"), str(ROOT / "bench" / "plot.py"), str(path)],
                         capture_output=True, text=True)
    if res.returncode != 0:
        print(f"bench: bench/plot.py failed (exit {res.returncode}):\n{res.stdout}{res.stderr}", file=sys.stderr)
    else:
        print(res.stdout, end="")


def update_doc(md: str) -> None:
    doc = ROOT / "BENCHMARKS.md"
    begin, end = "<!-- bench:results:begin -->", "<!-- bench:results:end -->"
    if not doc.exists():
        return
    text = doc.read_text()
    if begin not in text or end not in text:
        print(f"bench: {doc.name} has no {begin} … {end} section; not updated", file=sys.stderr)
        return
    head, rest = text.split(begin, 1)
    _, tail_ = rest.split(end, 1)
    doc.write_text(f"{head}{begin}\n{md}{end}{tail_}")
    say(f"updated the results section of {doc.name}")


def report_only(path: Path) -> int:
    """Recompute the summary and the markdown of a results file (no measuring)."""
    doc = json.loads(path.read_text())
    doc["summary"] = summarize(doc["rows"])
    path.write_text(json.dumps(doc, indent=2) + "\n")
    md = markdown(doc)
    path.with_suffix(".md").write_text(md)
    print(md)
    plot_charts(path)
    if UPDATE_DOC:
        update_doc(md)
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--report":
        sys.exit(report_only(Path(sys.argv[2])))
    try:
        sys.exit(main())
    finally:
        stop_all()
