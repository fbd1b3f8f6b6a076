//! The real `better-authz` binary as a process: configuration errors, `--help`, logs.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::*;

const BIN: &str = env!("CARGO_BIN_EXE_better-authz");

/// Every variable the binary reads; the `--help` and config tests check against this list.
const VARIABLES: [&str; 39] = [
    "BETTER_AUTH_URL",
    "BETTER_AUTH_SESSION_PATH",
    "AUTHZ_GRPC_ADDR",
    "AUTHZ_HTTP_ADDR",
    "AUTHZ_ADMIN_ADDR",
    "AUTHZ_COOKIE_PREFIX",
    "AUTHZ_USER_PATH_PATTERN",
    "AUTHZ_PUBLIC_PATHS",
    "AUTHZ_POLICY_FILE",
    "AUTHZ_ROUTE_HEADER",
    "AUTHZ_ALLOW_PREFLIGHT",
    "AUTHZ_UPSTREAM_TIMEOUT_MS",
    "AUTHZ_UPSTREAM_POOL_MAX_IDLE",
    "AUTHZ_MAX_INFLIGHT",
    "AUTHZ_CACHE_TTL_MS",
    "AUTHZ_CACHE_MAX_ENTRIES",
    "AUTHZ_CACHE_MAX_BYTES",
    "AUTHZ_CREDENTIALS",
    "AUTHZ_API_KEY_HEADER",
    "AUTHZ_CACHE_API_KEYS",
    "AUTHZ_HEADER_JWT",
    "AUTHZ_HEADER_MAP",
    "AUTHZ_STRIP_CREDENTIALS",
    "AUTHZ_FORWARD_AUTH",
    "AUTHZ_HEADER_USER_ID",
    "AUTHZ_HEADER_USER_EMAIL",
    "AUTHZ_HEADER_USER_NAME",
    "AUTHZ_LOG_FORMAT",
    "AUTHZ_SHUTDOWN_TIMEOUT_MS",
    "AUTHZ_SHUTDOWN_DELAY_MS",
    "AUTHZ_TLS_CERT",
    "AUTHZ_TLS_KEY",
    "AUTHZ_TLS_CLIENT_CA",
    "BETTER_AUTH_CA_FILE",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_SERVICE_NAME",
    "OTEL_TRACES_SAMPLER",
    "OTEL_TRACES_SAMPLER_ARG",
];

fn command() -> Command {
    let mut cmd = Command::new(BIN);
    for (key, _) in std::env::vars() {
        if key.starts_with("AUTHZ_") || key.starts_with("BETTER_AUTH") || key.starts_with("OTEL_") {
            cmd.env_remove(key);
        }
    }
    cmd
}

#[test]
fn bad_configuration_exits_2_naming_every_bad_variable() {
    let out = command()
        .env("BETTER_AUTH_SESSION_PATH", "no-slash")
        .env("AUTHZ_GRPC_ADDR", "nowhere")
        .env("AUTHZ_HTTP_ADDR", "1.2.3.4:70000")
        .env("AUTHZ_ADMIN_ADDR", "")
        .env("AUTHZ_USER_PATH_PATTERN", "/api/{uid}/")
        .env("AUTHZ_PUBLIC_PATHS", "/ok/,nope")
        .env("AUTHZ_ALLOW_PREFLIGHT", "perhaps")
        .env("AUTHZ_UPSTREAM_TIMEOUT_MS", "0")
        .env("AUTHZ_LOG_FORMAT", "yaml")
        .env("AUTHZ_HEADER_USER_ID", "bad header")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for variable in [
        "BETTER_AUTH_URL",
        "BETTER_AUTH_SESSION_PATH",
        "AUTHZ_GRPC_ADDR",
        "AUTHZ_HTTP_ADDR",
        "AUTHZ_USER_PATH_PATTERN",
        "AUTHZ_PUBLIC_PATHS",
        "AUTHZ_ALLOW_PREFLIGHT",
        "AUTHZ_UPSTREAM_TIMEOUT_MS",
        "AUTHZ_LOG_FORMAT",
        "AUTHZ_HEADER_USER_ID",
    ] {
        let line = stderr
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{variable}:")))
            .unwrap_or_else(|| panic!("{variable} not reported:\n{stderr}"));
        assert!(
            line.len() > variable.len() + 5,
            "says what is wrong: {line}"
        );
    }
    // The empty admin address falls back to its default: not a problem.
    assert!(!stderr.contains("AUTHZ_ADMIN_ADDR"), "{stderr}");
}

#[test]
fn missing_url_alone_exits_2() {
    let out = command().output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("BETTER_AUTH_URL: required"), "{stderr}");
}

#[test]
fn help_documents_every_variable() {
    let out = command().arg("--help").output().unwrap();
    assert!(out.status.success());
    // Help text wraps; compare with whitespace folded.
    let help = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    for variable in VARIABLES {
        assert!(
            help.contains(&format!("[env: {variable}")),
            "{variable} missing from --help:\n{help}"
        );
    }
    // And nothing undocumented: every [env: …] in the help is in the list.
    for part in help.split("[env: ").skip(1) {
        let name: String = part
            .chars()
            .take_while(|c| c.is_ascii_uppercase() || *c == '_')
            .collect();
        assert!(
            VARIABLES.contains(&name.as_str()),
            "unexpected variable {name}"
        );
    }
}

/// Run the binary at trace level with a known token through every path that touches cookies
/// (allow with refresh cookies, deny, Better Auth errors) and assert the token is in no line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_token_or_cookie_value_in_logs_at_trace_level() {
    let refreshed =
        "better-auth.session_token=RefreshedSecret99.c2lnMg%3D%3D; Max-Age=604800; Path=/";
    let stand_in = StandIn::start(Behavior::Valid {
        user_id: "u1".into(),
        expires_in: 3600,
        set_cookies: vec![refreshed.into()],
    })
    .await;
    let child = command()
        .env("BETTER_AUTH_URL", stand_in.url())
        .env("AUTHZ_GRPC_ADDR", "127.0.0.1:0")
        .env("AUTHZ_HTTP_ADDR", "127.0.0.1:0")
        .env("AUTHZ_ADMIN_ADDR", "127.0.0.1:0")
        .env("AUTHZ_USER_PATH_PATTERN", "/api/{user_id}/")
        .env("AUTHZ_UPSTREAM_TIMEOUT_MS", "300")
        .env("RUST_LOG", "trace")
        .stderr(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = KillOnDrop(Some(child));
    let child = child.0.as_mut().unwrap();

    // Read the log in a thread; find the listening addresses in it.
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut log = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    let (grpc, http) = loop {
        let line = rx
            .recv_timeout(deadline - Instant::now())
            .expect("listening line");
        log.push(line.clone());
        if line.contains("listening") {
            let field = |name: &str| {
                let start = line.find(&format!("{name}=")).unwrap() + name.len() + 1;
                line[start..].split_whitespace().next().unwrap().to_string()
            };
            break (field("grpc"), field("http"));
        }
    };

    let session = session_cookie();
    let cookie_header = format!("{session}; better-auth.session_data=CacheSecret77; other=x");
    let mut client = envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient::connect(
        format!("http://{grpc}"),
    )
    .await
    .unwrap();
    let headers = [("cookie", cookie_header.as_str())];
    for path in ["/api/u1/tasks", "/api/u2/tasks"] {
        client
            .check(envoy_check("GET", path, &headers))
            .await
            .unwrap();
    }
    let http_client = reqwest::Client::new();
    for behavior in [
        Behavior::Garbage,
        Behavior::Status(500),
        Behavior::Null {
            set_cookies: vec![refreshed.into()],
        },
    ] {
        stand_in.set(behavior);
        client
            .check(envoy_check("GET", "/api/u1/tasks", &headers))
            .await
            .unwrap();
        http_client
            .get(format!("http://{http}/auth"))
            .header("x-original-uri", "/api/u1/tasks")
            .header("cookie", &cookie_header)
            .send()
            .await
            .unwrap();
    }
    assert!(stand_in.calls() >= 8);

    // Stop the process (SIGTERM) and drain the rest of its log. The clients go first: this
    // thread blocks on the child below and could not answer the server's GOAWAY.
    drop(client);
    drop(http_client);
    let started = Instant::now();
    Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "exit 0 after SIGTERM: {status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "idle connections do not hold shutdown"
    );
    reader.join().unwrap();
    log.extend(rx.try_iter());

    assert!(
        log.len() > 20,
        "trace logging produced lines: {}",
        log.len()
    );
    assert!(
        log.iter().any(|l| l.contains("SESSION_VALID")),
        "the decision line is logged"
    );
    for secret in [
        "Zx9TokenValue42",
        "c2lnbmF0dXJlLXZhbHVl",
        "RefreshedSecret99",
        "CacheSecret77",
    ] {
        let leaks: Vec<&String> = log.iter().filter(|l| l.contains(secret)).collect();
        assert!(
            leaks.is_empty(),
            "{secret} leaked into {} log lines, e.g. {:?}",
            leaks.len(),
            leaks.first()
        );
    }
}

/// Kills the child if the test fails before it stops it, so no process outlives the test.
struct KillOnDrop(Option<std::process::Child>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0
            && child.try_wait().ok().flatten().is_none()
        {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

// ---- The policy file

const GOOD_POLICY: &str = "\
app_origin: https://app.example
login_url: https://id.example/sign-in
routes:
  - name: public
    match:
      path: /public/
    allow: anonymous
  - name: org
    match:
      path: /orgs/{org_id}/
      methods: [GET]
    require:
      org_roles: [owner]
      max_age: 15m
    on_deny: login
  - name: admin
    match:
      path: /admin/
    require:
      roles: [admin]
";

/// Two routes, three problems, on lines 4 and 9.
const BAD_POLICY: &str = "\
routes:
  - name: ok
    match: {path: /ok/}
  - name: Bad_Name
    match:
      path: /x/
    require:
      max_age: soon
  - name: ok
    match: {path: /ok2/}
";

#[test]
fn a_bad_policy_file_at_start_up_exits_2_naming_each_problem_and_its_line() {
    let file = PolicyFile::new(BAD_POLICY);
    let out = command()
        .env("BETTER_AUTH_URL", "http://127.0.0.1:3000")
        .env("AUTHZ_POLICY_FILE", &file.path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("AUTHZ_POLICY_FILE"), "{stderr}");
    for problem in [
        "line 4: route \"Bad_Name\": the name must be [a-z0-9-]+",
        "line 4: route \"Bad_Name\": require.max_age: \"soon\" is not a duration",
        "line 9: route \"ok\": the name is already used by an earlier route",
    ] {
        assert!(stderr.contains(problem), "{problem} not in:\n{stderr}");
    }

    // An unknown key: its line and column.
    file.write("routes:\n  - name: a\n    match: {path: /a/}\n    requir: {}\n");
    let out = command()
        .env("BETTER_AUTH_URL", "http://127.0.0.1:3000")
        .env("AUTHZ_POLICY_FILE", &file.path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("requir") && stderr.contains("line 4"),
        "{stderr}"
    );

    // A file that is not there.
    let out = command()
        .env("BETTER_AUTH_URL", "http://127.0.0.1:3000")
        .env("AUTHZ_POLICY_FILE", "/nonexistent/policy.yaml")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot open it"), "{stderr}");
}

#[test]
fn a_policy_file_and_the_shorthand_variables_conflict() {
    let file = PolicyFile::new(GOOD_POLICY);
    for (variable, value) in [
        ("AUTHZ_PUBLIC_PATHS", "/api/auth/"),
        ("AUTHZ_USER_PATH_PATTERN", "/api/{user_id}/"),
    ] {
        let out = command()
            .env("BETTER_AUTH_URL", "http://127.0.0.1:3000")
            .env("AUTHZ_POLICY_FILE", &file.path)
            .env(variable, value)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{variable}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let line = stderr
            .lines()
            .find(|l| l.trim_start().starts_with("AUTHZ_POLICY_FILE:"))
            .unwrap_or_else(|| panic!("AUTHZ_POLICY_FILE not reported:\n{stderr}"));
        assert!(
            line.contains("AUTHZ_PUBLIC_PATHS") && line.contains("AUTHZ_USER_PATH_PATTERN"),
            "{line}"
        );
    }
}

#[test]
fn policy_check_lists_the_routes_or_every_problem() {
    let file = PolicyFile::new(GOOD_POLICY);
    let out = command()
        .args(["policy", "check"])
        .arg(&file.path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&out.stdout);
    for expected in [
        "3 routes, tried in order",
        "line 4    public           /public/  -> anonymous",
        "line 8    org              /orgs/{org_id}/ methods=GET  -> session, org role in [owner], \
         signed in within 900s, on_deny=login",
        "line 16   admin            /admin/  -> session, role in [admin]",
        "(no match)  -> session",
        "sign-in: https://id.example/sign-in (callbacks on https://app.example)",
    ] {
        assert!(stdout.contains(expected), "{expected:?} not in:\n{stdout}");
    }
    // Needs no Better Auth and no other variable.
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    file.write(BAD_POLICY);
    let out = command()
        .args(["policy", "check"])
        .arg(&file.path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("invalid policy"), "{stderr}");
    let problems: Vec<&str> = stderr
        .lines()
        .filter(|l| l.trim_start().starts_with("line "))
        .collect();
    assert_eq!(problems.len(), 3, "{stderr}");
    assert!(out.stdout.is_empty());
}

#[test]
fn policy_explain_names_the_route_and_what_it_requires() {
    let file = PolicyFile::new(GOOD_POLICY);
    let explain = |args: &[&str]| {
        let out = command()
            .args(["policy", "explain"])
            .arg(&file.path)
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{args:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    assert_eq!(
        explain(&["GET", "/orgs/o%201/tasks?x=1"]),
        "route: org\nrequires: a valid session\n  membership of organization id \"o 1\" with a \
         role in [owner]\n  a sign-in within the last 900s\n  browsers without a session are \
         sent to the sign-in page\n"
    );
    assert_eq!(
        explain(&["POST", "/orgs/o1"]),
        "route: org\ndenied: 403 NO_ROUTE (the route of this path does not admit this method or \
         host)\n"
    );
    assert_eq!(
        explain(&["GET", "/orgs"]),
        "route: org\ndenied: 403 NO_ROUTE (the path lacks a segment its route names)\n"
    );
    assert_eq!(
        explain(&["GET", "/public/x"]),
        "route: public\nallowed without a session (identity headers removed)\n"
    );
    assert_eq!(
        explain(&["GET", "/"]),
        "route: _default\nrequires: a valid session\n"
    );
    // A route the proxy names adds its requirements; an unknown one denies.
    assert_eq!(
        explain(&[
            "GET",
            "/public/x",
            "--route",
            "admin",
            "--host",
            "app.example"
        ]),
        "route: public\nrequires: a valid session\n  a role in [admin] (user.role)\n"
    );
    assert!(explain(&["GET", "/x", "--route", "nope"]).contains("denied: 403 NO_ROUTE"));
    assert!(explain(&["GET", "/a%2Fb"]).starts_with("denied: 400 BAD_REQUEST"));

    // A bad file: exit 2, as `check`.
    file.write(BAD_POLICY);
    let out = command()
        .args(["policy", "explain"])
        .arg(&file.path)
        .args(["GET", "/"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}
