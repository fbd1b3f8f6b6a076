"""Rolling restarts: two better-authz instances behind one Envoy restarted one after the other under load,
with a shutdown delay or with the ext_authz retry policy, and an endpoint Envoy cannot know is dead. The stack
and the load generator are in lifecycle.py; logs, generated configs and reports: .e2e-logs/rolling-restart/.
"""

from __future__ import annotations

import threading
import time

import pytest

from conftest import ROOT
from lifecycle import (HC_INTERVAL_S, HC_JITTER_S, HC_UNHEALTHY_THRESHOLD, Base, LoadResult, deployment, log_tails,
                       mix, run_load, running_base)

LOG_DIR = ROOT / ".e2e-logs" / "rolling-restart"

# Envoy health-checks every 0.5 s here (+ up to 0.1 s jitter). A NOT_SERVING answer ejects the host at once
# (Envoy counts unhealthy_threshold for network failures only: refused, timed out), so Envoy stops sending to
# a draining instance within ~0.6 s + one health-check round trip of the SIGTERM; the instance keeps serving
# for 2.5 s while it reports NOT_SERVING, then drains. The delay also stays above interval ×
# unhealthy_threshold + jitter, the bound if NOT_SERVING were counted like a network failure.
ROLLING_SHUTDOWN_DELAY_MS = 2500
ROLLING_RATE = 200.0


@pytest.fixture(scope="module")
def base():
    with running_base(LOG_DIR) as b:
        yield b


# --------------------------------------------------------------------------------------------- rolling restart

def rolling_restart(b: Base, name: str, delay_ms: int, retry: str | None) -> tuple[LoadResult, int, str, str]:
    """Two better-authz instances behind one Envoy (health checks every HC_INTERVAL_S) with
    AUTHZ_SHUTDOWN_DELAY_MS=`delay_ms`, under ROLLING_RATE req/s of the mix: restart one, then the other
    (SIGTERM → [Envoy marks it unhealthy while it still serves] → it drains and exits 0 → start again on the
    same port → Envoy sees it healthy → 3 s with both). Returns (load result, requests the back end
    received, report, log tails)."""
    cases = mix(b.users)
    b.backend_clear()
    env = {"AUTHZ_SHUTDOWN_DELAY_MS": str(delay_ms), "AUTHZ_SHUTDOWN_TIMEOUT_MS": "5000"}
    with deployment(b, name, instances=2, authz_env=env, fast_health_checks=True,
                    ext_authz_retry=retry) as (envoy, authz):
        stop = threading.Event()
        box: dict[str, LoadResult] = {}
        loader = threading.Thread(target=lambda: box.setdefault("r", run_load(envoy.port, cases, ROLLING_RATE, 60,
                                                                               stop=stop)),
                                  name="rolling-load", daemon=True)
        events: list[str] = []
        t_start = time.monotonic()
        note = lambda what: events.append(f"{time.monotonic() - t_start:6.2f}s {what}")  # noqa: E731
        loader.start()
        try:
            time.sleep(3)
            for inst in authz:
                before = inst.total_decisions()
                sent = inst.terminate()
                note(f"SIGTERM {inst.name} (:{inst.grpc}), had answered {before:.0f} checks")
                if delay_ms:
                    unhealthy_at = envoy.wait_host(inst.grpc, healthy=False, timeout=10)
                    note(f"Envoy sees {inst.name} unhealthy after {unhealthy_at - sent:.2f}s")
                    assert inst.proc.running(), f"{inst.name} exited before Envoy moved away\n{log_tails(inst.proc)}"
                rc, exited_at = inst.wait_exit(timeout=delay_ms / 1000 + 5 + 5)
                note(f"{inst.name} exited rc={rc} {exited_at - sent:.2f}s after SIGTERM")
                assert rc == 0, f"{inst.name} exit code {rc}\n{log_tails(inst.proc)}"
                assert exited_at - sent >= delay_ms / 1000 - 0.1, "left before the delay was over"
                inst.start()
                inst.wait_ready()
                healthy_at = envoy.wait_host(inst.grpc, healthy=True, timeout=30)
                note(f"{inst.name} restarted (pid {inst.pid}); Envoy sees it healthy {healthy_at - sent:.2f}s "
                     f"after the SIGTERM")
                time.sleep(3)  # both serving again before the next one goes
                served = inst.total_decisions()
                note(f"{inst.name} answered {served:.0f} checks since its restart")
                assert served > 0, f"{inst.name} got no traffic after its restart"
        finally:
            stop.set()
            loader.join(30)
        result = box["r"]
        ext_authz = {k.rsplit(".", 1)[1]: v for k, v in envoy.stats("http.ingress_http.ext_authz").items() if v}
        cluster = {k.split(".", 2)[2]: v for k, v in envoy.stats("cluster.better_authz.").items()
                   if v and not any(s in k for s in ("bytes", "_2xx", "_200", "max_host_weight", "version",
                                                     "completed", "membership", "lb_", "buffer", "flow_control"))}
        logs = log_tails(*(a.proc for a in authz), envoy.proc)
    backend_seen = b.backend_count()
    report = (f"{name}: AUTHZ_SHUTDOWN_DELAY_MS={delay_ms}, ext_authz retry_policy at {retry or '(none)'}\n"
              f"{result.summary()}\nevents:\n  " + "\n  ".join(events) +
              f"\nenvoy ext_authz stats: {ext_authz}\nenvoy better_authz cluster stats: {cluster}")
    print("\n" + report)
    (b.log_dir / f"{name}-report.txt").write_text(report + "\n")
    return result, backend_seen, report, logs


def assert_every_answer_right(result: LoadResult, backend_seen: int, report: str, logs: str) -> None:
    assert result.sent > 0.9 * ROLLING_RATE * result.duration, f"load fell short:\n{report}"
    assert result.statuses.get(503, 0) == 0, f"503s during the rolling restart:\n{report}\n{logs}"
    assert result.errors == [], f"errors during the rolling restart:\n{report}\n{logs}"
    assert result.wrong == [], f"wrong answers during the rolling restart:\n{report}\n{logs}"
    assert backend_seen == result.allowed == result.by_kind["own"], (backend_seen, result.allowed, report)


def test_rolling_restart_with_shutdown_delay_loses_no_request(base: Base):
    """AUTHZ_SHUTDOWN_DELAY_MS (2.5 s) above Envoy's time to see NOT_SERVING (one 0.5 s health-check
    interval + jitter: Envoy ejects on the first NOT_SERVING answer; unhealthy_threshold only counts
    network failures): Envoy stops sending to an instance before it stops accepting, so every request
    gets the right answer with the shipped ext_authz config: zero 503s, zero errors."""
    assert ROLLING_SHUTDOWN_DELAY_MS / 1000 > HC_INTERVAL_S * HC_UNHEALTHY_THRESHOLD + HC_JITTER_S + 0.5
    assert_every_answer_right(*rolling_restart(base, "rolling-delay", ROLLING_SHUTDOWN_DELAY_MS, None))


def test_rolling_restart_without_delay_needs_ext_authz_retry(base: Base):
    """No shutdown delay (a crash, or a Kubernetes pod whose endpoint Envoy has not dropped yet when
    SIGTERM arrives): the instance stops accepting before Envoy's health check notices, so Checks sent to it
    fail to connect. With retry_policy() on the ext_authz gRPC service they go to the other instance:
    still zero 503s, zero errors."""
    assert_every_answer_right(*rolling_restart(base, "rolling-retry", 0, "grpc_service"))


def dead_endpoint(b: Base, name: str, retry: str | None, seconds: float = 5) -> tuple[LoadResult, int, str, str]:
    """One live better-authz and one listed endpoint where nothing listens, no health checks (Envoy cannot
    know it is dead, like a killed pod still in DNS), ROLLING_RATE req/s of the mix for `seconds`."""
    b.backend_clear()
    with deployment(b, name, instances=1, dead_endpoints=1, health_checks=False,
                    ext_authz_retry=retry) as (envoy, (authz,)):
        result = run_load(envoy.port, mix(b.users), ROLLING_RATE, seconds)
        retries = {k.rsplit(".", 1)[1]: v for k, v in envoy.stats("cluster.better_authz.upstream_rq_retry").items()}
        logs = log_tails(authz.proc, envoy.proc)
    backend_seen = b.backend_count()
    report = f"{name}: retry_policy at {retry or '(none)'}\n{result.summary()}\nenvoy retry stats: {retries}"
    print("\n" + report)
    (b.log_dir / f"{name}-report.txt").write_text(report + "\n")
    return result, backend_seen, report, logs


def test_dead_instance_envoy_does_not_know_about_is_retried_around(base: Base):
    """With retry_policy() and the retry budget, a Check that cannot reach one instance goes to another:
    zero 503s although half the endpoints are dead and no health check removes them."""
    assert_every_answer_right(*dead_endpoint(base, "dead-retry", "grpc_service"))


