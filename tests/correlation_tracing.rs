#![cfg(feature = "correlation-id")]
//! The correlation-id server layer's spans and events, captured with a test subscriber: alone in
//! this binary (every test here installs one), because `tracing` caches callsite interest per
//! process.

mod correlation_support;

use std::convert::Infallible;

use http::{HeaderValue, Request, Response};
use seawall::correlation::{self, CorrelationId, CorrelationIdLayer, InvalidCorrelationId};
use tower::{service_fn, Layer, ServiceExt};

use correlation_support::{id_of, is_uuid_v4, recording, request_with, Capture};

/// Sends `value` and asserts it was replaced everywhere by a fresh UUID, with one debug event
/// that carries the value escaped, never raw.
async fn assert_replaced(value: HeaderValue, expected_reason: InvalidCorrelationId) {
    let (capture, _guard) = Capture::install();
    let (seen, inner) = recording();
    let layer = CorrelationIdLayer::new();
    let handle = layer.handle();
    let res = layer
        .layer(inner)
        .oneshot(request_with("x-correlation-id", value.clone()))
        .await
        .unwrap();
    let id = id_of(&res).to_owned();
    assert!(is_uuid_v4(&id), "replacement {id:?} for {value:?}");
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.header.unwrap(), id.as_str(), "request header replaced");
    assert_eq!(seen.headers.get_all("x-correlation-id").iter().count(), 1);
    assert_eq!(seen.extension.unwrap(), id.as_str());
    assert_eq!(handle.rejected(), 1);

    let events = capture.events_with_message("invalid incoming correlation id replaced");
    assert_eq!(events.len(), 1, "{:?}", capture.events());
    let event = &events[0];
    assert_eq!(event.target, "seawall::correlation");
    assert_eq!(event.fields["header"], "x-correlation-id");
    assert_eq!(event.fields["replacement"], id);
    assert_eq!(event.fields["len"], value.len().to_string());
    assert_eq!(event.fields["reason"], expected_reason.to_string());
    let shown = &event.fields["rejected"];
    assert!(
        shown.bytes().all(|b| (0x21..0x7f).contains(&b)),
        "logged value is visible ASCII: {shown:?}"
    );
    assert!(shown.len() <= 32 * 4 + 3, "logged value is cut: {shown:?}");
}

#[tokio::test]
async fn too_long_id_is_replaced() {
    let value = HeaderValue::from_str(&"x".repeat(129)).unwrap();
    assert_replaced(value, InvalidCorrelationId::TooLong { len: 129, max: 128 }).await;
}

#[tokio::test]
async fn id_with_control_character_is_replaced() {
    // Tab is the one control character a header value may hold.
    let value = HeaderValue::from_bytes(b"abc\tdef").unwrap();
    assert_replaced(
        value,
        InvalidCorrelationId::Forbidden {
            byte: b'\t',
            index: 3,
        },
    )
    .await;
}

#[tokio::test]
async fn id_with_non_ascii_bytes_is_replaced() {
    let value = HeaderValue::from_bytes("caf\u{e9}".as_bytes()).unwrap();
    assert_replaced(
        value,
        InvalidCorrelationId::Forbidden {
            byte: 0xc3,
            index: 3,
        },
    )
    .await;
}

#[tokio::test]
async fn empty_id_is_replaced() {
    assert_replaced(HeaderValue::from_static(""), InvalidCorrelationId::Empty).await;
}

#[tokio::test]
async fn id_with_separators_is_replaced() {
    for (value, byte, index) in [
        ("two words", b' ', 3),
        ("a\"quote", b'"', 1),
        ("a,b", b',', 1),
        ("k=v;x", b'=', 1),
    ] {
        assert_replaced(
            HeaderValue::from_static(value),
            InvalidCorrelationId::Forbidden { byte, index },
        )
        .await;
    }
}

#[tokio::test]
async fn long_invalid_id_is_logged_escaped_and_cut() {
    // `http` refuses ESC and other control characters in a header value; obs-text bytes pass.
    assert!(HeaderValue::from_bytes(b"\x1b[31mred").is_err());
    let (capture, _guard) = Capture::install();
    let (_, inner) = recording();
    let raw = format!("\u{e9}\u{e9}{}", "y".repeat(200));
    let _ = CorrelationIdLayer::new()
        .layer(inner)
        .oneshot(request_with(
            "x-correlation-id",
            HeaderValue::from_bytes(raw.as_bytes()).unwrap(),
        ))
        .await
        .unwrap();
    let events = capture.events_with_message("invalid incoming correlation id replaced");
    assert_eq!(events.len(), 1);
    let shown = &events[0].fields["rejected"];
    assert_eq!(shown, &format!("\\xc3\\xa9\\xc3\\xa9{}...", "y".repeat(28)));
}

#[tokio::test]
async fn every_value_dropped_is_named_in_an_event() {
    let (capture, _guard) = Capture::install();
    let (_, inner) = recording();
    let mut req = request_with("x-correlation-id", HeaderValue::from_static("kept-1"));
    for v in ["other-2", "bad value", "kept-1"] {
        req.headers_mut()
            .append("x-correlation-id", HeaderValue::from_static(v));
    }
    let res = CorrelationIdLayer::new()
        .layer(inner)
        .oneshot(req)
        .await
        .unwrap();
    assert_eq!(id_of(&res), "kept-1");
    let conflicting = capture.events_with_message("conflicting incoming correlation id dropped");
    assert_eq!(conflicting.len(), 1, "{:?}", capture.events());
    assert_eq!(conflicting[0].fields["dropped"], "other-2");
    assert_eq!(conflicting[0].fields["kept"], "kept-1");
    assert_eq!(conflicting[0].fields["header"], "x-correlation-id");
    let invalid = capture.events_with_message("invalid incoming correlation id replaced");
    assert_eq!(invalid.len(), 1, "{:?}", capture.events());
    assert_eq!(invalid[0].fields["rejected"], "bad\\x20value");
    assert_eq!(invalid[0].fields["replacement"], "kept-1");
}

#[tokio::test]
async fn id_is_a_field_of_the_span_around_the_inner_call() {
    let (capture, _guard) = Capture::install();
    let svc = CorrelationIdLayer::new().layer(service_fn(|_: Request<String>| {
        tracing::info!("in call");
        async {
            tokio::task::yield_now().await;
            tracing::info!("in handler");
            Ok::<_, Infallible>(Response::new(String::new()))
        }
    }));
    let res = svc
        .oneshot(request_with(
            "x-correlation-id",
            HeaderValue::from_static("span-7"),
        ))
        .await
        .unwrap();
    assert_eq!(id_of(&res), "span-7");
    tracing::info!("after");

    let spans = capture.spans();
    let ours: Vec<_> = spans
        .iter()
        .filter(|(name, _)| name == "correlation")
        .collect();
    assert_eq!(ours.len(), 1);
    assert_eq!(ours[0].1["correlation_id"], "span-7");
    for message in ["in call", "in handler"] {
        let events = capture.events_with_message(message);
        assert_eq!(events[0].span_ids, vec!["span-7".to_owned()], "{message}");
    }
    assert!(capture.events_with_message("after")[0].span_ids.is_empty());
}

#[tokio::test]
async fn generated_id_is_the_span_field_too() {
    let (capture, _guard) = Capture::install();
    let (_, inner) = recording();
    let res = CorrelationIdLayer::new()
        .layer(inner)
        .oneshot(Request::new(String::new()))
        .await
        .unwrap();
    let spans = capture.spans();
    let (_, fields) = spans
        .iter()
        .find(|(name, _)| name == "correlation")
        .unwrap();
    assert_eq!(fields["correlation_id"], id_of(&res));
}

#[tokio::test]
async fn spawned_task_logs_inside_the_request_span() {
    let (capture, _guard) = Capture::install();
    let svc = CorrelationIdLayer::new().layer(service_fn(|_: Request<String>| async {
        correlation::spawn(async { tracing::info!("in spawned task") })
            .await
            .unwrap();
        tokio::spawn(async { tracing::info!("in plain task") })
            .await
            .unwrap();
        Ok::<_, Infallible>(Response::new(String::new()))
    }));
    svc.oneshot(request_with(
        "x-correlation-id",
        HeaderValue::from_static("log-1"),
    ))
    .await
    .unwrap();
    let spawned = capture.events_with_message("in spawned task");
    assert_eq!(spawned[0].span_ids, vec!["log-1".to_owned()]);
    let plain = capture.events_with_message("in plain task");
    assert!(plain[0].span_ids.is_empty());
}

#[tokio::test]
async fn scope_opens_a_span_with_the_id() {
    let (capture, _guard) = Capture::install();
    CorrelationId::try_from("job-3")
        .unwrap()
        .scope(async { tracing::info!("in job") })
        .await;
    assert_eq!(
        capture.events_with_message("in job")[0].span_ids,
        vec!["job-3".to_owned()]
    );
}
