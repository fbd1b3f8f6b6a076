//! The HTTP/1.1 client under [`super::BetterAuthClient`]: hyper's pooled client over rustls, with
//! the platform's roots plus `BETTER_AUTH_CA_FILE`'s, no redirects followed.
//!
//! hyper directly rather than through reqwest (issue 14): reqwest's layers were about 20k of the
//! 168k instructions a check executed, 13k of them parsing the URL again on every request for its
//! redirect policy, even with redirects off. What the two did is the same: the same connector
//! (`HttpConnector`, `TCP_NODELAY`, the connect deadline), the same pool (idle connections kept
//! 4 s, at most `pool_max_idle` per host), the same verifier (`rustls-platform-verifier`, with
//! the extra roots), HTTP/1.1 only.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls::pki_types::CertificateDer;

use crate::reason::Detail;

/// A request to Better Auth: a GET, no body.
pub type Outgoing = Request<Empty<Bytes>>;

/// Idle kept-alive connections to Better Auth are closed after this long: below Node's default
/// keep-alive timeout (5 s), so we close an idle connection before Better Auth does and never
/// send a check into one it is closing.
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(4);

/// The pooled client.
#[derive(Clone, Debug)]
pub struct Transport {
    client: Client<HttpsConnector<HttpConnector>, Empty<Bytes>>,
}

/// Why a body was not read.
pub enum BodyError {
    TooLarge,
    Read,
}

// === impl Transport ===

impl Transport {
    /// `connect_timeout` bounds the TCP connect; `extra_roots` are trusted besides the system's.
    pub fn new(
        connect_timeout: Duration,
        pool_max_idle: usize,
        extra_roots: &[CertificateDer<'static>],
    ) -> Result<Self, String> {
        let mut http = HttpConnector::new();
        // The scheme is checked by the TLS layer above: https gets TLS, http goes plain.
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(connect_timeout));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls_config(extra_roots)?)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .pool_max_idle_per_host(pool_max_idle)
            .build(connector);
        Ok(Transport { client })
    }

    /// Send `request`; a failure to connect or to read the answer's head is unavailability.
    pub async fn send(&self, request: Outgoing) -> Result<Response<Incoming>, Detail> {
        self.client.request(request).await.map_err(|error| {
            if timed_out(&error) {
                Detail::UpstreamTimeout
            } else {
                Detail::UpstreamUnreachable
            }
        })
    }
}

/// The body, refused past `limit` bytes (by its `Content-Length` before reading, or as it comes).
pub async fn read_bounded(
    response: Response<Incoming>,
    limit: usize,
) -> Result<Vec<u8>, BodyError> {
    let mut body = response.into_body();
    let hint = hyper::body::Body::size_hint(&body);
    if hint.exact().is_some_and(|len| len > limit as u64) {
        return Err(BodyError::TooLarge);
    }
    let mut read = Vec::with_capacity((hint.lower() as usize).min(limit));
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.map_err(|_| BodyError::Read)?.into_data() else {
            continue; // trailers
        };
        if read.len() + data.len() > limit {
            return Err(BodyError::TooLarge);
        }
        read.extend_from_slice(&data);
    }
    Ok(read)
}

/// The platform's verifier, with the extra roots; TLS 1.2 and 1.3 with ring.
fn tls_config(extra_roots: &[CertificateDer<'static>]) -> Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = if extra_roots.is_empty() {
        rustls_platform_verifier::Verifier::new(provider.clone())
    } else {
        rustls_platform_verifier::Verifier::new_with_extra_roots(
            extra_roots.iter().cloned(),
            provider.clone(),
        )
    }
    .map_err(|e| format!("TLS roots: {e}"))?;
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS versions: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth())
}

/// A connect deadline reached anywhere in the error's chain.
fn timed_out(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(error);
    while let Some(error) = source {
        if error
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::TimedOut)
        {
            return true;
        }
        source = error.source();
    }
    false
}
