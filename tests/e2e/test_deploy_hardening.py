"""Deployment hardening of the shipped proxy configs (envoy/envoy.yaml, nginx/nginx.conf), end to end.

- Access logs: Better Auth mails one-time tokens in URLs (`/api/auth/verify-email?token=`,
  `/api/auth/magic-link/verify?token=`, `/api/auth/reset-password/<token>`). Requests carrying unique
  random tokens go through Envoy and nginx; afterwards no log of any component may contain one, while the
  proxies' logs must show the requests (query dropped, reset token replaced by `<redacted>`).
- X-Forwarded-For: a client-sent chain must never reach Better Auth through the unchecked /api/auth routes;
  Better Auth (whose rate limiter and session records read it) sees exactly the real peer address.
"""

from __future__ import annotations

import secrets
import time
import uuid
from pathlib import Path

import pytest

from conftest import LOG_DIR, PROXIES, Stack, User

REDACTED = "/api/auth/reset-password/<redacted>"
SPOOFED = ("203.0.113.7", "198.51.100.23", "192.0.2.1")
# Envoy's stdout access log is flushed every 10 s (--file-flush-interval-msec) or per 64 KiB.
FLUSH_TIMEOUT = 20.0


def _secret(label: str) -> str:
    return f"SECRET{label}{secrets.token_hex(16)}"


def _all_logs() -> dict[Path, str]:
    """Every log file the stack writes: <component>.log and nginx's access.log / error.log."""
    return {p: p.read_text(errors="replace") for p in sorted(LOG_DIR.rglob("*.log")) if p.is_file()}


def _wait_for_marker(stack: Stack, proxy: str, log: Path) -> None:
    """Send a request with a unique path through `proxy` and wait until `log` shows it: every line written
    before it (the token requests) has then been flushed too."""
    marker = f"/api/auth/e2e-flush-marker-{uuid.uuid4().hex}"
    stack.request(proxy, "GET", marker)
    deadline = time.monotonic() + FLUSH_TIMEOUT
    while time.monotonic() < deadline:
        if log.exists() and marker in log.read_text(errors="replace"):
            return
        time.sleep(0.2)
    pytest.fail(f"{proxy}: {marker} did not appear in {log} within {FLUSH_TIMEOUT:.0f}s")


@pytest.fixture(scope="module")
def token_traffic(stack: Stack):
    """Requests whose URLs carry one-time tokens, through both proxies; returns the secrets by kind."""
    user = stack.sign_up("envoy", name="Token Owner")
    sent: dict[str, list[str]] = {"anywhere": [], "not_backend": []}
    for proxy in PROXIES:
        s = {k: _secret(f"{k}{proxy}") for k in ("VERIFY", "MAGIC", "RESET", "RESETCASE", "CALLBACK",
                                                 "DENIED", "ALLOWED")}
        statuses = {
            "verify": stack.request(proxy, "GET", f"/api/auth/verify-email?token={s['VERIFY']}").status,
            "magic": stack.request(proxy, "GET", f"/api/auth/magic-link/verify?token={s['MAGIC']}"
                                                 f"&callbackURL=/").status,
            "reset": stack.request(proxy, "GET", f"/api/auth/reset-password/{s['RESET']}"
                                                 f"?callbackURL=/reset%3Ft%3D{s['CALLBACK']}").status,
            # The redaction matches case-insensitively, like a router that ignores case would.
            "reset-case": stack.request(proxy, "GET", f"/api/auth/Reset-Password/{s['RESETCASE']}").status,
            # A protected path with a token in the query: denied (no session), and allowed.
            "denied": stack.request(proxy, "GET", f"/api/{user.id}/tasks?token={s['DENIED']}").status,
            "allowed": stack.request(proxy, "GET", f"/api/{user.id}/tasks?token={s['ALLOWED']}",
                                     [("Cookie", user.cookie)]).status,
        }
        assert statuses["denied"] == 401, statuses
        assert statuses["allowed"] == 200, statuses
        sent["anywhere"] += [v for k, v in s.items() if k != "ALLOWED"]
        sent["not_backend"].append(s["ALLOWED"])
    _wait_for_marker(stack, "envoy", LOG_DIR / "envoy.log")
    _wait_for_marker(stack, "nginx", LOG_DIR / "nginx" / "logs" / "access.log")
    return sent


def test_no_log_carries_a_one_time_token(token_traffic):
    logs = _all_logs()
    names = {p.name for p in logs}
    assert {"envoy.log", "access.log", "error.log", "better-authz.log", "better-auth.log",
            "todo-backend.log"} <= names, sorted(names)
    leaks = []
    for path, text in logs.items():
        # The todo back end too: it logs paths without their query, like the proxies.
        checked = token_traffic["anywhere"] + token_traffic["not_backend"]
        for lineno, line in enumerate(text.splitlines(), 1):
            if any(secret in line for secret in checked):
                leaks.append(f"{path.relative_to(LOG_DIR)}:{lineno}: {line[:300]}")
    assert not leaks, "one-time tokens in logs:\n" + "\n".join(leaks)


@pytest.mark.parametrize("proxy,log", [("envoy", "envoy.log"), ("nginx", "nginx/logs/access.log")])
def test_proxy_logs_the_requests_without_query_and_with_the_reset_token_redacted(token_traffic, proxy, log):
    # The positive side: the token requests were logged (so the test above looked at real lines), with the
    # path only and the reset token replaced.
    text = (LOG_DIR / log).read_text(errors="replace")
    assert "GET /api/auth/verify-email" in text, text[-2000:]
    assert "GET /api/auth/magic-link/verify" in text, text[-2000:]
    assert text.count(f"GET {REDACTED}") >= 2, text[-2000:]
    assert "?token=" not in text and "callbackURL" not in text, text[-2000:]


def _recorded_with(stack: Stack, probe: str) -> list[dict]:
    return [r for r in stack.better_auth_requests()
            if any(k.lower() == "x-e2e-probe" and v == probe for k, v in r["headers"])]


@pytest.mark.parametrize("proxy", PROXIES)
def test_client_x_forwarded_for_never_reaches_better_auth(stack, proxy):
    probe = uuid.uuid4().hex
    spoof = [("X-Forwarded-For", SPOOFED[0]), ("X-Forwarded-For", f"{SPOOFED[1]}, {SPOOFED[2]}"),
             ("X-E2E-Probe", probe)]
    user: User = stack.sign_up(proxy, extra_headers=spoof)  # asserts 200 + session cookie
    signed_in = stack.sign_in(proxy, user, extra_headers=spoof)
    assert signed_in.status == 200, signed_in
    session = stack.request(proxy, "GET", "/api/auth/get-session", [("Cookie", user.cookie), *spoof],
                            source_ip=user.source_ip)
    assert session.status == 200 and session.json()["user"]["id"] == user.id, session

    recorded = _recorded_with(stack, probe)
    paths = sorted(r["path"].split("?")[0] for r in recorded)
    assert paths == ["/api/auth/get-session", "/api/auth/sign-in/email", "/api/auth/sign-up/email"], paths
    for r in recorded:
        xff = [v for k, v in r["headers"] if k.lower() == "x-forwarded-for"]
        # Exactly one header with exactly the peer Envoy/nginx saw: the address Better Auth keys on.
        assert xff == [user.source_ip], (r["path"], r["headers"])
        for name, value in r["headers"]:
            assert not any(ip in value for ip in SPOOFED), (r["path"], name, value)
