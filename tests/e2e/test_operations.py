"""Operations against a real Prometheus: the shipped alert rules and Grafana dashboard, on live traffic.

Its own Better Auth, better-authz (session cache on, 1 s), Envoy and nginx, so stopping Better Auth here
affects no other test; the stack's todo back end serves the allowed requests. Prometheus scrapes
better-authz's admin /metrics every second and evaluates the chart's rules rendered with short windows
(tests/e2e/fixtures/prometheus-fast.rules.yaml, generated from the chart and drift-checked by
scripts/validate-k8s.sh). One thread sends traffic through both proxies the whole time.
"""

from __future__ import annotations

import json
import math
import threading
import time
import uuid
from dataclasses import dataclass, field

import pytest

from conftest import LOG_DIR, PASSWORD, ExtraProcs, Stack, User, _source_ips, raw_request, session_cookie
from launcher import ROOT, free_ports
from prometheus import Prometheus, exported_names, metric_names

FAST_RULES = ROOT / "tests" / "e2e" / "fixtures" / "prometheus-fast.rules.yaml"
DASHBOARD = ROOT / "deploy" / "grafana" / "better-authz.json"
JOB = "better-authz"  # the job the rules select (the chart's default)
UNAVAILABLE = "BetterAuthzBetterAuthUnavailable"
# What Grafana would put in place of the dashboard's variables: the job, every instance (the variable's
# allValue), and a rate window of several scrapes.
GRAFANA_VARS = {"$__rate_interval": "1m", "$job": JOB, "$instance": ".+"}


@dataclass
class Ops:
    stack: Stack
    better_auth: int              # its port
    prometheus: Prometheus
    metrics: callable             # better-authz's /metrics text
    user: User
    other: User                   # a path of another user: 403 USER_MISMATCH
    stop: threading.Event = field(default_factory=threading.Event)
    sent: dict[int, int] = field(default_factory=dict)   # status -> count

    def sign_up(self) -> User:
        email, ip = f"ops-{uuid.uuid4().hex[:8]}@example.com", next(_source_ips)
        resp = raw_request(self.better_auth, "POST", "/api/auth/sign-up/email",
                           [("Content-Type", "application/json"), ("Origin", f"http://127.0.0.1:{self.better_auth}")],
                           json.dumps({"name": "Ops", "email": email, "password": PASSWORD}).encode(), source_ip=ip)
        assert resp.status == 200, resp
        return User(id=resp.json()["user"]["id"], email=email, name="Ops", cookie=session_cookie(resp), source_ip=ip)

    def traffic(self) -> None:
        """Both proxies, three kinds of check each (a session, no cookie, another user's path), ~40/s. One
        thread: Stack.request's tallies (the back-end accounting test) are not thread-safe."""
        while not self.stop.is_set():
            for proxy in ("envoy-ops", "nginx-ops"):
                user = self.user
                for path, cookie in ((f"/api/{user.id}/tasks", user.cookie), (f"/api/{user.id}/tasks", None),
                                     (f"/api/{self.other.id}/tasks", user.cookie)):
                    try:
                        resp = self.stack.request(proxy, "GET", path, [("Cookie", cookie)] if cookie else [])
                        self.sent[resp.status] = self.sent.get(resp.status, 0) + 1
                    except OSError:
                        self.sent[0] = self.sent.get(0, 0) + 1
            time.sleep(0.1)


@pytest.fixture(scope="module")
def ops(stack: Stack):
    with ExtraProcs(stack) as extra:
        ba = extra.better_auth("better-auth-ops")
        authz = extra.authz("better-authz-ops", {"BETTER_AUTH_URL": f"http://127.0.0.1:{ba}",
                                                 "AUTHZ_CACHE_TTL_MS": "1000"})
        extra.envoy("envoy-ops", authz)
        port = free_ports(1)[0]
        extra.nginx("nginx-ops", "nginx/nginx.conf", {
            8081: port, 9002: authz.ports["http"], 3000: ba, 8000: stack.ports["todo"],
        }, listen={"nginx-ops": port})
        with Prometheus(LOG_DIR, {JOB: [f"127.0.0.1:{authz.ports['admin']}"]}, [FAST_RULES]) as prom:
            stack.procs[prom.proc.name] = prom.proc          # its log tail in failure reports
            o = Ops(stack, ba, prom, authz.metrics, user=None, other=None)
            o.user, o.other = o.sign_up(), o.sign_up()
            sender = threading.Thread(target=o.traffic, daemon=True)
            sender.start()
            try:
                prom.wait("Prometheus to scrape better-authz and see both transports' checks", lambda: len(
                    prom.query(f'sum by (transport) (increase(better_authz_decisions_total{{job="{JOB}"}}[5s])) > 0')
                    ["data"]["result"]) == 2, 20)
                yield o
            finally:
                o.stop.set()
                sender.join(5)
                stack.procs.pop(prom.proc.name, None)


def test_better_auth_outage_fires_the_unavailable_alert_and_it_resolves(ops: Ops):
    prom, ba = ops.prometheus, ops.stack.procs["better-auth-ops"]
    assert prom.alerts(UNAVAILABLE) == [], "the alert is active before any outage"
    assert 200 in ops.sent, f"no request was allowed before the outage: {ops.sent}"

    ba.stop()
    fired = prom.wait(f"{UNAVAILABLE} to fire", lambda: prom.alerts(UNAVAILABLE, "firing"), 30)
    alert = prom.alerts(UNAVAILABLE, "firing")[0]
    assert alert["labels"]["severity"] == "critical" and alert["labels"]["job"] == JOB, alert
    assert float(alert["value"]) > 0.05, alert                       # the share of AUTH_UNAVAILABLE
    assert alert["annotations"]["runbook_url"].endswith("docs/runbook.md#betterauthzbetterauthunavailable"), alert
    assert ops.sent.get(503, 0) > 0, f"the proxies answered no 503 during the outage: {ops.sent}"
    assert prom.alerts("BetterAuthzBetterAuthErrors") == [], "an outage is not AUTH_ERROR"

    ba.start()
    ba.wait_ready(60)
    ops.user = ops.sign_up()    # the memory store lost every session
    resolved = prom.wait(f"{UNAVAILABLE} to resolve", lambda: prom.alerts(UNAVAILABLE) == [], 40)
    print(f"\n{UNAVAILABLE}: firing {fired:.1f} s after Better Auth stopped, gone {resolved:.1f} s after it was back")


def test_every_dashboard_query_returns_data_from_exported_metrics(ops: Ops):
    dashboard = json.loads(DASHBOARD.read_text())
    exported = exported_names(ops.metrics())
    queries = [(p["title"], t["expr"]) for p in dashboard["panels"] if p["type"] != "row" for t in p["targets"]]
    assert len(queries) >= 20, queries
    time.sleep(3)  # a few seconds of traffic with Better Auth up (after the outage test, too)
    problems = []
    for title, expr in queries:
        for var, value in GRAFANA_VARS.items():
            expr = expr.replace(var, value)
        if "$" in expr:
            problems.append(f"{title}: a variable the test does not know: {expr}")
            continue
        names = metric_names(expr)
        if not names or names - exported:
            problems.append(f"{title}: metrics not exported by better-authz: {sorted(names - exported) or 'none'}")
        answer = ops.prometheus.query(expr)
        if answer.get("status") != "success" or answer.get("warnings"):
            problems.append(f"{title}: {answer.get('error') or answer.get('warnings')}: {expr}")
            continue
        values = [float(r["value"][1]) for r in answer["data"]["result"]]
        if not any(math.isfinite(v) for v in values):
            problems.append(f"{title}: no data ({values}): {expr}")
    assert not problems, "\n".join(problems)


def test_metric_name_extraction_sees_what_the_dashboard_check_relies_on():
    expr = ('sum by (reason) (rate(a_total{reason="X(y)"}[5m])) / ignoring(reason) group_left '
            'sum(rate(b_seconds_bucket[1m])) > 0.5 and on(job) up == 0')
    assert metric_names(expr) == {"a_total", "b_seconds_bucket", "up"}
    text = "# TYPE h histogram\nh_bucket{le=\"1\"} 0\n# TYPE c counter\nc 1\n"
    assert exported_names(text) == {"h", "h_bucket", "h_sum", "h_count", "c"}
