"""Credentials besides the session cookie, end to end against the real Better Auth with its plugins.

The stack's better-authz runs with AUTHZ_CREDENTIALS=cookie,bearer,api-key (scripts/launcher.py), and
demo/better-auth/server.mjs enables bearer(), jwt(), admin(), organization() and apiKey() from
@better-auth/api-key. Every case runs through Envoy (ext_authz gRPC), nginx (auth_request) and better-authz's
HTTP /auth asked directly the way nginx asks it ("direct"):

- a bearer token (sign-up's `set-auth-token`) allows with the true identity, Better Auth is asked with that
  token alone; after Better Auth's updateAge the client gets `set-auth-token` back (never a cookie client,
  never Set-Cookie to a bearer client); signed-out, forged and malformed tokens are 401 SESSION_INVALID;
- an API key allows as its owner, Better Auth is asked with the key alone; unknown, disabled, expired and
  malformed keys are 401 SESSION_INVALID (Better Auth's 401/403, never a 500); a key over its own rate limit
  or quota is 429 RATE_LIMITED with Retry-After through every front;
- the first credential present (in AUTHZ_CREDENTIALS order) is the only one forwarded;
- with the binary's default AUTHZ_CREDENTIALS (cookie) a bearer token or key is no credential at all:
  401 SESSION_REQUIRED without asking Better Auth;
- Better Auth's own rate limiter (a 429 without a key's code) stays 503 AUTH_UNAVAILABLE, for keys too;
- no token or key value ever appears in a log of better-authz (also at RUST_LOG=trace), the proxies or the
  back end.

Keys are created on Better Auth's direct port with the test-only POST /__debug/api-key (server-side
auth.api.createApiKey: per-key rate limits, expiry, disabled keys).
"""

from __future__ import annotations

import json
import math
import time
import uuid
from dataclasses import dataclass

import pytest

from adversary import TRANSPORTS, Outcome, assert_allowed, assert_auth_deny, assert_denied, header_values, send
from conftest import (LOG_DIR, PASSWORD, SESSION_UPDATE_AGE, ExtraProcs, Stack, User, _source_ips, raw_request,
                      session_cookie)
from launcher import STACK_CREDENTIALS

# Every credential value the tests send: none may appear in a log (test_no_credential_in_any_log, last).
SECRETS: set[str] = set()
# Better Auth's answer headers that must never reach a client through better-authz.
NEVER_TO_CLIENT = ("set-auth-jwt",)


# ------------------------------------------------------------------------------------------ helpers

@dataclass
class Holder(User):
    """A user with a bearer token (sign-up's `set-auth-token`: `<token>.<signature>`)."""
    token: str = ""


def sign_up(stack: Stack, proxy: str = "envoy", name: str | None = None) -> Holder:
    """Sign up through `proxy` and keep both credentials the answer carries: the session cookie and the bearer
    token."""
    tag = uuid.uuid4().hex[:10]
    email, name, ip = f"cred-{tag}@example.com", name or f"Cred {tag}", next(_source_ips)
    resp = stack.request(proxy, "POST", "/api/auth/sign-up/email",
                         [("Content-Type", "application/json"), ("Origin", stack.origin(proxy))],
                         json.dumps({"name": name, "email": email, "password": PASSWORD}).encode(), source_ip=ip)
    assert resp.status == 200, resp
    token = resp.header("set-auth-token")
    assert token and session_cookie(resp), f"sign-up answered no set-auth-token or no cookie: {resp!r}"
    user = Holder(id=resp.json()["user"]["id"], email=email, name=name, cookie=session_cookie(resp), source_ip=ip,
                  token=token)
    SECRETS.update({token, token.split(".", 1)[0], user.cookie.split("=", 1)[1]})
    return user


def create_key(stack: Stack, user_id: str, port: int | None = None, **options) -> str:
    """An API key for `user_id` (options: expiresIn s, rateLimitMax, rateLimitTimeWindow ms, rateLimitEnabled,
    remaining, enabled) at the stack's Better Auth, or the one on `port`."""
    resp = raw_request(port or stack.ports["better_auth"], "POST", "/__debug/api-key",
                       [("Content-Type", "application/json")], json.dumps({"userId": user_id, **options}).encode())
    assert resp.status == 200, resp
    key = resp.json()["key"]
    SECRETS.add(key)
    return key


def bearer(token: str, scheme: str = "Bearer") -> str:
    return f"Authorization: {scheme} {token}"


def api_key(key: str) -> str:
    return f"x-api-key: {key}"


def tasks(user: User) -> str:
    return f"/api/{user.id}/tasks"


def only_credential(lookup: dict) -> dict[str, list[str]]:
    """The credential headers of a get-session request Better Auth received (a bearer scheme as `Bearer`,
    whatever case the client wrote: better-authz may pass it on either way)."""
    got = {name: header_values(lookup, name) for name in ("cookie", "authorization", "x-api-key")
           if header_values(lookup, name)}
    if "authorization" in got:
        got["authorization"] = [("Bearer " + v[7:]) if v[:7].lower() == "bearer " else v
                                for v in got["authorization"]]
    return got


def asked_with(o: Outcome, name: str, value: str) -> None:
    """Better Auth got exactly one get-session, with this one credential header and no other."""
    assert [only_credential(r) for r in o.lookups] == [{name: [value]}], o.lookups


def assert_nothing_for_a_browser(o: Outcome) -> None:
    """A bearer or API-key client gets no cookie and no Better Auth JWT, whatever Better Auth answered."""
    names = {k.lower() for k, _ in o.resp.headers}
    assert "set-cookie" not in names, o
    assert not names & set(NEVER_TO_CLIENT), o


def assert_code(o: Outcome, status: int, code: str) -> None:
    """Denied with `status` and error code `code` (the JSON body; /auth also its x-authz-error-code)."""
    assert_denied(o, status)
    assert o.error_code() == code, o
    if o.transport == "direct":
        assert_auth_deny(o.resp)


@pytest.fixture(scope="module")
def alice(stack: Stack) -> Holder:
    return sign_up(stack, "envoy", name="Alice Bearer")


@pytest.fixture(scope="module")
def bob(stack: Stack) -> Holder:
    return sign_up(stack, "nginx", name="Bob Bearer")


# ================================================================ bearer tokens

@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER"])
def test_bearer_token_allows_with_the_true_identity(stack, alice, transport, scheme):
    o = send(stack, transport, tasks(alice), [bearer(alice.token, scheme), "X-User-Id: someone-else"])
    assert_allowed(o, alice)
    assert_nothing_for_a_browser(o)
    # Exactly one lookup, with the token and nothing else (Better Auth's bearer plugin reads any scheme case).
    asked_with(o, "authorization", f"Bearer {alice.token}")


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_bearer_token_on_another_users_path_is_403(stack, alice, bob, transport):
    o = send(stack, transport, tasks(bob), [bearer(alice.token)])
    assert_code(o, 403, "USER_MISMATCH")


def test_refreshed_bearer_token_reaches_the_client_and_only_a_bearer_client(stack):
    """After Better Auth's updateAge (2 s here) get-session refreshes the session and answers `set-auth-token`
    (and a Set-Cookie): a bearer client gets the token and no cookie, a cookie client its cookie and no token."""
    bearers = {t: sign_up(stack, "envoy") for t in TRANSPORTS}
    cookies = {t: sign_up(stack, "nginx") for t in TRANSPORTS}
    time.sleep(SESSION_UPDATE_AGE + 0.7)   # past updateAge: the next get-session of each refreshes
    for transport in TRANSPORTS:
        user = bearers[transport]
        o = send(stack, transport, tasks(user), [bearer(user.token)])
        assert_allowed(o, user)
        assert o.resp.header_values("set-auth-token") == [user.token], o   # the refresh keeps the token
        assert_nothing_for_a_browser(o)
        # Better Auth did refresh (its answer carried the token and a cookie), so the absence of Set-Cookie
        # above is better-authz's doing.
        again = send(stack, transport, tasks(user), [bearer(user.token)])
        assert_allowed(again, user)
        assert again.resp.header_values("set-auth-token") == [], again   # nothing left to refresh

        user = cookies[transport]
        o = send(stack, transport, tasks(user), [f"Cookie: {user.cookie}"])
        assert_allowed(o, user)
        refreshed = [c for c in o.resp.header_values("set-cookie") if c.startswith("better-auth.session_token=")]
        assert refreshed and refreshed[0].split(";", 1)[0] == user.cookie, o
        assert o.resp.header_values("set-auth-token") == [], o
        assert not {k.lower() for k, _ in o.resp.headers} & set(NEVER_TO_CLIENT), o


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_signed_out_bearer_token_is_401(stack, transport):
    user = sign_up(stack, "envoy")
    assert_allowed(send(stack, transport, tasks(user), [bearer(user.token)]), user)
    # Sign out with the bearer itself, through the proxy's public /api/auth/ route (no Origin needed: no cookie).
    out = stack.request("envoy" if transport == "direct" else transport, "POST", "/api/auth/sign-out",
                        [("Content-Type", "application/json"), ("Authorization", f"Bearer {user.token}")], b"{}",
                        source_ip=user.source_ip)
    assert out.status == 200 and out.json() == {"success": True}, out
    o = send(stack, transport, tasks(user), [bearer(user.token)])
    assert_code(o, 401, "SESSION_INVALID")
    assert len(o.lookups) == 1, o
    # Better Auth answered null with three clearing cookies: they must not reach a bearer client (they would
    # log out a browser session sharing the client).
    assert_nothing_for_a_browser(o)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_forged_bearer_tokens_are_401(stack, alice, transport):
    raw, _, signature = alice.token.partition(".")
    forged = {
        "bad-signature": f"{raw}.{'A' * (len(signature) - 1)}=",
        "other-token": f"{uuid.uuid4().hex}.{signature}",
        "no-dot": uuid.uuid4().hex,            # Better Auth signs it itself, finds nothing, clears cookies
        "api-key-as-bearer": "k" * 64,
    }
    for label, token in forged.items():
        o = send(stack, transport, tasks(alice), [bearer(token)])
        assert_code(o, 401, "SESSION_INVALID")
        asked_with(o, "authorization", f"Bearer {token}")
        assert_nothing_for_a_browser(o)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_malformed_bearer_is_401_without_asking(stack, alice, transport):
    cases = {
        "space-inside": [bearer(alice.token[:10] + " " + alice.token[10:])],
        "over-1kib": [bearer(alice.token + "A" * 1100)],
    }
    if transport != "nginx":
        # nginx refuses a repeated Authorization line itself (400), before any auth_request.
        cases["sent-twice"] = [bearer(alice.token), bearer(alice.token)]
    for label, lines in cases.items():
        o = send(stack, transport, tasks(alice), lines)
        assert_denied(o, 401, lookups=0)
        assert o.error_code() == "SESSION_INVALID", (label, o)


def test_repeated_authorization_is_refused_by_nginx(stack, alice):
    o = send(stack, "nginx", tasks(alice), [bearer(alice.token), bearer(alice.token)])
    assert_denied(o, 400, lookups=0)       # nginx: "client sent duplicate header line"


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_other_authorization_schemes_are_no_credential(stack, alice, transport):
    for value in ("Basic YWxpY2U6c2VjcmV0", f"Token {alice.token}", "Bearer"):
        o = send(stack, transport, tasks(alice), [f"Authorization: {value}"])
        assert_denied(o, 401, lookups=0)
        assert o.error_code() == "SESSION_REQUIRED", (value, o)
    o = send(stack, transport, tasks(alice), ["x-api-key: "])      # empty: absent, as Better Auth reads it
    assert_code(o, 401, "SESSION_REQUIRED")
    assert o.lookups == [], o


# ================================================================ API keys

@pytest.mark.parametrize("transport", TRANSPORTS)
def test_api_key_allows_as_its_owner(stack, alice, transport):
    key = create_key(stack, alice.id)
    o = send(stack, transport, tasks(alice), [api_key(key), "X-User-Id: someone-else", "X-User-Email: x@y"])
    assert_allowed(o, alice)
    assert_nothing_for_a_browser(o)
    assert o.resp.header_values("set-auth-token") == [], o
    asked_with(o, "x-api-key", key)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_api_key_of_another_user_is_403_on_this_path(stack, alice, bob, transport):
    o = send(stack, transport, tasks(alice), [api_key(create_key(stack, bob.id))])
    assert_code(o, 403, "USER_MISMATCH")


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_unusable_api_keys_are_401_never_500(stack, alice, transport):
    """Better Auth answers these with 403 INVALID_API_KEY (short key), 401 INVALID_API_KEY (unknown),
    KEY_DISABLED, KEY_EXPIRED (then INVALID_API_KEY: deleted) or INVALID_REFERENCE_ID_FROM_API_KEY (owner
    gone): all 401 SESSION_INVALID."""
    expiring = create_key(stack, alice.id, expiresIn=1)
    keys = {
        "short": "garbage",
        "unknown-64": "Q" * 64,
        "disabled": create_key(stack, alice.id, enabled=False),
        "owner-unknown": create_key(stack, "no-such-user-" + uuid.uuid4().hex),
    }
    SECRETS.update({keys["short"], keys["unknown-64"]})
    time.sleep(1.3)
    keys["expired"] = expiring
    keys["expired-again"] = expiring
    for label, key in keys.items():
        o = send(stack, transport, tasks(alice), [api_key(key)])
        assert_denied(o, 401)
        assert o.error_code() == "SESSION_INVALID", (label, o)
        asked_with(o, "x-api-key", key)
        assert_nothing_for_a_browser(o)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_malformed_api_key_is_401_without_asking(stack, alice, transport):
    key = create_key(stack, alice.id)
    cases = {
        "space-inside": [api_key(key[:20] + " " + key[20:])],
        "over-256-bytes": [api_key(key * 5)],
    }
    if transport != "nginx":
        # nginx hands the first of repeated X-Api-Key lines to $http_x_api_key (see test below).
        cases["sent-twice"] = [api_key(key), api_key(key)]
    for label, lines in cases.items():
        o = send(stack, transport, tasks(alice), lines)
        assert_denied(o, 401, lookups=0)
        assert o.error_code() == "SESSION_INVALID", (label, o)


def test_repeated_api_key_through_nginx_is_never_a_mix(stack, alice, bob):
    """nginx passes only the first X-Api-Key line on ($http_x_api_key): the request is judged on that key
    alone, never on the other one."""
    key_a, key_b = create_key(stack, alice.id), create_key(stack, bob.id)
    o = send(stack, "nginx", tasks(alice), [api_key(key_a), api_key(key_b)])
    if o.status == 401:
        assert_denied(o, 401, lookups=0)
    else:
        assert_allowed(o, alice)
        asked_with(o, "x-api-key", key_a)


def _retry_after(o: Outcome) -> int:
    values = o.resp.header_values("retry-after")
    assert len(values) == 1 and values[0].isdigit(), o
    return int(values[0])


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_api_key_over_its_rate_limit_is_429_with_retry_after(stack, alice, transport):
    window_ms = 3_600_000
    key = create_key(stack, alice.id, rateLimitMax=1, rateLimitTimeWindow=window_ms)
    assert_allowed(send(stack, transport, tasks(alice), [api_key(key)]), alice)
    o = send(stack, transport, tasks(alice), [api_key(key)])
    assert_code(o, 429, "RATE_LIMITED")
    assert len(o.lookups) == 1, o       # asked (the limit is Better Auth's), not cached
    # Better Auth's tryAgainIn (ms, from the last allowed request) rounded up to seconds.
    assert window_ms // 1000 - 60 <= _retry_after(o) <= math.ceil(window_ms / 1000), o
    assert_nothing_for_a_browser(o)
    # Another key of the same user is not affected; the cookie session neither.
    assert_allowed(send(stack, transport, tasks(alice), [api_key(create_key(stack, alice.id))]), alice)
    assert_allowed(send(stack, transport, tasks(alice), [f"Cookie: {alice.cookie}"]), alice)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_api_key_out_of_quota_is_429_then_401(stack, alice, transport):
    """`remaining: 1`: the second use is 429 USAGE_EXCEEDED at Better Auth (no tryAgainIn: the quota does not
    come back), which deletes the key: then 401."""
    key = create_key(stack, alice.id, remaining=1, rateLimitEnabled=False)
    assert_allowed(send(stack, transport, tasks(alice), [api_key(key)]), alice)
    o = send(stack, transport, tasks(alice), [api_key(key)])
    assert_code(o, 429, "RATE_LIMITED")
    o = send(stack, transport, tasks(alice), [api_key(key)])
    assert_code(o, 401, "SESSION_INVALID")


def test_api_key_lookups_are_not_cached(stack, alice):
    """AUTHZ_CACHE_API_KEYS defaults to false: every request with a key asks Better Auth (each one counts
    against the key's limit there), so a limit of 3 allows exactly 3 requests whatever the front."""
    key = create_key(stack, alice.id, rateLimitMax=3, rateLimitTimeWindow=3_600_000)
    outcomes = [send(stack, t, tasks(alice), [api_key(key)]) for t in (*TRANSPORTS, "envoy")]
    assert [len(o.lookups) for o in outcomes] == [1, 1, 1, 1], outcomes
    assert [o.status for o in outcomes[:3]] == [200, 200, 200], outcomes
    assert_code(outcomes[3], 429, "RATE_LIMITED")


# ================================================================ order: the first credential present wins

@pytest.mark.parametrize("transport", TRANSPORTS)
def test_first_credential_present_is_the_only_one_asked(stack, alice, bob, transport):
    key_b = create_key(stack, bob.id)
    # cookie before bearer before api-key (the stack's AUTHZ_CREDENTIALS order).
    o = send(stack, transport, tasks(alice), [f"Cookie: {alice.cookie}", bearer(bob.token), api_key(key_b)])
    assert_allowed(o, alice)
    asked_with(o, "cookie", alice.cookie)
    o = send(stack, transport, tasks(bob), [bearer(bob.token), api_key(create_key(stack, alice.id))])
    assert_allowed(o, bob)
    asked_with(o, "authorization", f"Bearer {bob.token}")
    # The first present decides, also when it is bad: no fallback to a later, valid credential.
    forged = "forged." + "A" * 43 + "="
    o = send(stack, transport, tasks(bob), [bearer(forged), api_key(key_b)])
    assert_code(o, 401, "SESSION_INVALID")
    asked_with(o, "authorization", f"Bearer {forged}")
    # A Cookie header without a Better Auth session cookie is no credential: the bearer is next.
    o = send(stack, transport, tasks(alice), ["Cookie: theme=dark", bearer(alice.token)])
    assert_allowed(o, alice)
    asked_with(o, "authorization", f"Bearer {alice.token}")


# ================================================================ the binary's default: cookie only

@pytest.fixture(scope="module")
def cookie_only(stack: Stack):
    with ExtraProcs(stack) as extra:
        authz = extra.authz("better-authz-cookie-only")
        assert "AUTHZ_CREDENTIALS" not in authz.proc.env, "this instance must run with the binary's default"
        yield authz


@pytest.mark.parametrize("transport", ["direct", "direct-url", "direct-fwd"])
def test_default_credentials_ignore_bearer_and_api_key(stack, alice, cookie_only, transport):
    key = create_key(stack, alice.id)
    port = cookie_only.ports["http"]
    for lines in ([bearer(alice.token)], [api_key(key)], [bearer(alice.token), api_key(key)]):
        o = send(stack, transport, tasks(alice), lines, authz_port=port)
        assert_code(o, 401, "SESSION_REQUIRED")
        assert o.lookups == [], o
    o = send(stack, transport, tasks(alice), [f"Cookie: {alice.cookie}", bearer(alice.token)], authz_port=port)
    assert_allowed(o, alice)
    asked_with(o, "cookie", alice.cookie)


# ================================================================ Better Auth's own rate limiter

def test_better_auth_rate_limit_is_503_not_429(stack):
    """Better Auth's global limiter (here: 2 get-session per 10 s per client address) answers 429 without a
    key's `code`: that is the service being unavailable, 503 AUTH_UNAVAILABLE, whatever the credential (the
    limiter runs before the API-key check), never the client's 429 RATE_LIMITED."""
    with ExtraProcs(stack) as extra:
        port = extra.better_auth("better-auth-limited", {"RATE_LIMIT_GET_SESSION_MAX": "2"})
        authz = extra.authz("better-authz-limited", {"BETTER_AUTH_URL": f"http://127.0.0.1:{port}",
                                                     "AUTHZ_CREDENTIALS": STACK_CREDENTIALS})
        origin = f"http://127.0.0.1:{port}"
        resp = raw_request(port, "POST", "/api/auth/sign-up/email",
                           [("Content-Type", "application/json"), ("Origin", origin)],
                           json.dumps({"name": "Limited", "email": "limited@example.com",
                                       "password": PASSWORD}).encode(), source_ip=next(_source_ips))
        assert resp.status == 200, resp
        user = User(id=resp.json()["user"]["id"], email="limited@example.com", name="Limited",
                    cookie=session_cookie(resp), source_ip="")
        token, key = resp.header("set-auth-token"), create_key(stack, user.id, port=port)
        SECRETS.update({token, key})
        for lines in ([bearer(token)], [api_key(key)]):
            assert_allowed(send(stack, "direct", tasks(user), lines, authz_port=authz.ports["http"]), user)
        for lines in ([bearer(token)], [api_key(key)], [f"Cookie: {user.cookie}"]):
            o = send(stack, "direct", tasks(user), lines, authz_port=authz.ports["http"])
            assert_code(o, 503, "AUTH_UNAVAILABLE")
            assert o.resp.header_values("retry-after") == [], o


# ================================================================ logs

@pytest.fixture(scope="module")
def verbose(stack: Stack):
    """The stack's credentials, logging everything (RUST_LOG=trace)."""
    with ExtraProcs(stack) as extra:
        yield extra.authz("better-authz-trace", {"AUTHZ_CREDENTIALS": STACK_CREDENTIALS, "RUST_LOG": "trace"})


def test_no_credential_in_any_log(stack, alice, bob, cookie_only, verbose):
    """Runs last in this module: every token, signature and key sent in this module (valid or not) is absent
    from the logs of better-authz (every instance), the proxies and the back end; the trace-level instance
    first sees each kind of answer once (allow, refresh, 401 from Better Auth, malformed, 429, 403)."""
    port = verbose.ports["http"]
    limited = create_key(stack, alice.id, rateLimitMax=1, rateLimitTimeWindow=3_600_000)
    fresh = sign_up(stack, "envoy")
    time.sleep(SESSION_UPDATE_AGE + 0.7)
    for lines in ([bearer(alice.token)], [bearer(fresh.token)], [api_key(create_key(stack, alice.id))],
                  [api_key(limited)], [api_key(limited)], [bearer(alice.token.split(".")[0] + ".forged")],
                  [api_key("Z" * 64)], [api_key(create_key(stack, alice.id, enabled=False))],
                  [api_key(limited[:30] + " " + limited[30:])], [bearer(bob.token)], [f"Cookie: {bob.cookie}"]):
        o = send(stack, "direct", tasks(alice), lines, authz_port=port)
        assert o.status in (200, 401, 403, 429), o
    SECRETS.add("Z" * 64)
    assert len(SECRETS) > 20, "the tests above should have sent many credentials"
    logs = {p: p.read_text(errors="replace") for p in sorted(LOG_DIR.rglob("*.log"))
            if p.is_file() and not p.name.startswith("better-auth.") and not p.name.startswith("better-auth-")}
    names = {p.name for p in logs}
    assert {"better-authz.log", "better-authz-cookie-only.log", "better-authz-trace.log", "envoy.log",
            "access.log"} <= names, sorted(names)
    assert len(logs[LOG_DIR / "better-authz-trace.log"].splitlines()) > 50, "trace logging is on"
    leaks = [f"{path.relative_to(LOG_DIR)}:{n}: {line[:200]}"
             for path, text in logs.items() for n, line in enumerate(text.splitlines(), 1)
             if any(secret in line for secret in SECRETS if len(secret) >= 16)]
    assert not leaks, "credentials in logs:\n" + "\n".join(leaks)
