//! TLS and mTLS on the listeners, certificate reload, TLS to Better Auth, and real Envoy
//! speaking mTLS to the service. Every certificate is generated here (rcgen); none is committed.
//! Better Auth is a **stand-in** (from `support`) so the TLS paths can be driven on demand.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use better_authz::config::{Args, Config};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use support::*;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

/// A CA that can issue server and client certificates.
struct Ca {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Ca {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// (certificate PEM, key PEM) for these names.
    fn issue(&self, names: &[&str]) -> (String, String) {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "better-authz test");
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// A temporary directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!(
            "better-authz-{tag}-{}-{}",
            std::process::id(),
            rand_u64()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn write(&self, name: &str, content: &str) -> PathBuf {
        let path = self.0.join(name);
        // Write beside and rename, as cert-manager's atomic symlink swap does.
        let tmp = self.0.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, content).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(1);
    h.finish()
}

fn path_str(p: &Path) -> String {
    p.to_str().unwrap().to_owned()
}

/// Server files for `ca`, written into `dir`; returns args with TLS on.
fn tls_args(stand_in: &StandIn, dir: &TempDir, ca: &Ca, client_ca: Option<&Ca>) -> Args {
    let (cert, key) = ca.issue(&["localhost", "127.0.0.1"]);
    let mut a = base_args(&stand_in.url());
    a.tls_cert = Some(path_str(&dir.write("server.pem", &cert)));
    a.tls_key = Some(path_str(&dir.write("server.key", &key)));
    if let Some(client_ca) = client_ca {
        a.tls_client_ca = Some(path_str(&dir.write("client-ca.pem", &client_ca.pem)));
    }
    a
}

async fn grpc_over_tls(
    addr: std::net::SocketAddr,
    ca: &Ca,
    identity: Option<(String, String)>,
) -> Result<Answer, String> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&ca.pem))
        .domain_name("localhost");
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    let channel = Endpoint::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)
        .map_err(|e| e.to_string())?
        .connect_timeout(Duration::from_secs(2))
        .connect()
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let mut client =
        envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient::new(
            channel,
        );
    let session = session_cookie();
    let headers = [("cookie", session.as_str())];
    client
        .check(envoy_check("GET", "/api/u1/tasks", &headers))
        .await
        .map(|r| flatten(r.into_inner()))
        .map_err(|e| format!("check: {e}"))
}

fn https_client(ca: &Ca, identity: Option<(String, String)>) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(ca.pem.as_bytes()).unwrap()])
        .timeout(Duration::from_secs(3));
    if let Some((cert, key)) = identity {
        b = b.identity(reqwest::Identity::from_pem(format!("{cert}{key}").as_bytes()).unwrap());
    }
    b.build().unwrap()
}

async fn http_over_tls(service: &Service, client: &reqwest::Client) -> Result<u16, String> {
    client
        .get(format!("https://localhost:{}/auth", service.http.port()))
        .header("x-original-uri", "/api/u1/tasks")
        .header("cookie", session_cookie())
        .send()
        .await
        .map(|r| r.status().as_u16())
        .map_err(|e| e.to_string())
}

#[tokio::test]
async fn tls_listeners_serve_grpc_and_http() {
    let stand_in = StandIn::start(valid("u1")).await;
    let dir = TempDir::new("tls");
    let ca = Ca::new("test CA");
    let service = Service::start(tls_args(&stand_in, &dir, &ca, None)).await;

    let a = grpc_over_tls(service.grpc, &ca, None).await.unwrap();
    assert_eq!((a.http_status, a.header("x-user-id")), (200, Some("u1")));
    assert_eq!(
        http_over_tls(&service, &https_client(&ca, None)).await,
        Ok(200)
    );

    // Plaintext to a TLS listener gets nowhere.
    let plain = reqwest::Client::new()
        .get(service.http_url())
        .header("x-original-uri", "/api/u1/tasks")
        .timeout(Duration::from_secs(2))
        .send()
        .await;
    assert!(plain.is_err() || plain.unwrap().status() != 200);
    // The admin listener stays plain HTTP for probes.
    assert_eq!(
        reqwest::get(service.admin_url("/healthz"))
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn mtls_requires_a_client_certificate_from_the_configured_ca() {
    let stand_in = StandIn::start(valid("u1")).await;
    let dir = TempDir::new("mtls");
    let server_ca = Ca::new("server CA");
    let client_ca = Ca::new("proxy CA");
    let other_ca = Ca::new("someone else");
    let service = Service::start(tls_args(&stand_in, &dir, &server_ca, Some(&client_ca))).await;

    let proxy = client_ca.issue(&["envoy"]);
    let a = grpc_over_tls(service.grpc, &server_ca, Some(proxy.clone()))
        .await
        .unwrap();
    assert_eq!(a.http_status, 200);
    assert_eq!(
        http_over_tls(&service, &https_client(&server_ca, Some(proxy))).await,
        Ok(200)
    );

    // No client certificate, or one from another CA: no check happens at all.
    for identity in [None, Some(other_ca.issue(&["intruder"]))] {
        let label = if identity.is_some() {
            "foreign cert"
        } else {
            "no cert"
        };
        assert!(
            grpc_over_tls(service.grpc, &server_ca, identity.clone())
                .await
                .is_err(),
            "grpc {label}"
        );
        assert!(
            http_over_tls(&service, &https_client(&server_ca, identity))
                .await
                .is_err(),
            "http {label}"
        );
    }
    assert_eq!(
        stand_in.calls(),
        2,
        "only the two authenticated checks reached Better Auth"
    );
}

#[tokio::test]
async fn rotated_certificates_are_picked_up_without_a_restart() {
    let stand_in = StandIn::start(valid("u1")).await;
    let dir = TempDir::new("reload");
    let old_ca = Ca::new("old CA");
    let service = Service::start(tls_args(&stand_in, &dir, &old_ca, None)).await;
    assert!(grpc_over_tls(service.grpc, &old_ca, None).await.is_ok());

    // A half-written rotation (garbage key) is ignored: the old certificate keeps serving.
    dir.write(
        "server.key",
        "-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n",
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        grpc_over_tls(service.grpc, &old_ca, None).await.is_ok(),
        "old cert still served"
    );

    let new_ca = Ca::new("new CA");
    let (cert, key) = new_ca.issue(&["localhost"]);
    dir.write("server.pem", &cert);
    dir.write("server.key", &key);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if grpc_over_tls(service.grpc, &new_ca, None).await.is_ok() {
            break;
        }
        assert!(Instant::now() < deadline, "new certificate never served");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        grpc_over_tls(service.grpc, &old_ca, None).await.is_err(),
        "old certificate retired"
    );
    assert_eq!(
        http_over_tls(&service, &https_client(&new_ca, None)).await,
        Ok(200)
    );
}

#[test]
fn bad_tls_configuration_names_the_variable() {
    let dir = TempDir::new("badcfg");
    let ca = Ca::new("cfg CA");
    let (cert, key) = ca.issue(&["localhost"]);
    let (_, other_key) = ca.issue(&["localhost"]);
    let cert = path_str(&dir.write("c.pem", &cert));
    let key = path_str(&dir.write("k.pem", &key));
    let other_key = path_str(&dir.write("k2.pem", &other_key));
    let garbage = path_str(&dir.write("g.pem", "not pem"));
    let base = || Args {
        better_auth_url: Some("http://127.0.0.1:1".into()),
        ..Default::default()
    };
    let problems = |a: Args| -> Vec<String> {
        Config::from_args(&a)
            .err()
            .unwrap_or_default()
            .into_iter()
            .map(|e| e.variable)
            .collect()
    };
    let mut a = base();
    a.tls_cert = Some(cert.clone());
    assert_eq!(problems(a), ["AUTHZ_TLS_KEY"], "cert without key");
    let mut a = base();
    a.tls_key = Some(key.clone());
    assert_eq!(problems(a), ["AUTHZ_TLS_CERT"], "key without cert");
    let mut a = base();
    a.tls_client_ca = Some(path_str(&dir.write("ca.pem", &ca.pem)));
    assert_eq!(
        problems(a),
        ["AUTHZ_TLS_CLIENT_CA"],
        "client CA without server TLS"
    );
    let mut a = base();
    (a.tls_cert, a.tls_key) = (Some(garbage.clone()), Some(key.clone()));
    assert_eq!(problems(a), ["AUTHZ_TLS_CERT"], "garbage cert");
    let mut a = base();
    (a.tls_cert, a.tls_key) = (Some(cert.clone()), Some(other_key));
    assert_eq!(problems(a), ["AUTHZ_TLS_KEY"], "mismatched key");
    let mut a = base();
    a.better_auth_ca_file = Some(garbage);
    assert_eq!(
        problems(a),
        ["BETTER_AUTH_CA_FILE"],
        "garbage Better Auth CA"
    );
    let mut a = base();
    (a.tls_cert, a.tls_key) = (Some(cert), Some(key));
    assert!(problems(a).is_empty());
}

/// A stand-in Better Auth served over TLS with a certificate from `ca`.
async fn tls_stand_in(ca: &Ca, dir: &TempDir) -> (StandIn, String) {
    let stand_in = StandIn::start(valid("u1")).await;
    // Front the plain stand-in with a TLS terminator built from the service's own TLS code.
    let (cert, key) = ca.issue(&["localhost"]);
    let files = better_authz::tls::TlsFiles {
        cert: dir.write("ba.pem", &cert),
        key: dir.write("ba.key", &key),
        client_ca: None,
    };
    let reloader =
        better_authz::tls::TlsReloader::new(better_authz::tls::TlsSettings::load(files).unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut incoming = better_authz::tls::incoming(
        listener,
        reloader,
        tokio_util::sync::CancellationToken::new(),
    );
    let backend = stand_in.addr;
    tokio::spawn(async move {
        while let Some((mut tls, _)) = incoming.recv().await {
            tokio::spawn(async move {
                if let Ok(mut plain) = tokio::net::TcpStream::connect(backend).await {
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                }
            });
        }
    });
    (stand_in, format!("https://localhost:{port}"))
}

#[tokio::test]
async fn better_auth_over_tls_with_a_private_ca() {
    let dir = TempDir::new("ba-tls");
    let ca = Ca::new("Better Auth CA");
    let (stand_in, url) = tls_stand_in(&ca, &dir).await;

    // Trusting the CA file: the session is checked over TLS.
    let mut a = base_args(&url);
    a.better_auth_ca_file = Some(path_str(&dir.write("ba-ca.pem", &ca.pem)));
    let service = Service::start(a).await;
    let session = session_cookie();
    let headers = [("cookie", session.as_str())];
    let ok = service.check("GET", "/api/u1/tasks", &headers).await;
    assert_eq!(ok.http_status, 200);
    assert_eq!(stand_in.calls(), 1);

    // Without it the certificate is unknown: fail closed, Better Auth never sees the cookie.
    let service = Service::start(base_args(&url)).await;
    let denied = service.check("GET", "/api/u1/tasks", &headers).await;
    assert_eq!(
        (denied.http_status, denied.error_code()),
        (503, "AUTH_UNAVAILABLE")
    );
    assert_eq!(stand_in.calls(), 1);
}

// --- Real Envoy speaking mTLS to the service ------------------------------------------------

fn envoy_bin() -> PathBuf {
    if let Ok(bin) = std::env::var("ENVOY_BIN") {
        return PathBuf::from(bin);
    }
    let local = Path::new(env!("CARGO_MANIFEST_DIR")).join(".tools/venv/bin/envoy");
    assert!(
        local.exists(),
        "Envoy not found at {} (run scripts/install-deps.sh, or set ENVOY_BIN)",
        local.display()
    );
    local
}

struct Envoy(Child);

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Envoy with ext_authz over mTLS to `authz_port`; the route answers 200 "backend" itself.
fn start_envoy(
    dir: &TempDir,
    authz_port: u16,
    ca: &Ca,
    client: Option<(PathBuf, PathBuf)>,
) -> (Envoy, u16) {
    let listen = free_port();
    let admin = free_port();
    let ca_path = dir.write("envoy-ca.pem", &ca.pem);
    let client_cert = match &client {
        Some((cert, key)) => format!(
            "tls_certificates: [{{certificate_chain: {{filename: {}}}, private_key: {{filename: {}}}}}]",
            cert.display(),
            key.display()
        ),
        None => String::new(),
    };
    let config = format!(
        r#"
admin: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {admin}}}}}}}
static_resources:
  listeners:
  - address: {{socket_address: {{address: 127.0.0.1, port_value: {listen}}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{prefix: "/"}}
                direct_response: {{status: 200, body: {{inline_string: "backend"}}}}
          http_filters:
          - name: envoy.filters.http.ext_authz
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz
              transport_api_version: V3
              failure_mode_allow: false
              status_on_error: {{code: ServiceUnavailable}}
              grpc_service: {{envoy_grpc: {{cluster_name: better_authz}}, timeout: 2s}}
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: better_authz
    type: STATIC
    connect_timeout: 1s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {{http2_protocol_options: {{}}}}
    load_assignment:
      cluster_name: better_authz
      endpoints:
      - lb_endpoints:
        - endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {authz_port}}}}}}}
    transport_socket:
      name: envoy.transport_sockets.tls
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
        sni: localhost
        common_tls_context:
          alpn_protocols: [h2]
          validation_context:
            trusted_ca: {{filename: {ca}}}
            match_typed_subject_alt_names:
            - san_type: DNS
              matcher: {{exact: localhost}}
          {client_cert}
"#,
        ca = ca_path.display(),
    );
    let config_path = dir.write("envoy.yaml", &config);
    let log = std::fs::File::create(dir.0.join("envoy.log")).unwrap();
    let child = Command::new(envoy_bin())
        .args([
            "-c",
            config_path.to_str().unwrap(),
            "--base-id",
            &free_port().to_string(),
            "-l",
            "warning",
        ])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start envoy");
    let envoy = Envoy(child);
    // Ready when the admin endpoint says LIVE.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if http_get_ok(admin, "/ready") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "envoy not ready: {}",
            std::fs::read_to_string(dir.0.join("envoy.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    (envoy, listen)
}

/// A plain blocking `GET` on loopback: true on a 200.
fn http_get_ok(port: u16, path: &str) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    if stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .is_err()
    {
        return false;
    }
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).is_ok() && head.ends_with(b"200")
}

async fn through_envoy(port: u16, cookie: Option<&str>) -> (u16, String) {
    let mut req = reqwest::Client::new().get(format!("http://127.0.0.1:{port}/api/u1/tasks"));
    if let Some(c) = cookie {
        req = req.header("cookie", c);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_envoy_speaks_mtls_to_the_service() {
    let stand_in = StandIn::start(valid("u1")).await;
    let dir = TempDir::new("envoy-mtls");
    let server_ca = Ca::new("server CA");
    let proxy_ca = Ca::new("proxy CA");
    let service = Service::start(tls_args(&stand_in, &dir, &server_ca, Some(&proxy_ca))).await;
    let (cert, key) = proxy_ca.issue(&["envoy"]);
    let client = (dir.write("envoy.pem", &cert), dir.write("envoy.key", &key));
    let session = session_cookie();

    let (envoy, port) = start_envoy(&dir, service.grpc.port(), &server_ca, Some(client));
    assert_eq!(
        through_envoy(port, Some(&session)).await,
        (200, "backend".to_string())
    );
    let (status, body) = through_envoy(port, None).await;
    assert_eq!(status, 401);
    assert!(
        body.contains("SESSION_REQUIRED"),
        "our deny body passes through: {body}"
    );
    drop(envoy);

    // An Envoy without the client certificate cannot check anything: it fails closed with 503.
    let (_envoy, port) = start_envoy(&dir, service.grpc.port(), &server_ca, None);
    let (status, body) = through_envoy(port, Some(&session)).await;
    assert_eq!(status, 503);
    assert_ne!(body, "backend");
}
