//! Traces and logs of the real binary: a test OTLP receiver on loopback (gRPC and HTTP) gets the
//! `authz.check` span parented on the proxy's `traceparent`, with the Better Auth call as its
//! child, and the **stand-in Better Auth** receives a `traceparent` of the same trace.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use prost::Message;
use support::*;

const BIN: &str = env!("CARGO_BIN_EXE_better-authz");
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_ID: &str = "00f067aa0ba902b7";

/// One exported span, flattened.
#[derive(Clone, Debug)]
struct Exported {
    name: String,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    attributes: Vec<(String, String)>,
    service_name: String,
}

impl Exported {
    fn attr(&self, key: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

type Received = Arc<Mutex<Vec<Exported>>>;

fn collect(request: ExportTraceServiceRequest, into: &Received) {
    let mut out = into.lock().unwrap();
    for rs in request.resource_spans {
        let service_name = rs
            .resource
            .iter()
            .flat_map(|r| &r.attributes)
            .find(|kv| kv.key == "service.name")
            .and_then(|kv| kv.value.as_ref())
            .map(value_text)
            .unwrap_or_default();
        for ss in rs.scope_spans {
            for span in ss.spans {
                out.push(Exported {
                    name: span.name,
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_span_id: hex(&span.parent_span_id),
                    attributes: span
                        .attributes
                        .iter()
                        .map(|kv| {
                            (
                                kv.key.clone(),
                                kv.value.as_ref().map(value_text).unwrap_or_default(),
                            )
                        })
                        .collect(),
                    service_name: service_name.clone(),
                });
            }
        }
    }
}

fn value_text(v: &opentelemetry_proto::tonic::common::v1::AnyValue) -> String {
    match &v.value {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        other => format!("{other:?}"),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

struct GrpcReceiver(Received);

#[tonic::async_trait]
impl TraceService for GrpcReceiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        collect(request.into_inner(), &self.0);
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

/// A loopback OTLP receiver; returns its base endpoint.
async fn start_receiver(protocol: &str, received: Received) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    match protocol {
        "grpc" => {
            let incoming = tonic::transport::server::TcpIncoming::from(listener);
            tokio::spawn(
                tonic::transport::Server::builder()
                    .add_service(TraceServiceServer::new(GrpcReceiver(received)))
                    .serve_with_incoming(incoming),
            );
        }
        _ => {
            let app = axum::Router::new().route(
                "/v1/traces",
                axum::routing::post(move |body: Bytes| {
                    let received = received.clone();
                    async move {
                        let request =
                            ExportTraceServiceRequest::decode(body).expect("OTLP protobuf");
                        collect(request, &received);
                        (
                            [("content-type", "application/x-protobuf")],
                            ExportTraceServiceResponse::default().encode_to_vec(),
                        )
                    }
                }),
            );
            tokio::spawn(async move { axum::serve(listener, app).await });
        }
    }
    format!("http://{addr}")
}

struct Running {
    child: Child,
    grpc: String,
    log: Arc<Mutex<Vec<String>>>,
}

fn spawn(envs: &[(&str, String)]) -> Running {
    let mut cmd = Command::new(BIN);
    for (key, _) in std::env::vars() {
        if key.starts_with("AUTHZ_") || key.starts_with("BETTER_AUTH") || key.starts_with("OTEL_") {
            cmd.env_remove(key);
        }
    }
    cmd.env("AUTHZ_GRPC_ADDR", "127.0.0.1:0")
        .env("AUTHZ_HTTP_ADDR", "127.0.0.1:0")
        .env("AUTHZ_ADMIN_ADDR", "127.0.0.1:0")
        .env("RUST_LOG", "debug")
        .stderr(Stdio::piped())
        .stdout(Stdio::null());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    let sink = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("listening") {
                let _ = tx.send(line.clone());
            }
            sink.lock().unwrap().push(line);
        }
    });
    let line = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("listening line");
    let field = |name: &str| {
        // text: grpc=1.2.3.4:5 ; json: "grpc":"1.2.3.4:5"
        let start = line
            .find(&format!("{name}="))
            .map(|i| i + name.len() + 1)
            .or_else(|| {
                line.find(&format!("\"{name}\":\""))
                    .map(|i| i + name.len() + 4)
            })
            .unwrap();
        line[start..]
            .split(|c: char| c.is_whitespace() || c == '"')
            .next()
            .unwrap()
            .to_string()
    };
    Running {
        grpc: field("grpc"),
        child,
        log,
    }
}

/// Kills the process if the test fails before it stops it, so no process outlives the test.
impl Drop for Running {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn stop(mut running: Running) -> Vec<String> {
    Command::new("kill")
        .arg("-TERM")
        .arg(running.child.id().to_string())
        .status()
        .unwrap();
    let status = running.child.wait().unwrap();
    assert!(status.success(), "exit 0 after SIGTERM: {status:?}");
    std::thread::sleep(Duration::from_millis(50));
    running.log.lock().unwrap().clone()
}

async fn traced_check(grpc: &str) {
    let mut client =
        envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient::connect(
            format!("http://{grpc}"),
        )
        .await
        .unwrap();
    let cookie = session_cookie();
    let traceparent = format!("00-{TRACE_ID}-{PARENT_ID}-01");
    let headers = [
        ("cookie", cookie.as_str()),
        ("traceparent", traceparent.as_str()),
    ];
    let resp = client
        .check(envoy_check("GET", "/api/u1/tasks", &headers))
        .await
        .unwrap();
    assert_eq!(resp.into_inner().status.unwrap().code, 0);
}

async fn spans_reach_the_collector(protocol: &str) {
    let stand_in = StandIn::start(valid("u1")).await;
    let received: Received = Arc::default();
    let endpoint = start_receiver(protocol, received.clone()).await;
    let running = spawn(&[
        ("BETTER_AUTH_URL", stand_in.url()),
        ("AUTHZ_USER_PATH_PATTERN", "/api/{user_id}/".into()),
        ("AUTHZ_UPSTREAM_TIMEOUT_MS", "500".into()),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", protocol.into()),
    ]);
    traced_check(&running.grpc).await;
    // Spans are flushed on shutdown.
    let log = stop(running);
    let spans = received.lock().unwrap().clone();
    let ctx = format!("{protocol}: spans {spans:#?}\nlog:\n{}", log.join("\n"));

    let check = spans
        .iter()
        .find(|s| s.name == "authz.check")
        .unwrap_or_else(|| panic!("no authz.check span; {ctx}"));
    assert_eq!(check.trace_id, TRACE_ID, "{ctx}");
    assert_eq!(check.parent_span_id, PARENT_ID, "{ctx}");
    assert_eq!(check.service_name, "better-authz");
    assert_eq!(check.attr("authz.transport"), Some("grpc"));
    assert_eq!(check.attr("authz.decision"), Some("allow"));
    assert_eq!(check.attr("authz.reason"), Some("SESSION_VALID"));
    assert_eq!(check.attr("http.response.status_code"), Some("200"));
    assert_eq!(check.attr("enduser.id"), Some("u1"));

    let call = spans
        .iter()
        .find(|s| s.name == "better_auth.get_session")
        .unwrap_or_else(|| panic!("no Better Auth child span; {ctx}"));
    assert_eq!(call.trace_id, TRACE_ID);
    assert_eq!(call.parent_span_id, check.span_id, "child of authz.check");
    assert_eq!(call.attr("better_auth.outcome"), Some("valid"));

    // Better Auth saw the same trace, with our client span as parent.
    let sent = stand_in.last_seen();
    let traceparent = sent
        .get("traceparent")
        .expect("traceparent sent to Better Auth")
        .to_str()
        .unwrap();
    assert_eq!(traceparent, format!("00-{TRACE_ID}-{}-01", call.span_id));

    // Nothing secret in any attribute.
    for span in &spans {
        for (k, v) in &span.attributes {
            assert!(!v.contains("Zx9TokenValue42"), "{k} leaks the token");
        }
    }
    // The decision line carries the trace and span ids.
    let line = log
        .iter()
        .find(|l| l.contains("SESSION_VALID") && l.contains(" check"))
        .expect("decision line");
    assert!(line.contains(TRACE_ID), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_reach_an_otlp_grpc_collector() {
    spans_reach_the_collector("grpc").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_reach_an_otlp_http_collector() {
    spans_reach_the_collector("http/protobuf").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_collector_costs_nothing_but_dropped_spans() {
    let stand_in = StandIn::start(valid("u1")).await;
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let running = spawn(&[
        ("BETTER_AUTH_URL", stand_in.url()),
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("http://127.0.0.1:{port}"),
        ),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc".into()),
    ]);
    let start = Instant::now();
    for _ in 0..20 {
        traced_check(&running.grpc).await;
    }
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "checks were not slowed: {:?}",
        start.elapsed()
    );
    let started = Instant::now();
    stop(running);
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "shutdown bounded: {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_one_object_per_line_with_trace_ids() {
    let stand_in = StandIn::start(valid("u1")).await;
    let received: Received = Arc::default();
    let endpoint = start_receiver("grpc", received.clone()).await;
    let running = spawn(&[
        ("BETTER_AUTH_URL", stand_in.url()),
        ("AUTHZ_LOG_FORMAT", "json".into()),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc".into()),
    ]);
    traced_check(&running.grpc).await;
    let log = stop(running);
    let objects: Vec<serde_json::Value> = log
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    for o in &objects {
        for key in ["timestamp", "level", "target", "message"] {
            assert!(o.get(key).is_some(), "{key} missing in {o}");
        }
    }
    let decision = objects
        .iter()
        .find(|o| o["reason"] == "SESSION_VALID")
        .expect("decision line");
    for key in [
        "transport",
        "method",
        "path",
        "decision",
        "status",
        "latency_us",
        "user_id",
    ] {
        assert!(decision.get(key).is_some(), "{key} missing in {decision}");
    }
    assert_eq!(decision["path"], "/api/u1/tasks");
    assert_eq!(decision["span"]["trace_id"], TRACE_ID, "{decision}");
    assert_eq!(
        decision["span"]["span_id"].as_str().map(str::len),
        Some(16),
        "{decision}"
    );
    let config = objects
        .iter()
        .find(|o| o["message"] == "configuration")
        .expect("config line");
    assert!(
        config["config"]
            .as_str()
            .unwrap()
            .contains("OTEL_EXPORTER_OTLP_PROTOCOL=grpc")
    );
}
