//! W3C trace context carried in message headers, so that a consumer's
//! processing span joins the trace of the request that published the event.

use std::sync::Arc;

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{SpanContext, TraceContextExt};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Header of the W3C trace parent: version, trace id, parent span id, flags.
pub const TRACEPARENT_HEADER: &str = "traceparent";
/// Header of the W3C vendor-specific trace state.
pub const TRACESTATE_HEADER: &str = "tracestate";

/// The trace context headers of one message, empty when the publisher had no
/// span. Clones share one allocation, so every event of a batch carries the
/// context of its request without a copy per event.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TraceContext(Option<Arc<[(String, String)]>>);

impl TraceContext {
    /// Captures the context of the current `tracing` span.
    pub fn current() -> Self {
        Self::of_span(&tracing::Span::current())
    }

    /// Captures the context of `span`; empty when the span is disabled or no
    /// OpenTelemetry layer is installed.
    pub fn of_span(span: &tracing::Span) -> Self {
        if span.is_disabled() {
            return Self::default();
        }
        Self::of_context(&span.context())
    }

    /// Encodes an OpenTelemetry context; empty when it contains no valid span.
    pub fn of_context(context: &opentelemetry::Context) -> Self {
        if !context.span().span_context().is_valid() {
            return Self::default();
        }
        let mut headers = Headers(Vec::with_capacity(2));
        TraceContextPropagator::new().inject_context(context, &mut headers);
        Self::from_pairs(headers.0)
    }

    /// Reads the context from a message's headers.
    pub fn from_headers<'a>(header: impl Fn(&str) -> Option<&'a str>) -> Self {
        let pairs: Vec<(String, String)> = [TRACEPARENT_HEADER, TRACESTATE_HEADER]
            .into_iter()
            .filter_map(|name| {
                header(name)
                    .filter(|value| !value.is_empty())
                    .map(|value| (name.to_owned(), value.to_owned()))
            })
            .collect();
        Self::from_pairs(pairs)
    }

    fn from_pairs(pairs: Vec<(String, String)>) -> Self {
        if pairs.iter().any(|(name, _)| name == TRACEPARENT_HEADER) {
            Self(Some(pairs.into()))
        } else {
            Self::default()
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_none()
    }

    /// Returns the header names and values to send with the message.
    pub fn headers(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0
            .iter()
            .flat_map(|pairs| pairs.iter())
            .map(|(name, value)| (name.as_str(), value.as_str()))
    }

    /// Returns the `traceparent` header value, if any.
    pub fn traceparent(&self) -> Option<&str> {
        self.headers()
            .find(|(name, _)| *name == TRACEPARENT_HEADER)
            .map(|(_, value)| value)
    }

    /// Decodes the context, as a remote parent for a consumer's span.
    pub fn extract(&self) -> opentelemetry::Context {
        let pairs = self.0.as_deref().unwrap_or_default();
        TraceContextPropagator::new().extract(&Received(pairs))
    }

    /// Returns the publisher's span context, for a link from a span that
    /// processes events of several traces at once.
    pub fn span_context(&self) -> SpanContext {
        self.extract().span().span_context().clone()
    }
}

/// The carrier the propagator writes into.
struct Headers(Vec<(String, String)>);

impl Injector for Headers {
    fn set(&mut self, key: &str, value: String) {
        // The propagator writes an empty `tracestate` when there is none.
        if !value.is_empty() {
            self.0.push((key.to_owned(), value));
        }
    }
}

/// The carrier the propagator reads from.
struct Received<'a>(&'a [(String, String)]);

impl Extractor for Received<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(key))
            .map(|(_, value)| value.as_str())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(name, _)| name.as_str()).collect()
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::{SpanId, TraceFlags, TraceId, TraceState};

    use super::*;

    fn remote_context() -> opentelemetry::Context {
        let span = SpanContext::new(
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
            SpanId::from_hex("00f067aa0ba902b7").unwrap(),
            TraceFlags::SAMPLED,
            true,
            TraceState::default(),
        );
        opentelemetry::Context::new().with_remote_span_context(span)
    }

    #[test]
    fn context_round_trips_through_headers() {
        let trace = TraceContext::of_context(&remote_context());
        assert_eq!(
            trace.traceparent(),
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        );
        assert_eq!(trace.headers().count(), 1, "an empty tracestate is not sent");

        let received = TraceContext::from_headers(|name| trace.headers().find(|(n, _)| *n == name).map(|(_, v)| v));
        assert_eq!(received, trace);
        let span = received.span_context();
        assert_eq!(
            span.trace_id(),
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap()
        );
        assert_eq!(span.span_id(), SpanId::from_hex("00f067aa0ba902b7").unwrap());
        assert!(span.is_remote());
        assert!(span.is_sampled());
    }

    #[test]
    fn no_span_gives_empty_context() {
        assert!(TraceContext::of_context(&opentelemetry::Context::new()).is_empty());
        assert!(TraceContext::current().is_empty(), "no subscriber in this test");
        assert!(TraceContext::from_headers(|_| None).is_empty());
        assert!(!TraceContext::default().span_context().is_valid());
    }

    #[test]
    fn tracestate_without_traceparent_is_ignored() {
        let trace = TraceContext::from_headers(|name| (name == TRACESTATE_HEADER).then_some("vendor=1"));
        assert!(trace.is_empty());
    }
}
