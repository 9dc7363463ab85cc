//! W3C trace context in event metadata: `execute` records its span's
//! `traceparent` and `tracestate` on every event of the command, and what
//! handles an event later (a processor, a process manager and the commands
//! it sends, a gateway, a consumer in another process) opens its span as a
//! child of that context, so one trace follows a request through the log
//! and the broker. It works with feature `opentelemetry` and a
//! `tracing-opentelemetry` layer installed; otherwise these do nothing.

use crate::envelope::Metadata;

/// The metadata key of a W3C trace context, carried on the wire as the
/// `traceparent` attribute.
pub const TRACEPARENT: &str = "traceparent";

/// The metadata key of the W3C trace state that goes with [`TRACEPARENT`].
pub const TRACESTATE: &str = "tracestate";

/// Records `span`'s trace context in `metadata`, replacing what it held.
pub(crate) fn record(span: &tracing::Span, metadata: &mut Metadata) {
    #[cfg(feature = "opentelemetry")]
    if let Some((traceparent, tracestate)) = context::of(span) {
        metadata.values.insert(TRACEPARENT.to_owned(), traceparent);
        match tracestate {
            Some(state) => metadata.values.insert(TRACESTATE.to_owned(), state),
            None => metadata.values.remove(TRACESTATE),
        };
    }
    #[cfg(not(feature = "opentelemetry"))]
    let _ = (span, metadata);
}

/// Makes `span` a child of the trace context `metadata` carries, if any.
pub(crate) fn follow(span: &tracing::Span, metadata: &Metadata) {
    if let Some(traceparent) = metadata.values.get(TRACEPARENT) {
        continue_trace(
            span,
            traceparent,
            metadata.values.get(TRACESTATE).map(String::as_str),
        );
    }
}

/// Makes `span` a child of the W3C context `traceparent` (and
/// `tracestate`), such as an HTTP request's headers carry. False if the
/// context does not parse, or without feature `opentelemetry`.
pub fn continue_trace(span: &tracing::Span, traceparent: &str, tracestate: Option<&str>) -> bool {
    #[cfg(feature = "opentelemetry")]
    {
        context::continue_trace(span, traceparent, tracestate)
    }
    #[cfg(not(feature = "opentelemetry"))]
    {
        let _ = (span, traceparent, tracestate);
        false
    }
}

#[cfg(feature = "opentelemetry")]
mod context {
    use std::str::FromStr;

    use opentelemetry::Context;
    use opentelemetry::trace::{
        SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState,
    };
    use tracing_opentelemetry::OpenTelemetrySpanExt;

    /// The `traceparent` and `tracestate` of `span`, if it is in a trace.
    pub(super) fn of(span: &tracing::Span) -> Option<(String, Option<String>)> {
        let context = span.context();
        let otel = context.span();
        let span_context = otel.span_context();
        if !span_context.is_valid() {
            return None;
        }
        let traceparent = format!(
            "00-{}-{}-{:02x}",
            span_context.trace_id(),
            span_context.span_id(),
            span_context.trace_flags().to_u8()
        );
        let state = span_context.trace_state().header();
        Some((traceparent, (!state.is_empty()).then_some(state)))
    }

    /// A remote span context from its W3C headers.
    pub(super) fn parse(traceparent: &str, tracestate: Option<&str>) -> Option<SpanContext> {
        let mut parts = traceparent.trim().split('-');
        let (version, trace, span, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let sizes = [(version, 2), (trace, 32), (span, 16), (flags, 2)];
        if version == "ff" || sizes.iter().any(|(part, size)| part.len() != *size) {
            return None;
        }
        if version == "00" && parts.next().is_some() {
            return None;
        }
        let flags = u8::from_str_radix(flags, 16).ok()?;
        let state = tracestate
            .and_then(|state| TraceState::from_str(state).ok())
            .unwrap_or_default();
        let context = SpanContext::new(
            TraceId::from_hex(trace).ok()?,
            SpanId::from_hex(span).ok()?,
            TraceFlags::new(flags),
            true,
            state,
        );
        context.is_valid().then_some(context)
    }

    pub(super) fn continue_trace(
        span: &tracing::Span,
        traceparent: &str,
        tracestate: Option<&str>,
    ) -> bool {
        match parse(traceparent, tracestate) {
            Some(remote) => span
                .set_parent(Context::new().with_remote_span_context(remote))
                .is_ok(),
            None => false,
        }
    }

    #[cfg(test)]
    mod tests {
        use super::parse;

        #[test]
        fn only_a_well_formed_traceparent_parses() {
            let good = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
            let parsed = parse(good, Some("vendor=value")).expect("parses");
            assert_eq!(
                parsed.trace_id().to_string(),
                "0af7651916cd43dd8448eb211c80319c"
            );
            assert_eq!(parsed.trace_state().header(), "vendor=value");
            for bad in [
                "",
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",
                "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
                "00-00000000000000000000000000000000-b7ad6b7169203331-01",
                "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra",
                "00-zzf7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            ] {
                assert!(parse(bad, None).is_none(), "{bad}");
            }
        }
    }
}
