// A real Better Auth server for the better-authz demo and end-to-end tests.
//
// Node 20, `better-auth` from the npm registry (pinned in package.json), the in-memory adapter
// (no database to install; every restart forgets all users and sessions), e-mail + password sign-up.
// Plugins, as a deployment that uses better-authz's AUTHZ_CREDENTIALS would have them:
//   bearer()        get-session accepts `Authorization: Bearer <token>`; sign-in/sign-up answer it
//                   in `set-auth-token`
//   jwt()           get-session answers a `set-auth-jwt` header (for back ends, never for browsers)
//   admin()         user.role / user.banned
//   organization()  organizations and memberships
//   apiKey()        @better-auth/api-key (pinned; installed with legacy-peer-deps, see .npmrc):
//                   get-session with `x-api-key: <key>` answers the key owner's session
//                   (enableSessionForAPIKeys); each such call counts against the key's own limit
// Everything is configured through environment variables so the demo and the tests can run
// several instances on different ports:
//
//   PORT                 listen port                       (default 3000)
//   HOST                 listen address                    (default 127.0.0.1)
//   BETTER_AUTH_SECRET   cookie-signing secret             (default: a dev secret, with a warning)
//   BETTER_AUTH_URL      public base URL                   (default http://127.0.0.1:$PORT)
//   TRUSTED_ORIGINS      comma list of trusted origins     (default: the demo's Envoy and nginx origins)
//   SESSION_EXPIRES_IN   session lifetime, seconds         (default Better Auth's: 7 days)
//   SESSION_UPDATE_AGE   refresh interval, seconds         (default Better Auth's: 1 day); 1-2 s makes
//                        get-session answer with a refreshed Set-Cookie, which the tests rely on
//   RATE_LIMIT_ENABLED   "true"/"false"                    (default true, as Better Auth does in production)
//   RATE_LIMIT_GET_SESSION_MAX  get-session calls allowed per 10 s and client address (default: unset,
//                        get-session is exempt from the limiter; tests set it to see Better Auth's own 429)
//   JWT_EXPIRATION_TIME  lifetime of the jwt plugin's token, e.g. "3s" (default the plugin's: 15m);
//                        tests shorten it to see better-authz's cache stop serving an expired JWT
//   BETTER_AUTH_DEBUG_RECORD  "1" records the headers of every request in memory and serves them at
//                        GET/DELETE /__debug/requests, and adds the test-only endpoints below (the
//                        tests and the demo, which uses them as its admin console; off by default; never
//                        behind a proxy route: the direct port only)
//
// Test-only endpoints (BETTER_AUTH_DEBUG_RECORD=1; JSON in, JSON out; server-side calls, no session):
//   POST /__debug/api-key       {userId, expiresIn?, rateLimitEnabled?, rateLimitMax?, rateLimitTimeWindow?,
//                               remaining?, prefix?, name?, enabled?}  -> the created key, `key` included.
//                               auth.api.createApiKey (expiresIn in seconds, rateLimitTimeWindow in ms);
//                               enabled: false disables it afterwards (auth.api.updateApiKey).
//   POST /__debug/role          {userId, role}  (role: "admin" or ["admin", "user"]) -> the user
//   POST /__debug/verify-email  {userId, verified?}  -> the user, its email marked verified (or not, with
//                               verified: false), as the link of a verification mail would
//   POST /__debug/organization  {userId, name?, slug?, members?: [{userId, role}]}  -> the organization
//                               (userId is its owner; auth.api.createOrganization + auth.api.addMember)

import http from "node:http";
import { betterAuth } from "better-auth";
import { memoryAdapter } from "better-auth/adapters/memory";
import { toNodeHandler } from "better-auth/node";
import { admin, bearer, jwt, organization } from "better-auth/plugins";
import { apiKey } from "@better-auth/api-key";

const DEV_SECRET = "better-authz-demo-dev-secret-change-me-0123456789abcdef";

function intFromEnv(name, fallback) {
  const raw = process.env[name];
  if (raw === undefined || raw === "") return fallback;
  const value = Number(raw);
  if (!Number.isInteger(value) || value < 0) {
    console.error(`invalid ${name}=${JSON.stringify(raw)}: expected a non-negative integer`);
    process.exit(2);
  }
  return value;
}

function boolFromEnv(name, fallback) {
  const raw = (process.env[name] ?? "").trim().toLowerCase();
  if (raw === "") return fallback;
  if (["1", "true", "yes", "on"].includes(raw)) return true;
  if (["0", "false", "no", "off"].includes(raw)) return false;
  console.error(`invalid ${name}=${JSON.stringify(raw)}: expected true or false`);
  process.exit(2);
}

const port = intFromEnv("PORT", 3000);
const host = process.env.HOST || "127.0.0.1";
const baseURL = process.env.BETTER_AUTH_URL || `http://127.0.0.1:${port}`;

let secret = process.env.BETTER_AUTH_SECRET;
if (!secret) {
  secret = DEV_SECRET;
  console.warn(
    "WARNING: BETTER_AUTH_SECRET is not set; using a fixed development secret. " +
      "Anyone who knows it can forge session cookies: set BETTER_AUTH_SECRET outside the demo.",
  );
}

// The browser-facing origins: the demo's Envoy (8080) and nginx (8081) front proxies. Better Auth
// rejects cookie-carrying POSTs (sign-in, sign-out, ...) whose Origin is not trusted; its own base
// URL's origin is always trusted.
const trustedOrigins = (
  process.env.TRUSTED_ORIGINS ||
  "http://127.0.0.1:8080,http://localhost:8080,http://127.0.0.1:8081,http://localhost:8081"
)
  .split(",")
  .map((origin) => origin.trim())
  .filter(Boolean);

const session = {};
const expiresIn = intFromEnv("SESSION_EXPIRES_IN", undefined);
const updateAge = intFromEnv("SESSION_UPDATE_AGE", undefined);
if (expiresIn !== undefined) session.expiresIn = expiresIn;
if (updateAge !== undefined) session.updateAge = updateAge;

// Test-only features (request recorder, /__debug/* endpoints, API keys that expire within seconds).
const debugRecord = boolFromEnv("BETTER_AUTH_DEBUG_RECORD", false);
const getSessionMax = intFromEnv("RATE_LIMIT_GET_SESSION_MAX", undefined);
const jwtExpirationTime = (process.env.JWT_EXPIRATION_TIME ?? "").trim();
if (jwtExpirationTime && !/^\d+\s*(s|sec|secs|second|seconds|m|min|mins|minute|minutes|h|hr|hrs|hour|hours|d|day|days)$/i.test(jwtExpirationTime)) {
  console.error(`invalid JWT_EXPIRATION_TIME=${JSON.stringify(jwtExpirationTime)}: expected e.g. 3s, 15m or 1h`);
  process.exit(2);
}

export const auth = betterAuth({
  baseURL,
  secret,
  trustedOrigins,
  // Every table a plugin uses must exist in the memory adapter's db object: jwks (jwt), apikey,
  // organization / member / invitation (organization); admin only adds fields to user and session.
  database: memoryAdapter({
    user: [], session: [], account: [], verification: [],
    jwks: [], apikey: [], organization: [], member: [], invitation: [],
  }),
  emailAndPassword: { enabled: true },
  session,
  telemetry: { enabled: false },
  plugins: [
    bearer(),
    // set-auth-jwt on every get-session with a cookie or bearer session (not with an API key):
    // better-authz hands it to the back end with AUTHZ_HEADER_JWT.
    jwt(jwtExpirationTime ? { jwt: { expirationTime: jwtExpirationTime } } : undefined),
    admin(),
    organization(),
    apiKey({
      enableSessionForAPIKeys: true,
      // The per-key limiter. The plugin's default, 10 requests per day, counts every get-session
      // better-authz makes for a request with the key: the 11th request of the day through the proxy
      // would be refused. 1000 per 10 s per key is plenty for the demo and the tests; tests that need
      // the limit create keys with their own (rateLimitMax / rateLimitTimeWindow).
      rateLimit: { enabled: true, timeWindow: 10_000, maxRequests: 1000 },
      // Tests create keys that expire within seconds (the plugin's minimum is 1 day).
      ...(debugRecord ? { keyExpiration: { minExpiresIn: 0 } } : {}),
    }),
  ],
  rateLimit: {
    // Better Auth only enables its limiter in production by default; the demo turns it on so it
    // behaves like a deployment (tests may switch it off with RATE_LIMIT_ENABLED=false).
    enabled: boolFromEnv("RATE_LIMIT_ENABLED", true),
    customRules: {
      // better-authz calls /get-session once for every request that reaches a protected route.
      // The limiter keys on client IP + path (100 requests per 10 s by default); behind the
      // authz service many users can share one bucket (and a busy user easily passes 100 API
      // calls in 10 s), so the limiter would answer 429 and turn ordinary traffic into 503s
      // from the authz service. Validating a session is a cheap read that does not need
      // brute-force protection (the token is a signed random value), so it is exempt. Sign-in,
      // sign-up and the other endpoints keep Better Auth's limits.
      "/get-session": getSessionMax === undefined ? false : { window: 10, max: getSessionMax },
    },
  },
});

const betterAuthHandler = toNodeHandler(auth);

// Test-only request recorder: lets the end-to-end tests prove which headers reached Better Auth
// (for example that a client-invented x-user-id was stripped by the proxy on /api/auth/ routes).
const recorded = [];

function sendJson(res, status, value) {
  const body = JSON.stringify(value);
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(body) });
  res.end(body);
}

async function readJson(req) {
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > 65536) throw new Error("body too large");
    chunks.push(chunk);
  }
  return chunks.length ? JSON.parse(Buffer.concat(chunks).toString("utf8")) : {};
}

function pick(obj, names) {
  return Object.fromEntries(names.filter((n) => obj[n] !== undefined).map((n) => [n, obj[n]]));
}

// The test-only endpoints (see the top of this file): server-side auth.api calls, which accept a
// userId without a session.
const debugEndpoints = {
  "/__debug/api-key": async (body) => {
    const created = await auth.api.createApiKey({
      body: pick(body, ["userId", "expiresIn", "rateLimitEnabled", "rateLimitMax", "rateLimitTimeWindow",
                        "remaining", "prefix", "name"]),
    });
    if (body.enabled === false) {
      await auth.api.updateApiKey({ body: { keyId: created.id, userId: body.userId, enabled: false } });
      created.enabled = false;
    }
    return created;
  },
  "/__debug/role": async (body) => {
    const role = Array.isArray(body.role) ? body.role.join(",") : String(body.role);
    const ctx = await auth.$context;
    return ctx.internalAdapter.updateUser(body.userId, { role });
  },
  "/__debug/verify-email": async (body) => {
    const ctx = await auth.$context;
    return ctx.internalAdapter.updateUser(body.userId, { emailVerified: body.verified !== false });
  },
  "/__debug/organization": async (body) => {
    const tag = Math.random().toString(36).slice(2, 10);
    const org = await auth.api.createOrganization({
      body: { name: body.name || `Org ${tag}`, slug: body.slug || `org-${tag}`, userId: body.userId },
    });
    for (const member of body.members || []) {
      await auth.api.addMember({ body: { organizationId: org.id, userId: member.userId, role: member.role } });
    }
    return org;
  },
};

async function serveDebug(req, res, endpoint) {
  if (req.method !== "POST") return sendJson(res, 405, { error: "method not allowed" });
  try {
    const body = await readJson(req);
    if (typeof body.userId !== "string" || !body.userId) return sendJson(res, 400, { error: "userId required" });
    return sendJson(res, 200, await endpoint(body));
  } catch (err) {
    // APIError from Better Auth: its status and body; anything else: 500 with the message.
    const status = Number.isInteger(err?.statusCode) ? err.statusCode : 500;
    return sendJson(res, status, { error: String(err?.message || err), body: err?.body ?? null });
  }
}

const server = http.createServer((req, res) => {
  if (debugRecord) {
    if (req.url === "/__debug/requests") {
      if (req.method === "GET") return sendJson(res, 200, recorded);
      if (req.method === "DELETE") {
        recorded.length = 0;
        return sendJson(res, 200, { cleared: true });
      }
      return sendJson(res, 405, { error: "method not allowed" });
    }
    if (Object.hasOwn(debugEndpoints, req.url)) return serveDebug(req, res, debugEndpoints[req.url]);
    const headers = [];
    for (let i = 0; i < req.rawHeaders.length; i += 2) headers.push([req.rawHeaders[i], req.rawHeaders[i + 1]]);
    recorded.push({ method: req.method, path: req.url, headers });
  }
  betterAuthHandler(req, res);
});

server.on("error", (err) => {
  console.error(`better-auth: cannot listen on ${host}:${port}: ${err.message}`);
  process.exit(1);
});

server.listen(port, host, () => {
  console.log(`better-auth listening on http://${host}:${port}`);
});

function shutdown(signal) {
  console.log(`better-auth: ${signal} received, shutting down`);
  server.close(() => process.exit(0));
  // Keep-alive connections would hold close() open; do not wait for them.
  setTimeout(() => process.exit(0), 1000).unref();
}
process.on("SIGINT", () => shutdown("SIGINT"));
process.on("SIGTERM", () => shutdown("SIGTERM"));
