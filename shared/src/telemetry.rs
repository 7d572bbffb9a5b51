//! Logging and tracing set-up shared by every service, and the one place trace context is
//! carried across processes (W3C `traceparent`, in HTTP and NATS headers and with the
//! execution).
//!
//! Traces go to an OpenTelemetry collector over OTLP when `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set, configured by the standard variables
//! (`OTEL_EXPORTER_OTLP_PROTOCOL` `http/protobuf` or `http/json`, `OTEL_SERVICE_NAME`,
//! `OTEL_TRACES_SAMPLER`). Spans are exported in batches from a thread of their own: a slow or
//! absent collector costs dropped spans, never a slower request. Without an endpoint, trace
//! context is still made and carried, so an execution always has a `trace_id`.

use std::collections::HashMap;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// The installed tracing pipeline; `shutdown` flushes the spans still buffered.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    pub fn shutdown(self) {
        if let Some(provider) = self.provider {
            let _ = provider.shutdown();
        }
    }
}

fn exporting() -> bool {
    [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    ]
    .iter()
    .any(|name| std::env::var(name).is_ok_and(|value| !value.trim().is_empty()))
}

fn provider(service: &str) -> SdkTracerProvider {
    let resource = if std::env::var_os("OTEL_SERVICE_NAME").is_some() {
        Resource::builder().build()
    } else {
        Resource::builder()
            .with_service_name(service.to_owned())
            .build()
    };
    let builder = SdkTracerProvider::builder().with_resource(resource);
    if !exporting() {
        return builder.build();
    }
    match opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()
    {
        Ok(exporter) => builder.with_batch_exporter(exporter).build(),
        Err(error) => {
            eprintln!("tracing: the OTLP exporter could not be built ({error}); traces are off");
            builder.build()
        }
    }
}

/// Installs the global subscriber: JSON lines when `json`, human-readable otherwise, at the
/// level of `RUST_LOG` (default `info`), and spans for OpenTelemetry as `service` (unless
/// `OTEL_SERVICE_NAME` names it). Calling it twice is harmless.
pub fn init(json: bool, service: &str) -> Telemetry {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let filter = || EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let provider = provider(service);
    let tracer = provider.tracer("voidrunner");
    let spans = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_filter(filter());
    // Colours for a terminal only: a log file or collector gets plain text.
    let logs = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let logs = if json {
        logs.json()
            .flatten_event(true)
            .with_filter(filter())
            .boxed()
    } else {
        logs.with_filter(filter()).boxed()
    };
    let installed = tracing_subscriber::registry()
        .with(spans)
        .with(logs)
        .try_init()
        .is_ok();
    Telemetry {
        provider: installed.then_some(provider),
    }
}

/// The `traceparent` of the current span, when it belongs to a trace.
pub fn current_traceparent() -> Option<String> {
    traceparent_of(&tracing::Span::current())
}

/// The `traceparent` of `span`, when it belongs to a trace.
pub fn traceparent_of(span: &tracing::Span) -> Option<String> {
    let context = span.context();
    if !context.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&context, &mut carrier);
    carrier.remove("traceparent")
}

/// Makes `span` a child of the span `traceparent` names (from another process); a missing or
/// malformed one leaves `span` the root of a new trace. A `trace_id` field the span declares
/// gets the continued trace's id, so every log line inside the span names its trace.
pub fn continue_trace(span: &tracing::Span, traceparent: Option<&str>) {
    let Some(traceparent) = traceparent else {
        return;
    };
    let carrier = HashMap::from([("traceparent".to_owned(), traceparent.to_owned())]);
    let context = TraceContextPropagator::new().extract(&carrier);
    let trace_id = context.span().span_context().trace_id();
    if context.span().span_context().is_valid() {
        span.record("trace_id", tracing::field::display(trace_id));
        let _ = span.set_parent(context);
    }
}

/// The trace id in a `traceparent` (`00-<trace id>-<span id>-<flags>`).
pub fn trace_id(traceparent: &str) -> Option<&str> {
    traceparent
        .split('-')
        .nth(1)
        .filter(|id| id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trace_id_is_read_from_a_traceparent_and_nonsense_is_not_one() {
        let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(
            trace_id(traceparent),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        assert_eq!(trace_id("00-short-00f067aa0ba902b7-01"), None);
        assert_eq!(trace_id("nonsense"), None);
    }
}
