//! W3C trace context across Ballast's hops: from a gRPC request's `traceparent` metadata
//! into the spans that serve it, and from those spans into a Kafka (or failover envelope)
//! header, so a consumer, or the retry worker that drains the failover queue, continues
//! the same trace.
//!
//! Spans on the write path use the target [`TARGET`] at DEBUG level. The log filter
//! (`telemetry.log_level`, INFO by default) does not enable them, so with no OTLP endpoint
//! they cost one disabled-callsite check; the OTLP layer enables them when traces are on.

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The header that carries the trace context, in gRPC metadata and in Kafka headers.
pub const TRACEPARENT: &str = "traceparent";

/// The target of every write-path span.
pub const TARGET: &str = "ballast::trace";

struct Metadata<'a>(&'a tonic::metadata::MetadataMap);

impl Extractor for Metadata<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0
            .keys()
            .filter_map(|k| match k {
                tonic::metadata::KeyRef::Ascii(k) => Some(k.as_str()),
                tonic::metadata::KeyRef::Binary(_) => None,
            })
            .collect()
    }
}

struct Headers<'a>(Vec<(&'a str, &'a [u8])>);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(k, _)| *k).collect()
    }
}

#[derive(Default)]
struct One(Option<String>);

impl Injector for One {
    fn set(&mut self, key: &str, value: String) {
        if key == TRACEPARENT {
            self.0 = Some(value);
        }
    }
}

fn set_parent(span: &tracing::Span, cx: opentelemetry::Context) {
    if cx.span().span_context().is_valid() {
        // Fails only when the span is disabled (traces off): nothing to continue then.
        let _ = span.set_parent(cx);
    }
}

/// Makes `span` a child of the trace context in a gRPC request's metadata, if any.
pub fn continue_from_metadata(span: &tracing::Span, metadata: &tonic::metadata::MetadataMap) {
    set_parent(
        span,
        TraceContextPropagator::new().extract(&Metadata(metadata)),
    );
}

/// Makes `span` a child of the trace context in a record's headers, if any.
pub fn continue_from_headers<'a>(
    span: &tracing::Span,
    headers: impl IntoIterator<Item = (&'a str, &'a [u8])>,
) {
    let headers = Headers(headers.into_iter().collect());
    set_parent(span, TraceContextPropagator::new().extract(&headers));
}

/// The `traceparent` value naming the current span, when traces are on.
pub fn current_traceparent() -> Option<String> {
    let cx = tracing::Span::current().context();
    if !cx.span().span_context().is_valid() {
        return None;
    }
    let mut out = One::default();
    TraceContextPropagator::new().inject_context(&cx, &mut out);
    out.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_traceparent_header_is_read_and_a_missing_or_bad_one_is_not() {
        let good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let cx = TraceContextPropagator::new().extract(&Headers(vec![
            ("other", b"x".as_slice()),
            ("TraceParent", good.as_bytes()),
        ]));
        let sc = cx.span().span_context().clone();
        assert!(sc.is_valid());
        assert_eq!(
            sc.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(sc.span_id().to_string(), "00f067aa0ba902b7");
        for bad in ["", "00-zz-00f067aa0ba902b7-01", "garbage"] {
            let cx = TraceContextPropagator::new()
                .extract(&Headers(vec![("traceparent", bad.as_bytes())]));
            assert!(!cx.span().span_context().is_valid(), "{bad}");
        }
        // Without an installed OTLP layer no span has a context to pass on.
        assert_eq!(current_traceparent(), None);
    }
}
