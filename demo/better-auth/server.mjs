// A real Better Auth server for the better-authz demo and end-to-end tests.
//
// Node 20, `better-auth` from the npm registry (pinned in package.json), the in-memory adapter
// (no database to install; every restart forgets all users and sessions), e-mail + password sign-up.
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
//   BETTER_AUTH_DEBUG_RECORD  "1" records the headers of every request in memory and serves them at
//                        GET/DELETE /__debug/requests (tests only; off by default; never behind a proxy route)

import http from "node:http";
import { betterAuth } from "better-auth";
import { memoryAdapter } from "better-auth/adapters/memory";
import { toNodeHandler } from "better-auth/node";

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

export const auth = betterAuth({
  baseURL,
  secret,
  trustedOrigins,
  database: memoryAdapter({ user: [], session: [], account: [], verification: [] }),
  emailAndPassword: { enabled: true },
  session,
  telemetry: { enabled: false },
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
      "/get-session": false,
    },
  },
});

const betterAuthHandler = toNodeHandler(auth);

// Test-only request recorder: lets the end-to-end tests prove which headers reached Better Auth
// (for example that a client-invented x-user-id was stripped by the proxy on /api/auth/ routes).
const debugRecord = boolFromEnv("BETTER_AUTH_DEBUG_RECORD", false);
const recorded = [];

function sendJson(res, status, value) {
  const body = JSON.stringify(value);
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(body) });
  res.end(body);
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
