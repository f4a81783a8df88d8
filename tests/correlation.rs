#![cfg(feature = "correlation-id")]
//! The correlation-id layers, without a tracing subscriber: the tests that capture spans and
//! events are in `correlation_tracing.rs`, alone in their binary, because `tracing` caches
//! callsite interest per process.

mod correlation_support;

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::routing::get;
use axum::{Extension, Router};
use http::header::HeaderName;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use seawall::correlation::{
    self, CharSet, CorrelationId, CorrelationIdLayer, InvalidCorrelationId, MakeCorrelationId,
    PropagateCorrelationIdLayer, SetCorrelationId,
};
use seawall::error::BulkheadFull;
use seawall::http::RejectionResponseLayer;
use tower::{service_fn, BoxError, Layer, Service, ServiceBuilder, ServiceExt};

use correlation_support::{id_of, is_uuid_v4, recording, request_with};

const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

#[tokio::test]
async fn missing_id_is_generated_and_everywhere_the_same() {
    let (seen, inner) = recording();
    let svc = CorrelationIdLayer::new().layer(inner);
    let res = svc.oneshot(Request::new(String::new())).await.unwrap();
    let id = id_of(&res).to_owned();
    assert!(is_uuid_v4(&id), "{id}");
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.header.unwrap(), id.as_str());
    assert_eq!(seen.extension.unwrap(), id.as_str());
    assert_eq!(seen.current.unwrap(), id.as_str());
}

#[tokio::test]
async fn generated_ids_differ_per_request() {
    let (_, inner) = recording();
    let svc = CorrelationIdLayer::new().layer(inner);
    let a = svc
        .clone()
        .oneshot(Request::new(String::new()))
        .await
        .unwrap();
    let b = svc.oneshot(Request::new(String::new())).await.unwrap();
    assert_ne!(id_of(&a), id_of(&b));
}

#[tokio::test]
async fn valid_incoming_id_is_kept() {
    let (seen, inner) = recording();
    let svc = CorrelationIdLayer::new().layer(inner);
    let value = "Order_42.retry~1!#$%&'*+-^`|";
    let res = svc
        .oneshot(request_with(
            "x-correlation-id",
            HeaderValue::from_static(value),
        ))
        .await
        .unwrap();
    assert_eq!(id_of(&res), value);
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.header.unwrap(), value);
    assert_eq!(seen.extension.unwrap(), value);
    assert_eq!(seen.current.unwrap(), value);
}

#[tokio::test]
async fn id_of_exactly_max_len_is_kept() {
    let (_, inner) = recording();
    let svc = CorrelationIdLayer::new().layer(inner);
    let value = "a".repeat(128);
    let res = svc
        .oneshot(request_with(
            "x-correlation-id",
            HeaderValue::from_str(&value).unwrap(),
        ))
        .await
        .unwrap();
    assert_eq!(id_of(&res), value);
}

#[tokio::test]
async fn id_with_cr_lf_never_gets_through() {
    // `http` refuses CR and LF in any header value, so they cannot reach the layer as a header;
    // the layer's own check refuses them too, wherever an id comes from.
    assert!(HeaderValue::from_bytes(b"abc\r\nx-admin: 1").is_err());
    assert!(HeaderValue::from_bytes(b"abc\n").is_err());
    for value in ["abc\r\nx-admin: 1", "abc\r", "abc\n", "\r\n"] {
        assert!(matches!(
            CorrelationId::try_from(value),
            Err(InvalidCorrelationId::Forbidden { .. })
        ));
        assert!(CorrelationId::try_from(value.to_owned()).is_err());
    }
    // Percent-encoded, they are plain visible characters and harmless.
    assert!(CorrelationId::try_from("abc%0D%0A").is_ok());
}

#[tokio::test]
async fn id_is_echoed_on_rejection_responses() {
    let svc = ServiceBuilder::new()
        .layer(CorrelationIdLayer::new())
        .layer(RejectionResponseLayer::new())
        .service(service_fn(|_: Request<String>| async {
            Err::<Response<String>, BoxError>(BulkheadFull::new(None).into())
        }));
    let res = svc
        .clone()
        .oneshot(request_with(
            "x-correlation-id",
            HeaderValue::from_static("kept-1"),
        ))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(id_of(&res), "kept-1");

    let res = svc.oneshot(Request::new(String::new())).await.unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(is_uuid_v4(id_of(&res)));
}

#[tokio::test]
async fn id_is_echoed_on_error_responses_of_an_axum_handler() {
    let app = Router::new()
        .route(
            "/",
            get(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "broken") }),
        )
        .layer(CorrelationIdLayer::new());
    let req = Request::get("/")
        .header("x-correlation-id", "err-1")
        .body(Body::empty())
        .unwrap();
    let res = app.oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(res.headers()["x-correlation-id"], "err-1");
}

#[tokio::test]
async fn echo_overwrites_a_value_the_inner_service_set() {
    let svc = CorrelationIdLayer::new().layer(service_fn(|_: Request<String>| async {
        let mut res = Response::new(String::new());
        res.headers_mut().insert(
            "x-correlation-id",
            HeaderValue::from_static("downstream-raw"),
        );
        Ok::<_, Infallible>(res)
    }));
    let res = svc
        .oneshot(request_with(
            "x-correlation-id",
            HeaderValue::from_static("mine"),
        ))
        .await
        .unwrap();
    assert_eq!(res.headers().get_all("x-correlation-id").iter().count(), 1);
    assert_eq!(id_of(&res), "mine");
}

#[tokio::test]
async fn inner_errors_pass_through_unchanged() {
    let svc = CorrelationIdLayer::new().layer(service_fn(|_: Request<String>| async {
        Err::<Response<String>, BoxError>("boom".into())
    }));
    let err = svc.oneshot(Request::new(String::new())).await.unwrap_err();
    assert_eq!(err.to_string(), "boom");
}

#[tokio::test]
async fn several_header_names_in_order_of_preference() {
    let layer = CorrelationIdLayer::builder()
        .header_names([HeaderName::from_static("x-correlation-id"), X_REQUEST_ID])
        .build()
        .unwrap();

    // Only the second name: the id, passed on and echoed under the first name only.
    let (seen, inner) = recording();
    let res = layer
        .layer(inner)
        .oneshot(request_with(
            "x-request-id",
            HeaderValue::from_static("rid-1"),
        ))
        .await
        .unwrap();
    assert_eq!(id_of(&res), "rid-1");
    assert!(res.headers().get("x-request-id").is_none());
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.extension.unwrap(), "rid-1");
    assert_eq!(seen.headers["x-correlation-id"], "rid-1");
    assert!(seen.headers.get("x-request-id").is_none());

    // Both: the first name wins.
    let (seen, inner) = recording();
    let mut req = request_with("x-request-id", HeaderValue::from_static("rid-2"));
    req.headers_mut()
        .insert("x-correlation-id", HeaderValue::from_static("cid-2"));
    let res = layer.layer(inner).oneshot(req).await.unwrap();
    assert_eq!(id_of(&res), "cid-2");
    assert!(res.headers().get("x-request-id").is_none());
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.current.unwrap(), "cid-2");
    assert!(seen.headers.get("x-request-id").is_none(), "rid-2 dropped");

    // The first is invalid, the second valid: the second wins and replaces the first.
    let (seen, inner) = recording();
    let mut req = request_with("x-request-id", HeaderValue::from_static("rid-3"));
    req.headers_mut()
        .insert("x-correlation-id", HeaderValue::from_static("bad value"));
    let res = layer.layer(inner).oneshot(req).await.unwrap();
    assert_eq!(id_of(&res), "rid-3");
    assert!(res.headers().get("x-request-id").is_none());
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.extension.unwrap(), "rid-3");
    assert_eq!(seen.headers["x-correlation-id"], "rid-3");
    assert!(seen.headers.get("x-request-id").is_none());
    // rid-2 (a valid id not chosen) and "bad value" (refused).
    assert_eq!(layer.handle().rejected(), 2);

    // Neither: a new id under the first name.
    let (seen, inner) = recording();
    let res = layer
        .layer(inner)
        .oneshot(Request::new(String::new()))
        .await
        .unwrap();
    assert!(is_uuid_v4(id_of(&res)));
    assert!(res.headers().get("x-request-id").is_none());
    assert_eq!(seen.lock().unwrap().header.clone().unwrap(), id_of(&res));
}

#[tokio::test]
async fn every_value_of_a_repeated_header_is_checked_and_only_the_first_valid_one_passes() {
    let layer = CorrelationIdLayer::new();
    let hostile = [
        HeaderValue::from_static("evil value\" injected=1"),
        HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap(),
        HeaderValue::from_static(""),
    ];
    // A valid id first, then hostile values and a second, different valid id.
    let (seen, inner) = recording();
    let mut req = request_with("x-correlation-id", HeaderValue::from_static("good-1"));
    for v in &hostile {
        req.headers_mut().append("x-correlation-id", v.clone());
    }
    req.headers_mut()
        .append("x-correlation-id", HeaderValue::from_static("good-2"));
    req.headers_mut()
        .append("x-correlation-id", HeaderValue::from_static("good-1"));
    let res = layer.layer(inner).oneshot(req).await.unwrap();
    let seen = seen.lock().unwrap().clone();
    let values: Vec<_> = seen.headers.get_all("x-correlation-id").iter().collect();
    assert_eq!(
        values,
        ["good-1"],
        "the handler sees the first valid id only"
    );
    assert_eq!(seen.extension.unwrap(), "good-1");
    assert_eq!(res.headers().get_all("x-correlation-id").iter().count(), 1);
    assert_eq!(id_of(&res), "good-1");
    // Three hostile values and good-2; the repeat of good-1 is not a drop.
    assert_eq!(layer.handle().rejected(), 4);

    // Hostile values first: the first valid one after them wins all the same.
    let (seen, inner) = recording();
    let mut req = request_with("x-correlation-id", hostile[0].clone());
    req.headers_mut()
        .append("x-correlation-id", hostile[1].clone());
    req.headers_mut()
        .append("x-correlation-id", HeaderValue::from_static("good-3"));
    let res = layer.layer(inner).oneshot(req).await.unwrap();
    let seen = seen.lock().unwrap().clone();
    let values: Vec<_> = seen.headers.get_all("x-correlation-id").iter().collect();
    assert_eq!(values, ["good-3"]);
    assert_eq!(id_of(&res), "good-3");

    // Only hostile values: one new id.
    let (seen, inner) = recording();
    let mut req = request_with("x-correlation-id", hostile[0].clone());
    req.headers_mut()
        .append("x-correlation-id", hostile[1].clone());
    let res = layer.layer(inner).oneshot(req).await.unwrap();
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.headers.get_all("x-correlation-id").iter().count(), 1);
    assert!(is_uuid_v4(id_of(&res)));
    assert_eq!(seen.header.unwrap(), id_of(&res));
}

#[tokio::test]
async fn every_configured_name_is_checked_and_the_response_carries_one_id_under_the_first() {
    let layer = CorrelationIdLayer::builder()
        .header_names([HeaderName::from_static("x-correlation-id"), X_REQUEST_ID])
        .build()
        .unwrap();
    // An invalid value under the second name, next to a valid first: dropped, not passed on.
    let (seen, inner) = recording();
    let mut req = request_with("x-correlation-id", HeaderValue::from_static("cid"));
    req.headers_mut()
        .append("x-request-id", HeaderValue::from_static("evil value"));
    req.headers_mut()
        .append("x-request-id", HeaderValue::from_static("rid"));
    let res = layer.layer(inner).oneshot(req).await.unwrap();
    let seen = seen.lock().unwrap().clone();
    assert!(seen.headers.get("x-request-id").is_none());
    assert_eq!(seen.headers["x-correlation-id"], "cid");
    assert_eq!(id_of(&res), "cid");
    assert_eq!(layer.handle().rejected(), 2);

    // The inner service puts ids of its own under both names: the echo leaves one.
    let svc = layer.layer(service_fn(|_: Request<String>| async {
        let mut res = Response::new(String::new());
        res.headers_mut()
            .insert("x-correlation-id", HeaderValue::from_static("inner-1"));
        res.headers_mut()
            .insert("x-request-id", HeaderValue::from_static("inner-2"));
        Ok::<_, Infallible>(res)
    }));
    let res = svc
        .oneshot(request_with(
            "x-request-id",
            HeaderValue::from_static("rid"),
        ))
        .await
        .unwrap();
    assert_eq!(res.headers().get_all("x-correlation-id").iter().count(), 1);
    assert_eq!(id_of(&res), "rid");
    assert!(res.headers().get("x-request-id").is_none());
}

#[tokio::test]
async fn custom_header_name_generator_and_rules() {
    #[derive(Clone, Default)]
    struct Counter(Arc<AtomicU64>);
    impl MakeCorrelationId for Counter {
        fn make_correlation_id<B>(&mut self, _: &Request<B>) -> CorrelationId {
            let n = self.0.fetch_add(1, Ordering::Relaxed);
            CorrelationId::try_from(format!("edge-{n}")).unwrap()
        }
    }
    let layer = CorrelationIdLayer::builder()
        .header_name(X_REQUEST_ID)
        .max_len(8)
        .allowed_chars(CharSet::alphanumeric())
        .make_id(Counter::default())
        .build()
        .unwrap();
    let call = |value: &'static str| {
        let svc = layer.layer(service_fn(|_: Request<String>| async {
            Ok::<_, Infallible>(Response::new(String::new()))
        }));
        async move {
            let res = svc
                .oneshot(request_with(
                    "x-request-id",
                    HeaderValue::from_static(value),
                ))
                .await
                .unwrap();
            res.headers()["x-request-id"].to_str().unwrap().to_owned()
        }
    };
    assert_eq!(call("abc123").await, "abc123");
    assert_eq!(call("abc-123").await, "edge-0"); // '-' is not alphanumeric
    assert_eq!(call("abcdefghi").await, "edge-1"); // 9 > 8 bytes
    assert_eq!(layer.handle().rejected(), 2);
}

#[test]
fn builder_refuses_bad_settings() {
    let err = CorrelationIdLayer::builder()
        .max_len(0)
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "max_len");
    let err = CorrelationIdLayer::builder()
        .max_len(1025)
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "max_len");
    assert!(CorrelationIdLayer::builder().max_len(1024).build().is_ok());
    let err = CorrelationIdLayer::builder()
        .header_names([])
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "header_names");
    let err = CorrelationIdLayer::builder()
        .header_names([X_REQUEST_ID, X_REQUEST_ID])
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "header_names");
    let err = CorrelationIdLayer::builder()
        .header_names((0..9).map(|i| HeaderName::try_from(format!("x-id-{i}")).unwrap()))
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "header_names");
    assert_eq!(
        CharSet::from_bytes(b"ab c").unwrap_err().field(),
        "allowed_chars"
    );
    assert_eq!(
        CharSet::from_bytes(b"").unwrap_err().field(),
        "allowed_chars"
    );
    assert!(CharSet::from_bytes("é".as_bytes()).is_err());
}

#[tokio::test]
async fn clones_and_layered_services_share_one_handle() {
    let layer = CorrelationIdLayer::new();
    let (_, inner) = recording();
    let a = layer.layer(inner.clone());
    let b = a.clone();
    let c = layer.layer(inner);
    for svc in [a, b.clone(), c] {
        svc.oneshot(request_with(
            "x-correlation-id",
            HeaderValue::from_static(""),
        ))
        .await
        .unwrap();
    }
    assert_eq!(layer.handle().rejected(), 3);
    assert_eq!(b.handle().rejected(), 3);
}

#[tokio::test]
async fn current_is_none_outside_a_request() {
    assert_eq!(CorrelationId::current(), None);
    let (_, inner) = recording();
    let _ = SetCorrelationId::new(inner)
        .oneshot(Request::new(String::new()))
        .await
        .unwrap();
    assert_eq!(CorrelationId::current(), None);
}

/// A client that records the `x-correlation-id` of every request it sends.
/// The ids a recording client sent, in order.
type Sent = Arc<Mutex<Vec<Option<HeaderValue>>>>;

fn recording_client() -> (
    Sent,
    impl Service<
            Request<String>,
            Response = Response<String>,
            Error = Infallible,
            Future = impl Send,
        > + Clone
        + Send,
) {
    let sent = Arc::new(Mutex::new(Vec::new()));
    let client = {
        let sent = Arc::clone(&sent);
        service_fn(move |req: Request<String>| {
            sent.lock()
                .unwrap()
                .push(req.headers().get("x-correlation-id").cloned());
            async { Ok::<_, Infallible>(Response::new(String::new())) }
        })
    };
    (sent, client)
}

#[tokio::test]
async fn propagation_sets_the_current_id_and_keeps_an_existing_one() {
    let (sent, client) = recording_client();
    let client = PropagateCorrelationIdLayer::new().layer(client);
    let id = CorrelationId::try_from("outer-1").unwrap();
    id.scope(async {
        client
            .clone()
            .oneshot(Request::new(String::new()))
            .await
            .unwrap();
        let req = request_with("x-correlation-id", HeaderValue::from_static("explicit"));
        client.clone().oneshot(req).await.unwrap();
    })
    .await;
    // Outside any request: nothing to propagate.
    client
        .clone()
        .oneshot(Request::new(String::new()))
        .await
        .unwrap();
    // An id in the request's extensions is used when there is no header.
    let mut req = Request::new(String::new());
    req.extensions_mut()
        .insert(CorrelationId::try_from("from-ext").unwrap());
    client.oneshot(req).await.unwrap();

    let sent = sent.lock().unwrap().clone();
    assert_eq!(
        sent,
        vec![
            Some(HeaderValue::from_static("outer-1")),
            Some(HeaderValue::from_static("explicit")),
            None,
            Some(HeaderValue::from_static("from-ext")),
        ]
    );
}

#[tokio::test]
async fn propagation_with_another_header_name() {
    let sent = Arc::new(Mutex::new(None));
    let client = {
        let sent = Arc::clone(&sent);
        PropagateCorrelationIdLayer::with_header(X_REQUEST_ID).layer(service_fn(
            move |req: Request<String>| {
                *sent.lock().unwrap() = req.headers().get("x-request-id").cloned();
                async { Ok::<_, Infallible>(Response::new(String::new())) }
            },
        ))
    };
    CorrelationId::try_from("rid-9")
        .unwrap()
        .scope(client.oneshot(Request::new(String::new())))
        .await
        .unwrap();
    assert_eq!(sent.lock().unwrap().clone().unwrap(), "rid-9");
}

#[tokio::test]
async fn id_is_kept_across_a_task_spawned_with_the_helper() {
    let (sent, client) = recording_client();
    let client = PropagateCorrelationIdLayer::new().layer(client);
    let (seen, inner) = {
        let seen = Arc::new(Mutex::new((None, None)));
        let seen2 = Arc::clone(&seen);
        let svc = service_fn(move |_: Request<String>| {
            let seen = Arc::clone(&seen2);
            let client = client.clone();
            async move {
                let with_helper = correlation::spawn(async move {
                    tokio::task::yield_now().await;
                    client.oneshot(Request::new(String::new())).await.unwrap();
                    CorrelationId::current()
                })
                .await
                .unwrap();
                let plain = tokio::spawn(async { CorrelationId::current() })
                    .await
                    .unwrap();
                *seen.lock().unwrap() = (with_helper, plain);
                Ok::<_, Infallible>(Response::new(String::new()))
            }
        });
        (seen, svc)
    };
    let res = CorrelationIdLayer::new()
        .layer(inner)
        .oneshot(request_with(
            "x-correlation-id",
            HeaderValue::from_static("task-1"),
        ))
        .await
        .unwrap();
    assert_eq!(id_of(&res), "task-1");
    let (with_helper, plain) = seen.lock().unwrap().clone();
    assert_eq!(with_helper.unwrap(), "task-1");
    assert_eq!(plain, None, "a plain spawn does not carry the id");
    assert_eq!(sent.lock().unwrap()[0].clone().unwrap(), "task-1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_current_carries_the_id_into_a_join_set() {
    let id = CorrelationId::try_from("set-1").unwrap();
    let seen = id
        .clone()
        .scope(async {
            let mut set = tokio::task::JoinSet::new();
            for _ in 0..4 {
                set.spawn(correlation::with_current(async {
                    CorrelationId::current()
                }));
            }
            set.join_all().await
        })
        .await;
    assert_eq!(seen, vec![Some(id); 4]);
}

/// Starts an axum server on 127.0.0.1:0 that answers with the `x-correlation-id` it received.
async fn downstream() -> std::net::SocketAddr {
    let app = Router::new().route(
        "/echo",
        get(|headers: HeaderMap| async move {
            headers
                .get("x-correlation-id")
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_else(|| "<none>".to_owned())
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

#[tokio::test]
async fn id_is_propagated_to_an_outbound_call_made_inside_an_axum_handler() {
    let addr = downstream().await;
    let client = ServiceBuilder::new()
        .layer(PropagateCorrelationIdLayer::new())
        .service(Client::builder(TokioExecutor::new()).build_http::<Body>());

    async fn call_downstream<C>(client: C, url: String) -> String
    where
        C: Service<Request<Body>, Response = Response<hyper::body::Incoming>>,
        C::Error: std::fmt::Debug,
    {
        let req = Request::get(url).body(Body::empty()).unwrap();
        let res = client.oneshot(req).await.unwrap();
        let body = res.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(body.to_vec()).unwrap()
    }

    let app = Router::new()
        .route(
            "/direct",
            get({
                let client = client.clone();
                move || call_downstream(client, format!("http://{addr}/echo"))
            }),
        )
        .route(
            "/spawned",
            get({
                let client = client.clone();
                move |Extension(id): Extension<CorrelationId>| async move {
                    let seen =
                        correlation::spawn(call_downstream(client, format!("http://{addr}/echo")))
                            .await
                            .unwrap();
                    assert_eq!(seen, id.as_str());
                    seen
                }
            }),
        )
        .layer(CorrelationIdLayer::new());

    for (path, sent) in [
        ("/direct", Some("edge-abc")),
        ("/direct", None),
        ("/spawned", Some("edge-def")),
    ] {
        let mut req = Request::get(path);
        if let Some(sent) = sent {
            req = req.header("x-correlation-id", sent);
        }
        let res = app
            .clone()
            .oneshot(req.body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let echoed = res.headers()["x-correlation-id"]
            .to_str()
            .unwrap()
            .to_owned();
        let body = res.into_body().collect().await.unwrap().to_bytes();
        let downstream_saw = String::from_utf8(body.to_vec()).unwrap();
        assert_eq!(downstream_saw, echoed, "{path}");
        match sent {
            Some(sent) => assert_eq!(echoed, sent),
            None => assert!(is_uuid_v4(&echoed)),
        }
    }
}

#[test]
fn services_are_send_sync_static_and_clone() {
    fn check<T: Send + Sync + 'static + Clone>(_: &T) {}
    let (_, inner) = recording();
    check(&CorrelationIdLayer::new());
    check(&CorrelationIdLayer::new().layer(inner.clone()));
    check(&PropagateCorrelationIdLayer::new().layer(inner));
    check(&CorrelationId::new_v4());
    fn future_is_send<F: Send>(_: &F) {}
    let (_, inner) = recording();
    let mut svc = CorrelationIdLayer::new().layer(inner);
    future_is_send(&svc.call(Request::new(String::new())));
}

#[tokio::test]
async fn inner_call_sees_the_extension_and_its_future_the_current_id() {
    let seen = Arc::new(Mutex::new((None, None)));
    let svc = {
        let seen = Arc::clone(&seen);
        CorrelationIdLayer::new().layer(service_fn(move |req: Request<String>| {
            let in_call = req.extensions().get::<CorrelationId>().cloned();
            let seen = Arc::clone(&seen);
            async move {
                *seen.lock().unwrap() = (in_call, CorrelationId::current());
                Ok::<_, Infallible>(Response::new(String::new()))
            }
        }))
    };
    svc.oneshot(request_with(
        "x-correlation-id",
        HeaderValue::from_static("c-1"),
    ))
    .await
    .unwrap();
    let (in_call, in_future) = seen.lock().unwrap().clone();
    assert_eq!(in_call.unwrap(), "c-1");
    assert_eq!(in_future.unwrap(), "c-1");
}

/// Records the current id when dropped.
struct CurrentOnDrop(Arc<Mutex<Option<Option<CorrelationId>>>>);

impl Drop for CurrentOnDrop {
    fn drop(&mut self) {
        *self.0.lock().unwrap() = Some(CorrelationId::current());
    }
}

#[tokio::test]
async fn inner_future_dropped_before_it_completes_still_sees_the_id() {
    let seen = Arc::new(Mutex::new(None));
    let svc = {
        let seen = Arc::clone(&seen);
        CorrelationIdLayer::new().layer(service_fn(move |_: Request<String>| {
            let guard = CurrentOnDrop(Arc::clone(&seen));
            async move {
                let _guard = guard;
                std::future::pending::<()>().await;
                Ok::<_, Infallible>(Response::new(String::new()))
            }
        }))
    };
    let mut call = Box::pin(svc.oneshot(request_with(
        "x-correlation-id",
        HeaderValue::from_static("gone-1"),
    )));
    assert!(futures::poll!(&mut call).is_pending());
    drop(call);
    assert_eq!(seen.lock().unwrap().clone().unwrap().unwrap(), "gone-1");
    assert_eq!(CorrelationId::current(), None);
}

#[tokio::test]
async fn scopes_nest_and_a_dropped_scope_drops_its_future_with_its_id() {
    let outer = CorrelationId::try_from("outer-1").unwrap();
    let inner = CorrelationId::try_from("inner-1").unwrap();
    let (in_inner, after_inner) = outer
        .clone()
        .scope(async {
            let in_inner = inner
                .clone()
                .scope(async { CorrelationId::current() })
                .await;
            (in_inner, CorrelationId::current())
        })
        .await;
    assert_eq!(in_inner, Some(inner.clone()));
    assert_eq!(after_inner, Some(outer));
    assert_eq!(CorrelationId::current(), None);

    let seen = Arc::new(Mutex::new(None));
    let guard = CurrentOnDrop(Arc::clone(&seen));
    let mut scoped = Box::pin(inner.clone().scope(async move {
        let _guard = guard;
        std::future::pending::<()>().await;
    }));
    assert!(futures::poll!(&mut scoped).is_pending());
    drop(scoped);
    assert_eq!(seen.lock().unwrap().clone().unwrap(), Some(inner));
}

/// The id in the response's extensions, as an outer layer would read it.
fn extension_of<B>(res: &Response<B>) -> Option<&str> {
    res.extensions()
        .get::<CorrelationId>()
        .map(|id| id.as_str())
}

#[tokio::test]
async fn the_response_extensions_carry_the_same_id_as_the_echo_kept_or_generated() {
    let (_, inner) = recording();
    let svc = CorrelationIdLayer::builder()
        .response_extension(true)
        .build()
        .unwrap()
        .layer(inner);
    let kept = svc
        .clone()
        .oneshot(request_with(
            "x-correlation-id",
            HeaderValue::from_static("order-42"),
        ))
        .await
        .unwrap();
    assert_eq!(extension_of(&kept), Some("order-42"));
    let new = svc.oneshot(Request::new(String::new())).await.unwrap();
    let id = id_of(&new).to_owned();
    assert!(is_uuid_v4(&id), "{id}");
    assert_eq!(extension_of(&new), Some(id.as_str()));
}

#[tokio::test]
async fn an_outer_layer_reads_the_id_from_the_extensions_of_rejection_responses() {
    let seen = Arc::new(Mutex::new(None));
    let outer = {
        let seen = seen.clone();
        tower::layer::layer_fn(move |inner| {
            let seen = seen.clone();
            tower::util::MapResponse::new(inner, move |res: Response<String>| {
                *seen.lock().unwrap() = extension_of(&res).map(str::to_owned);
                res
            })
        })
    };
    let svc = ServiceBuilder::new()
        .layer(outer)
        .layer(
            CorrelationIdLayer::builder()
                .response_extension(true)
                .build()
                .unwrap(),
        )
        .layer(RejectionResponseLayer::new())
        .service(service_fn(|_: Request<String>| async {
            Err::<Response<String>, BoxError>(BulkheadFull::new(None).into())
        }));
    let res = svc
        .oneshot(request_with(
            "x-correlation-id",
            HeaderValue::from_static("kept-2"),
        ))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(seen.lock().unwrap().as_deref(), Some("kept-2"));
}

#[tokio::test]
async fn the_response_extension_is_off_by_default_and_the_echo_stays() {
    let (_, inner) = recording();
    let svc = CorrelationIdLayer::new().layer(inner);
    let res = svc
        .oneshot(request_with(
            "x-correlation-id",
            HeaderValue::from_static("order-43"),
        ))
        .await
        .unwrap();
    assert_eq!(extension_of(&res), None);
    assert_eq!(id_of(&res), "order-43");
}
