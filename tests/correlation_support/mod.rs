//! Shared helpers for the correlation tests: a recording inner service, a tracing layer that
//! captures spans' and events' fields, and id checks.
#![allow(dead_code)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::fmt;
use std::sync::{Arc, Mutex};

use http::{HeaderMap, HeaderValue, Request, Response};
use seawall::correlation::CorrelationId;
use tower::{service_fn, Service};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::prelude::*;
use tracing_subscriber::registry::LookupSpan;

/// Fields of one span or event, as text.
pub type Fields = HashMap<String, String>;

/// One captured event: its own fields, and the `correlation_id` of every span it sits in,
/// innermost first.
#[derive(Debug, Clone)]
pub struct CapturedEvent {
    pub target: String,
    pub fields: Fields,
    pub span_ids: Vec<String>,
}

/// Captures every span's and event's fields.
#[derive(Clone, Default)]
pub struct Capture {
    pub spans: Arc<Mutex<Vec<(String, Fields)>>>,
    pub events: Arc<Mutex<Vec<CapturedEvent>>>,
}

impl Capture {
    /// Installs a capturing subscriber for this thread until the guard drops.
    pub fn install() -> (Self, tracing::subscriber::DefaultGuard) {
        let capture = Capture::default();
        let subscriber = tracing_subscriber::registry().with(capture.clone());
        let guard = tracing::subscriber::set_default(subscriber);
        // Tests on other threads may have registered the layer's callsites before this
        // subscriber existed, caching "no interest" for them; ask every callsite again.
        tracing::callsite::rebuild_interest_cache();
        (capture, guard)
    }

    pub fn events(&self) -> Vec<CapturedEvent> {
        self.events.lock().unwrap().clone()
    }

    pub fn spans(&self) -> Vec<(String, Fields)> {
        self.spans.lock().unwrap().clone()
    }

    /// The events whose message is `message`.
    pub fn events_with_message(&self, message: &str) -> Vec<CapturedEvent> {
        self.events()
            .into_iter()
            .filter(|e| e.fields.get("message").map(String::as_str) == Some(message))
            .collect()
    }
}

struct SpanFields(Fields);

#[derive(Default)]
struct Visitor(Fields);

impl Visit for Visitor {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
}

impl<S> Layer<S> for Capture
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut visitor = Visitor::default();
        attrs.record(&mut visitor);
        self.spans
            .lock()
            .unwrap()
            .push((attrs.metadata().name().to_owned(), visitor.0.clone()));
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(SpanFields(visitor.0));
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut visitor = Visitor::default();
        event.record(&mut visitor);
        let span_ids = ctx
            .event_scope(event)
            .map(|scope| {
                scope
                    .filter_map(|span| {
                        span.extensions()
                            .get::<SpanFields>()
                            .and_then(|f| f.0.get("correlation_id").cloned())
                    })
                    .collect()
            })
            .unwrap_or_default();
        self.events.lock().unwrap().push(CapturedEvent {
            target: event.metadata().target().to_owned(),
            fields: visitor.0,
            span_ids,
        });
    }
}

/// Whether `s` is a lowercase hyphenated UUID of version 4, variant 1.
pub fn is_uuid_v4(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, &c)| match i {
            8 | 13 | 18 | 23 => c == b'-',
            _ => c.is_ascii_digit() || (b'a'..=b'f').contains(&c),
        })
        && b[14] == b'4'
        && matches!(b[19], b'8' | b'9' | b'a' | b'b')
}

/// The default rules, written out independently of the crate: 1 to 128 bytes of RFC 9110
/// `tchar`.
pub fn is_valid_default(bytes: &[u8]) -> bool {
    (1..=128).contains(&bytes.len())
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(b))
}

/// What the inner service saw of a request.
#[derive(Debug, Clone, Default)]
pub struct Seen {
    pub header: Option<HeaderValue>,
    pub extension: Option<CorrelationId>,
    pub current: Option<CorrelationId>,
    pub headers: HeaderMap,
}

/// A service that records what it saw and answers 200.
pub fn recording() -> (
    Arc<Mutex<Seen>>,
    impl Service<
            Request<String>,
            Response = Response<String>,
            Error = Infallible,
            Future = impl Send,
        > + Clone,
) {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let svc = {
        let seen = Arc::clone(&seen);
        service_fn(move |req: Request<String>| {
            let seen = Arc::clone(&seen);
            async move {
                *seen.lock().unwrap() = Seen {
                    header: req.headers().get("x-correlation-id").cloned(),
                    extension: req.extensions().get::<CorrelationId>().cloned(),
                    current: CorrelationId::current(),
                    headers: req.headers().clone(),
                };
                Ok::<_, Infallible>(Response::new(String::new()))
            }
        })
    };
    (seen, svc)
}

/// A request with one header.
pub fn request_with(name: &str, value: HeaderValue) -> Request<String> {
    Request::builder()
        .uri("/")
        .header(name, value)
        .body(String::new())
        .unwrap()
}

/// The response's `x-correlation-id`.
pub fn id_of(res: &Response<String>) -> &str {
    res.headers()["x-correlation-id"].to_str().unwrap()
}
