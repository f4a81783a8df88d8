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

use correlation_support::is_valid_default;

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
