#![cfg(feature = "correlation-id")]
//! Arbitrary header bytes through the server layer: never a panic, and the id that comes out
//! is always valid, equal to the input when the input was valid.

mod correlation_support;

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use futures::FutureExt;
use http::{HeaderValue, Request, Response};
use proptest::prelude::*;
use seawall::correlation::{CharSet, CorrelationId, CorrelationIdLayer};
use tower::{service_fn, Layer, Service};

use correlation_support::{is_uuid_v4, is_valid_default};

/// Runs one request with `value` (if `http` accepts it as a header value) through a layer and
/// returns (what the inner service saw as extension, request header, response header).
fn run(
    layer: &CorrelationIdLayer,
    value: Option<HeaderValue>,
) -> (CorrelationId, HeaderValue, HeaderValue) {
    let seen = Arc::new(Mutex::new(None));
    let mut svc = {
        let seen = Arc::clone(&seen);
        layer.layer(service_fn(move |req: Request<()>| {
            let seen = Arc::clone(&seen);
            async move {
                *seen.lock().unwrap() = Some((
                    req.extensions().get::<CorrelationId>().cloned().unwrap(),
                    req.headers()["x-correlation-id"].clone(),
                    CorrelationId::current().unwrap(),
                ));
                Ok::<_, Infallible>(Response::new(()))
            }
        }))
    };
    let mut req = Request::new(());
    if let Some(value) = value {
        req.headers_mut().insert("x-correlation-id", value);
    }
    let res = svc
        .call(req)
        .now_or_never()
        .expect("ready at once")
        .unwrap();
    let (ext, header, current) = seen.lock().unwrap().take().unwrap();
    assert_eq!(ext, current);
    (ext, header, res.headers()["x-correlation-id"].clone())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_header_bytes_always_give_a_valid_id(
        bytes in prop::collection::vec(any::<u8>(), 0..300),
    ) {
        let layer = CorrelationIdLayer::new();
        let value = HeaderValue::from_bytes(&bytes).ok();
        let (ext, header, echoed) = run(&layer, value.clone());
        for out in [&ext.to_header_value(), &header, &echoed] {
            prop_assert!(is_valid_default(out.as_bytes()), "invalid output {out:?}");
        }
        prop_assert_eq!(&ext.to_header_value(), &header);
        prop_assert_eq!(&header, &echoed);
        if value.is_some() && is_valid_default(&bytes) {
            prop_assert_eq!(echoed.as_bytes(), &bytes[..]);
        } else {
            prop_assert_eq!(echoed.len(), 36);
            prop_assert_eq!(layer.handle().rejected(), u64::from(value.is_some()));
        }
    }

    #[test]
    fn mostly_valid_ids_with_one_stray_byte(
        prefix in "[a-zA-Z0-9._~-]{0,140}",
        stray in any::<u8>(),
        at in any::<prop::sample::Index>(),
    ) {
        let mut bytes = prefix.into_bytes();
        let i = at.index(bytes.len() + 1);
        bytes.insert(i, stray);
        let layer = CorrelationIdLayer::new();
        let value = HeaderValue::from_bytes(&bytes).ok();
        let (_, _, echoed) = run(&layer, value.clone());
        prop_assert!(is_valid_default(echoed.as_bytes()));
        prop_assert_eq!(
            echoed.as_bytes() == &bytes[..],
            value.is_some() && is_valid_default(&bytes)
        );
    }

    #[test]
    fn parsing_agrees_with_a_reference_model(
        s in any::<String>(),
        bytes in prop::collection::vec(any::<u8>(), 0..200),
    ) {
        prop_assert_eq!(
            CorrelationId::try_from(s.as_str()).is_ok(),
            is_valid_default(s.as_bytes())
        );
        if let Ok(value) = HeaderValue::from_bytes(&bytes) {
            prop_assert_eq!(CorrelationId::try_from(value).is_ok(), is_valid_default(&bytes));
        }
    }

    #[test]
    fn custom_rules_are_applied_exactly(
        allowed in prop::collection::vec(0x21u8..=0x7e, 1..20),
        max_len in 1usize..40,
        bytes in prop::collection::vec(any::<u8>(), 0..50),
    ) {
        let chars = CharSet::from_bytes(&allowed).unwrap();
        let layer = CorrelationIdLayer::builder()
            .max_len(max_len)
            .allowed_chars(chars)
            .build()
            .unwrap();
        let value = HeaderValue::from_bytes(&bytes).ok();
        let (_, _, echoed) = run(&layer, value.clone());
        let valid = value.is_some()
            && (1..=max_len).contains(&bytes.len())
            && bytes.iter().all(|b| allowed.contains(b));
        prop_assert_eq!(echoed.as_bytes() == &bytes[..], valid);
    }
}

/// The names a fuzzed request may use: the layer reads the first `configured` of them; the
/// last is never configured and must pass through untouched.
const NAMES: [&str; 4] = ["x-correlation-id", "x-request-id", "x-trace-id", "x-other"];

/// A header value: mostly valid ids (some repeated), and hostile bytes.
fn fuzz_value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => "[a-c]{1,3}".prop_map(String::into_bytes),
        2 => prop::collection::vec(any::<u8>(), 0..12),
        1 => prop::collection::vec(0x20u8..0x7f, 0..8),
        1 => Just(vec![b'x'; 129]),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(10_000))]

    /// Any mix of values under the configured names (and one other): the handler sees one
    /// valid id, the first valid value in order of preference or a new one, as the only value
    /// of the first name; the response carries it once, under the first name only; every other
    /// value is counted as dropped, and the unconfigured header is left alone.
    #[test]
    fn any_values_under_any_names_give_one_valid_id_under_the_first_name(
        configured in 1usize..=3,
        headers in prop::collection::vec((0usize..4, fuzz_value()), 0..6),
    ) {
        let names: Vec<_> = NAMES[..configured]
            .iter()
            .map(|n| http::header::HeaderName::from_static(n))
            .collect();
        let layer = CorrelationIdLayer::builder()
            .header_names(names.clone())
            .build()
            .unwrap();
        let mut req = Request::new(());
        for (at, bytes) in &headers {
            if let Ok(value) = HeaderValue::from_bytes(bytes) {
                req.headers_mut().append(NAMES[*at], value);
            }
        }
        let sent = req.headers().clone();
        let seen = Arc::new(Mutex::new(None));
        let svc = {
            let seen = Arc::clone(&seen);
            layer.layer(service_fn(move |req: Request<()>| {
                *seen.lock().unwrap() = Some((
                    req.headers().clone(),
                    req.extensions().get::<CorrelationId>().cloned().unwrap(),
                ));
                async { Ok::<_, Infallible>(Response::new(())) }
            }))
        };
        let res = tower::ServiceExt::oneshot(svc, req)
            .now_or_never()
            .expect("ready at once")
            .unwrap();
        let (seen, id) = seen.lock().unwrap().take().unwrap();

        // The id: the first valid value, names in order, each name's values in order.
        let first_valid = names.iter().find_map(|n| {
            sent.get_all(n).iter().find(|v| is_valid_default(v.as_bytes())).cloned()
        });
        match &first_valid {
            Some(v) => prop_assert_eq!(id.as_str().as_bytes(), v.as_bytes()),
            None => prop_assert!(is_uuid_v4(id.as_str()), "{}", id),
        }
        prop_assert!(is_valid_default(id.as_str().as_bytes()));
        // The handler and the client see it once, under the first name only.
        let id_value = id.to_header_value();
        for headers in [&seen, res.headers()] {
            let values: Vec<_> = headers.get_all(&names[0]).iter().collect();
            prop_assert_eq!(values, vec![&id_value]);
            for name in &names[1..] {
                prop_assert!(headers.get(name).is_none());
            }
        }
        // What was not the id was dropped and counted; other headers pass untouched.
        let dropped = names
            .iter()
            .flat_map(|n| sent.get_all(n).iter())
            .filter(|v| v.as_bytes() != id.as_str().as_bytes())
            .count();
        prop_assert_eq!(layer.handle().rejected(), dropped as u64);
        let others: Vec<_> = sent.get_all(NAMES[3]).iter().collect();
        prop_assert_eq!(seen.get_all(NAMES[3]).iter().collect::<Vec<_>>(), others);
    }
}
