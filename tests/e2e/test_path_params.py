"""Servlet path parameters: `;…` in any segment, through every front.

Tomcat, Jetty and Spring strip `;params` from every path segment before routing, so a back end of theirs routes
`/api;x=1/BOB/tasks` and `/;x/api/BOB/tasks` to `/api/BOB/tasks`, while Envoy, nginx, Starlette and Express
route the path with the parameters kept. better-authz therefore judges two readings of the path:

- params kept (the literal path) and params stripped from every segment (the servlet reading);
- public only when BOTH readings are under a public prefix;
- the user-id rule applies when EITHER reading matches AUTHZ_USER_PATH_PATTERN, and every matching reading's
  `{user_id}` segment must be the caller's id, else 403 USER_MISMATCH;
- a `;` that arrives percent-encoded (`%3B`, `%3b`) in a segment is ambiguous: 400 BAD_REQUEST.

Before this change `/api;x=1/BOB/tasks` with Alice's session was allowed (the literal reading does not match
`/api/{user_id}/`), and a servlet back end served Bob's tasks to Alice.

Every trick runs through real Envoy, real nginx, and better-authz's /auth asked with each forwarded-URI header
(X-Original-URI, X-Original-URL, X-Forwarded-Uri), with Alice's session and without a session. The todo back
end is not a servlet container: it routes the literal path, so a spelling allowed for Alice reaches it as a path
it does not route (404), never as Bob's.
"""

from __future__ import annotations

import re

import pytest

from adversary import FRONTS, Outcome, assert_allowed, assert_denied, check, cookie_line, fill, is_direct, send
from conftest import Stack, User

# (id, template, expected with Alice's session: {"envoy", "nginx", "direct"} (direct: all three /auth headers)).
# Expected: a status = denied, the back end saw nothing; "be<N>" = reached the back end with Alice's identity,
# which answered N; direct 200 = /auth allowed with Alice's identity.
PARAM_TRICKS = [
    # Bob's path for a servlet back end: the servlet reading matches the pattern with Bob's id.
    ("param-on-pattern-literal-other", "/api;x=1/{B}/tasks", {"envoy": 403, "nginx": 403, "direct": 403}),
    ("empty-param-on-pattern-literal-other", "/api;/{B}/tasks", {"envoy": 403, "nginx": 403, "direct": 403}),
    ("param-only-segment-first-other", "/;x/api/{B}/tasks", {"envoy": 403, "nginx": 403, "direct": 403}),
    ("param-only-segment-in-pattern-other", "/api/;x/{B}/tasks", {"envoy": 403, "nginx": 403, "direct": 403}),
    ("param-on-other-id", "/api/{B};x/tasks", {"envoy": 403, "nginx": 403, "direct": 403}),
    ("params-everywhere-other", "/api;a=1/{B};b/tasks;c", {"envoy": 403, "nginx": 403, "direct": 403}),
    ("upper-case-literal-param-other", "/API;x/{B}/tasks", {"envoy": 403, "nginx": 403, "direct": 403}),
    ("param-on-pattern-literal-other-with-query", "/api;x/{B}/tasks?user={A}",
     {"envoy": 403, "nginx": 403, "direct": 403}),
    # `;` percent-encoded: ambiguous (is it a parameter or part of the segment?), refused before any lookup.
    ("encoded-semicolon-first-segment", "/%3Bx/api/{B}/tasks", {"envoy": 400, "nginx": 400, "direct": 400}),
    ("encoded-semicolon-lower-on-literal", "/api%3bx/{B}/tasks", {"envoy": 400, "nginx": 400, "direct": 400}),
    ("encoded-semicolon-on-own-id", "/api/{A}%3Bx/tasks", {"envoy": 400, "nginx": 400, "direct": 400}),
    ("encoded-semicolon-on-last-segment", "/api/{A}/tasks%3Bx", {"envoy": 400, "nginx": 400, "direct": 400}),
    # Envoy's normalize_path removes `%3B/..` before asking; nginx's guard refuses `/../`; better-authz refuses
    # the `%3B` segment or resolves it away to Bob's path.
    ("encoded-semicolon-then-dot-dot-to-other", "/api/%3B/../{B}/tasks",
     {"envoy": 403, "nginx": 400, "direct": (400, 403)}),
    # Alice's own id with a parameter: the literal reading names `{A};x`, which is not Alice.
    ("param-on-own-id", "/api/{A};x/tasks", {"envoy": 403, "nginx": 403, "direct": 403}),
    ("param-only-segment-in-pattern-own", "/api/;x/{A}/tasks", {"envoy": 403, "nginx": 403, "direct": 403}),
    # Alice's own path in the servlet reading: allowed; the (non-servlet) todo back end finds no route.
    ("param-on-later-segment-own", "/api/{A}/tasks;jsessionid=1",
     {"envoy": "be404", "nginx": "be404", "direct": 200}),
    ("param-on-pattern-literal-own", "/api;x/{A}/tasks", {"envoy": "be404", "nginx": "be404", "direct": 200}),
    ("param-only-segment-first-own", "/;x/api/{A}/tasks", {"envoy": "be404", "nginx": "be404", "direct": 200}),
]

# Spellings of the public prefix /api/auth/ with parameters, without a session. Public only when both readings
# are: `/api;x/auth/ok` is `/api/auth/ok` to a servlet but not to the literal reading, so it needs a session.
# "ba": the proxy routed it to Better Auth itself (not protected), whatever Better Auth answered.
PUBLIC_PARAM_TRICKS = [
    ("param-on-api-before-auth", "/api;x/auth/ok", {"envoy": 401, "nginx": 401, "direct": 401}),
    ("param-on-auth", "/api/auth;x/ok", {"envoy": 401, "nginx": 401, "direct": 401}),
    ("param-only-segment-before-auth", "/;x/api/auth/ok", {"envoy": 401, "nginx": 401, "direct": 401}),
    ("param-on-both-literals", "/api;a/auth;b/ok", {"envoy": 401, "nginx": 401, "direct": 401}),
    ("encoded-semicolon-on-auth", "/api/auth%3Bx/ok", {"envoy": 400, "nginx": 400, "direct": 400}),
    # Both readings public: still public (Better Auth's own routes may carry parameters).
    ("param-inside-public-prefix", "/api/auth/ok;x", {"envoy": "ba", "nginx": "ba", "direct": 200}),
]


def servlet_reading(raw_path: str) -> str:
    """What Tomcat/Jetty/Spring route: `;params` stripped from every segment, empty segments dropped."""
    path = raw_path.split("?", 1)[0]
    return "/" + "/".join(s for s in (seg.split(";", 1)[0] for seg in path.split("/")) if s)


def expected(table_exp: dict, front: str):
    return table_exp["direct" if is_direct(front) else front]


def assert_bob_untouched(o: Outcome, bob: User) -> None:
    """Whatever the back end received names nobody but Alice, in either reading: no request to Bob's path."""
    for recorded in o.backend:
        for reading in (recorded["path"], servlet_reading(recorded["path"])):
            assert not re.search(rf"/{re.escape(bob.id)}(/|;|$)", reading, re.I), o


@pytest.fixture(scope="module")
def alice(stack: Stack) -> User:
    return stack.sign_up("envoy", name="Alice Params")


@pytest.fixture(scope="module")
def bob(stack: Stack) -> User:
    return stack.sign_up("nginx", name="Bob Params")


@pytest.mark.parametrize("front", FRONTS)
@pytest.mark.parametrize("case", PARAM_TRICKS, ids=[c[0] for c in PARAM_TRICKS])
def test_path_params_with_session(stack, front, case, alice, bob):
    """Alice's session: Bob's path in either reading is 403 (the back end never sees it), an encoded `;` is
    400, Alice's own path in the servlet reading is allowed with exactly her identity."""
    _, template, table_exp = case
    o = send(stack, front, fill(template, alice, bob), [cookie_line(alice.cookie)])
    check(o, expected(table_exp, front), alice)
    if o.status == 403:
        assert o.error_code() in (None, "USER_MISMATCH"), o
    if o.status == 400 and o.error_code() is not None:
        assert o.error_code() == "BAD_REQUEST", o
    assert_bob_untouched(o, bob)


@pytest.mark.parametrize("front", FRONTS)
@pytest.mark.parametrize("case", PARAM_TRICKS, ids=[c[0] for c in PARAM_TRICKS])
def test_path_params_without_session(stack, front, case, alice, bob):
    """The same paths without a session: 401 SESSION_REQUIRED (or 400 where the path is ambiguous), never the
    back end, never a Better Auth call."""
    _, template, table_exp = case
    exp = expected(table_exp, front)
    o = send(stack, front, fill(template, alice, bob))
    statuses = (400,) if exp == 400 else (400, 401) if isinstance(exp, tuple) else (401,)
    assert_denied(o, statuses, {"SESSION_REQUIRED", "BAD_REQUEST"}, lookups=0)


@pytest.mark.parametrize("front", FRONTS)
@pytest.mark.parametrize("case", PUBLIC_PARAM_TRICKS, ids=[c[0] for c in PUBLIC_PARAM_TRICKS])
def test_public_prefix_params_need_both_readings(stack, front, case, alice, bob):
    """Anonymous requests on parameter spellings of /api/auth/: public only when the literal and the servlet
    reading both are; otherwise 401 (or 400), and the back end never sees them."""
    _, template, table_exp = case
    exp = expected(table_exp, front)
    o = send(stack, front, fill(template, alice, bob), [b"X-User-Id: " + bob.id.encode()])
    if exp == 200:
        assert_allowed(o, None)                      # PUBLIC_PATH: no identity in the answer
        assert o.lookups == [], o
    elif exp == "ba":
        assert not o.resp.from_backend and o.backend == [] and o.lookups == [], o
    else:
        assert_denied(o, exp, {"SESSION_REQUIRED", "BAD_REQUEST"}, lookups=0)
