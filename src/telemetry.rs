//! Logs and traces.
//!
//! - Logs: `tracing` with `RUST_LOG` levels, as text or one JSON object per line.
//! - Traces: OpenTelemetry over OTLP (gRPC or HTTP/protobuf), configured by the standard
//!   `OTEL_*` variables. Without an endpoint no exporter, no OpenTelemetry layer, no cost.
//!   Spans are batched on the runtime and dropped when the queue is full, so a slow or dead
//!   collector never blocks or fails a check; they are flushed on shutdown.
//!
//! Trace context: the proxy's W3C `traceparent`/`tracestate` become the parent of the
//! `authz.check` span; the Better Auth call is its child and carries its own `traceparent`, so
//! the proxy, this service and Better Auth form one trace. Without an exporter the incoming
//! headers are passed to Better Auth unchanged.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::{EnvFilter, filter_fn};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, Registry};

use crate::config::{LogFormat, OtlpProtocol, SamplerConfig, TelemetryConfig};
use crate::decision::TraceHeaders;

/// Used when `RUST_LOG` is unset.
pub const DEFAULT_FILTER: &str = "info";

/// Whether spans are exported; decides between injecting our context and passing the
/// proxy's through.
static EXPORTING: AtomicBool = AtomicBool::new(false);

/// Keeps the exporter alive; [`Telemetry::shutdown`] flushes it.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

// === impl Telemetry ===

impl Telemetry {
    /// Flush and stop the exporter (bounded by the SDK's export timeout).
    pub async fn shutdown(self) {
        if let Some(provider) = self.provider {
            // The SDK blocks while it flushes: keep that off the runtime's workers.
            let _ = tokio::task::spawn_blocking(move || {
                if let Err(error) = provider.shutdown() {
                    eprintln!("better-authz: flushing spans failed: {error}");
                }
            })
            .await;
        }
    }
}

/// Install the global subscriber (and the exporter when configured). Call inside the Tokio
/// runtime: the span batcher runs on it.
pub fn init(config: &TelemetryConfig) -> Result<Telemetry, String> {
    let format = config.log_format;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    // Colour only for people: log collectors get plain text.
    let ansi = std::io::stderr().is_terminal();
    let fmt: Box<dyn Layer<Registry> + Send + Sync> = match format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(ansi)
            .with_filter(filter)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(std::io::stderr)
            .with_filter(filter)
            .boxed(),
    };

    let (otel, provider) = match &config.otlp {
        None => (None, None),
        Some(otlp) => {
            let provider = tracer_provider(otlp.protocol, &otlp.endpoint, config)?;
            let tracer = provider.tracer("better-authz");
            // The service's own spans (any level) and its warnings and errors as span events,
            // whatever RUST_LOG says for logs.
            let targets = filter_fn(|m| {
                m.target().starts_with(env!("CARGO_CRATE_NAME"))
                    && (m.is_span() || *m.level() <= tracing::Level::WARN)
            });
            let layer = tracing_opentelemetry::layer()
                .with_tracer(tracer)
                .with_filter(targets)
                .boxed();
            opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
            EXPORTING.store(true, Ordering::SeqCst);
            (Some(layer), Some(provider))
        }
    };

    tracing_subscriber::registry()
        .with(fmt)
        .with(otel)
        .try_init()
        .map_err(|e| format!("logging was already set up: {e}"))?;
    Ok(Telemetry { provider })
}

fn tracer_provider(
    protocol: OtlpProtocol,
    endpoint: &str,
    config: &TelemetryConfig,
) -> Result<SdkTracerProvider, String> {
    use opentelemetry_otlp::WithExportConfig;
    let exporter = match protocol {
        OtlpProtocol::Grpc => opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .build(),
        OtlpProtocol::HttpProtobuf => opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            // The spec appends the signal path to the base endpoint for HTTP.
            .with_endpoint(format!("{}/v1/traces", endpoint.trim_end_matches('/')))
            .build(),
    }
    .map_err(|e| format!("cannot build the OTLP exporter: {e}"))?;

    let processor =
        opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor::builder(
            exporter,
            opentelemetry_sdk::runtime::Tokio,
        )
        .build();
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(config.service_name.clone())
        .build();
    Ok(SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_sampler(sampler(config.sampler))
        .with_resource(resource)
        .build())
}

fn sampler(config: SamplerConfig) -> Sampler {
    match config {
        SamplerConfig::AlwaysOn => Sampler::AlwaysOn,
        SamplerConfig::AlwaysOff => Sampler::AlwaysOff,
        SamplerConfig::TraceIdRatio(r) => Sampler::TraceIdRatioBased(r),
        SamplerConfig::ParentBasedAlwaysOn => Sampler::ParentBased(Box::new(Sampler::AlwaysOn)),
        SamplerConfig::ParentBasedAlwaysOff => Sampler::ParentBased(Box::new(Sampler::AlwaysOff)),
        SamplerConfig::ParentBasedTraceIdRatio(r) => {
            Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(r)))
        }
    }
}

struct HeaderExtractor<'a>(TraceHeaders<'a>);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        match key {
            "traceparent" => self.0.traceparent,
            "tracestate" => self.0.tracestate,
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        vec!["traceparent", "tracestate"]
    }
}

/// Make the proxy's trace the parent of `span` (no-op without an exporter).
pub fn set_parent(span: &tracing::Span, incoming: TraceHeaders<'_>) {
    if !EXPORTING.load(Ordering::Relaxed) || incoming.traceparent.is_none() {
        return;
    }
    let cx = TraceContextPropagator::new().extract(&HeaderExtractor(incoming));
    let _ = span.set_parent(cx);
}

/// `(trace_id, span_id)` for log lines: the exported span's ids, or without an exporter the
/// proxy's trace id (and no span id of ours).
pub fn ids(span: &tracing::Span, incoming: TraceHeaders<'_>) -> (Option<String>, Option<String>) {
    if EXPORTING.load(Ordering::Relaxed) {
        let cx = span.context();
        let sc = cx.span().span_context().clone();
        if sc.is_valid() {
            return (
                Some(sc.trace_id().to_string()),
                Some(sc.span_id().to_string()),
            );
        }
        return (None, None);
    }
    (incoming.traceparent.and_then(trace_id_of), None)
}

/// The trace headers to send to Better Auth from inside `span` (the lookup's client span).
pub fn outgoing(span: &tracing::Span, incoming: TraceHeaders<'_>) -> Vec<(&'static str, String)> {
    if !EXPORTING.load(Ordering::Relaxed) {
        let mut out = Vec::new();
        if let Some(tp) = incoming.traceparent.filter(|tp| trace_id_of(tp).is_some()) {
            out.push(("traceparent", tp.to_owned()));
            if let Some(ts) = incoming.tracestate {
                out.push(("tracestate", ts.to_owned()));
            }
        }
        return out;
    }
    let mut map: HashMap<String, String> = HashMap::new();
    TraceContextPropagator::new().inject_context(&span.context(), &mut map);
    let mut out = Vec::new();
    if let Some(tp) = map.remove("traceparent") {
        out.push(("traceparent", tp));
    }
    if let Some(ts) = map.remove("tracestate").filter(|s| !s.is_empty()) {
        out.push(("tracestate", ts));
    }
    out
}

/// The trace id of a well-formed W3C `traceparent` (`00-<32 hex>-<16 hex>-<2 hex>`).
pub fn trace_id_of(traceparent: &str) -> Option<String> {
    let mut parts = traceparent.trim().split('-');
    let (version, trace, parent, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    let valid = hex(version, 2)
        && version != "ff"
        && hex(trace, 32)
        && trace.bytes().any(|b| b != b'0')
        && hex(parent, 16)
        && parent.bytes().any(|b| b != b'0')
        && hex(flags, 2);
    valid.then(|| trace.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_parsing() {
        let good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(
            trace_id_of(good).as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
        ] {
            assert_eq!(trace_id_of(bad), None, "{bad}");
        }
    }
}
