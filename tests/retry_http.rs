//! HTTP behaviour of the retry layer: methods, statuses, `Retry-After`, body replay.
#![cfg(all(feature = "retry", feature = "http"))]

use bytes::Bytes;
use futures::stream;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use seawall::retry::http::ReplayBody;
use seawall::retry::{Jitter, RetryLayer};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::time::Instant;
use tower::{service_fn, BoxError, Layer, ServiceExt};

/// What each attempt saw: when it started and the body it read.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<(Instant, Bytes)>>>);

impl Seen {
    fn count(&self) -> usize {
        self.0.lock().unwrap().len()
    }
    fn bodies(&self) -> Vec<Bytes> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .map(|(_, b)| b.clone())
            .collect()
    }
    fn gaps(&self) -> Vec<Duration> {
        let v = self.0.lock().unwrap();
        v.windows(2).map(|w| w[1].0 - w[0].0).collect()
    }
}

fn status(code: u16, retry_after: Option<&str>) -> Response<String> {
    let mut res = Response::builder().status(code);
    if let Some(v) = retry_after {
        res = res.header("retry-after", v);
    }
    res.body(String::new()).unwrap()
}

/// A server that answers `script[n]` to attempt `n` (the last entry after that), reading the
/// whole body first.
fn server<B>(
    seen: &Seen,
    script: Vec<Response<String>>,
) -> impl tower::Service<Request<B>, Response = Response<String>, Error = BoxError, Future = impl Send>
       + Clone
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let seen = seen.clone();
    let script = Arc::new(script);
    service_fn(move |req: Request<B>| {
        let seen = seen.clone();
        let script = script.clone();
        async move {
            let start = Instant::now();
            let body = req
                .into_body()
                .collect()
                .await
                .map_err(Into::into)?
                .to_bytes();
            let n = {
                let mut v = seen.0.lock().unwrap();
                v.push((start, body));
                v.len() - 1
            };
            Ok::<_, BoxError>(script[n.min(script.len() - 1)].clone())
        }
    })
}

fn layer_none() -> seawall::retry::RetryLayerBuilder<seawall::retry::http::HttpPolicy> {
    RetryLayer::builder()
        .http()
        .max_attempts(4)
        .jitter(Jitter::None)
        .initial_delay(Duration::from_millis(100))
}

#[tokio::test(start_paused = true)]
async fn retryable_statuses_are_retried_and_others_are_not() {
    for (code, retried) in [
        (502, true),
        (503, true),
        (504, true),
        (429, true),
        (500, false),
        (404, false),
        (200, false),
    ] {
        let seen = Seen::default();
        let svc = layer_none().build().unwrap().layer(server::<String>(
            &seen,
            vec![status(code, None), status(200, None)],
        ));
        let res = svc.oneshot(Request::new(String::new())).await.unwrap();
        assert_eq!(seen.count(), if retried { 2 } else { 1 }, "{code}");
        assert_eq!(res.status(), if retried { 200 } else { code }, "{code}");
    }
}

#[tokio::test(start_paused = true)]
async fn post_is_not_retried_unless_it_has_an_idempotency_key_and_the_user_opted_in() {
    let post = |key: bool| {
        let mut b = Request::builder().method(Method::POST);
        if key {
            b = b.header("idempotency-key", "k-1");
        }
        b.body(String::from("order")).unwrap()
    };
    let script = || vec![status(503, None), status(200, None)];

    let seen = Seen::default();
    let svc = layer_none().build().unwrap().layer(server(&seen, script()));
    let res = svc.clone().oneshot(post(true)).await.unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(seen.count(), 1, "no opt-in: sent once even with a key");

    let layer = layer_none().retry_with_idempotency_key().build().unwrap();
    let seen = Seen::default();
    let svc = layer.layer(server(&seen, script()));
    assert_eq!(svc.oneshot(post(false)).await.unwrap().status(), 503);
    assert_eq!(seen.count(), 1, "opted in, no key: sent once");

    let seen = Seen::default();
    let svc = layer.layer(server(&seen, script()));
    assert_eq!(svc.oneshot(post(true)).await.unwrap().status(), 200);
    assert_eq!(
        seen.bodies(),
        vec!["order", "order"],
        "opted in, with a key: retried"
    );
}

#[tokio::test(start_paused = true)]
async fn idempotent_methods_are_retried() {
    for method in ["GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"] {
        let seen = Seen::default();
        let svc = layer_none()
            .build()
            .unwrap()
            .layer(server(&seen, vec![status(503, None), status(200, None)]));
        let req = Request::builder()
            .method(method)
            .body(String::new())
            .unwrap();
        assert_eq!(svc.oneshot(req).await.unwrap().status(), 200, "{method}");
        assert_eq!(seen.count(), 2, "{method}");
    }
}

#[tokio::test(start_paused = true)]
async fn retry_after_in_seconds_sets_the_next_delay() {
    let seen = Seen::default();
    let svc = layer_none().build().unwrap().layer(server::<String>(
        &seen,
        vec![status(503, Some("3")), status(200, None)],
    ));
    svc.oneshot(Request::new(String::new())).await.unwrap();
    assert_eq!(seen.gaps(), vec![Duration::from_secs(3)]);
}

#[tokio::test(start_paused = true)]
async fn retry_after_as_an_http_date_sets_the_next_delay() {
    let seen = Seen::default();
    let when = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(5));
    let svc = layer_none().build().unwrap().layer(server::<String>(
        &seen,
        vec![status(503, Some(&when)), status(200, None)],
    ));
    svc.oneshot(Request::new(String::new())).await.unwrap();
    let gap = seen.gaps()[0];
    // The date has whole seconds; the wall clock moved on a little since.
    assert!(
        gap > Duration::from_secs(3) && gap <= Duration::from_secs(5),
        "{gap:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn hostile_retry_after_values_are_clamped_or_ignored() {
    let cases: [(&str, Duration); 7] = [
        ("99999999999999999999999", Duration::from_secs(2)), // clamped to the cap
        ("86400", Duration::from_secs(2)),                   // a day: clamped
        ("-5", Duration::from_millis(100)),                  // malformed: backoff
        ("soon", Duration::from_millis(100)),
        ("1.5", Duration::from_millis(100)),
        ("Wed, 99 Oct 2015 07:00:00 GMT", Duration::from_millis(100)),
        ("Wed, 21 Oct 2015 07:28:00 GMT", Duration::from_millis(100)), // past: backoff
    ];
    for (value, expected) in cases {
        let seen = Seen::default();
        let svc = layer_none()
            .max_retry_after(Duration::from_secs(2))
            .build()
            .unwrap()
            .layer(server::<String>(
                &seen,
                vec![status(503, Some(value)), status(200, None)],
            ));
        svc.oneshot(Request::new(String::new())).await.unwrap();
        assert_eq!(seen.gaps(), vec![expected], "{value}");
    }
}

#[tokio::test(start_paused = true)]
async fn connection_errors_are_retried_and_other_errors_are_not() {
    for (err, retried) in [
        (
            std::io::Error::from(std::io::ErrorKind::ConnectionRefused).into(),
            true,
        ),
        (
            std::io::Error::from(std::io::ErrorKind::ConnectionReset).into(),
            true,
        ),
        (BoxError::from("bad certificate"), false),
    ] {
        let err: BoxError = err;
        let attempts = Arc::new(Mutex::new(0));
        let err = Arc::new(Mutex::new(Some(err)));
        let svc = {
            let attempts = attempts.clone();
            service_fn(move |_: Request<String>| {
                *attempts.lock().unwrap() += 1;
                let e = err.lock().unwrap().take();
                async move {
                    match e {
                        Some(e) => Err(e),
                        None => Ok::<_, BoxError>(status(200, None)),
                    }
                }
            })
        };
        let res = layer_none()
            .build()
            .unwrap()
            .layer(svc)
            .oneshot(Request::new(String::new()))
            .await;
        assert_eq!(res.is_ok(), retried);
        assert_eq!(*attempts.lock().unwrap(), if retried { 2 } else { 1 });
    }
}

#[tokio::test(start_paused = true)]
async fn a_cloneable_body_is_sent_again_on_each_attempt() {
    let seen = Seen::default();
    let svc = layer_none().build().unwrap().layer(server(
        &seen,
        vec![status(503, None), status(502, None), status(200, None)],
    ));
    let req = Request::put("/x")
        .body(Full::new(Bytes::from_static(b"payload")))
        .unwrap();
    assert_eq!(svc.oneshot(req).await.unwrap().status(), 200);
    assert_eq!(seen.bodies(), vec!["payload", "payload", "payload"]);
}

type Chunks =
    StreamBody<futures::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, Infallible>>>>;

fn streaming(chunks: usize, size: usize) -> Chunks {
    let frames: Vec<_> = (0..chunks)
        .map(|i| Ok(Frame::data(Bytes::from(vec![b'a' + (i % 26) as u8; size]))))
        .collect();
    StreamBody::new(stream::iter(frames))
}

#[tokio::test(start_paused = true)]
async fn a_streaming_body_is_buffered_and_replayed() {
    let seen = Seen::default();
    let svc = RetryLayer::builder()
        .http_replay()
        .jitter(Jitter::None)
        .build()
        .unwrap()
        .layer(server::<ReplayBody<Chunks>>(
            &seen,
            vec![status(503, None), status(200, None)],
        ));
    let req = Request::put("/upload").body(streaming(4, 1000)).unwrap();
    assert_eq!(svc.oneshot(req).await.unwrap().status(), 200);
    let bodies = seen.bodies();
    assert_eq!(bodies.len(), 2);
    assert_eq!(bodies[0].len(), 4000);
    assert_eq!(bodies[0], bodies[1]);
}

#[tokio::test(start_paused = true)]
async fn a_body_past_the_replay_limit_goes_out_once_in_full_and_is_not_retried() {
    let seen = Seen::default();
    let svc = RetryLayer::builder()
        .http_replay()
        .replay_limit(2500)
        .build()
        .unwrap()
        .layer(server::<ReplayBody<Chunks>>(
            &seen,
            vec![status(503, None), status(200, None)],
        ));
    let req = Request::put("/upload").body(streaming(4, 1000)).unwrap();
    let res = svc.oneshot(req).await.unwrap();
    assert_eq!(res.status(), 503, "the last response, returned");
    assert_eq!(seen.count(), 1);
    assert_eq!(
        seen.bodies()[0].len(),
        4000,
        "nothing the caller sent was dropped"
    );
}

#[tokio::test(start_paused = true)]
async fn a_body_whose_size_hint_passes_the_limit_is_sent_once() {
    let seen = Seen::default();
    let svc = RetryLayer::builder()
        .http_replay()
        .replay_limit(10)
        .build()
        .unwrap()
        .layer(server::<ReplayBody<Full<Bytes>>>(
            &seen,
            vec![status(503, None), status(200, None)],
        ));
    let req = Request::put("/")
        .body(Full::new(Bytes::from(vec![0u8; 11])))
        .unwrap();
    assert_eq!(svc.oneshot(req).await.unwrap().status(), 503);
    assert_eq!(seen.count(), 1);
    assert_eq!(seen.bodies()[0].len(), 11);
}

#[tokio::test(start_paused = true)]
async fn a_retry_goes_on_reading_the_original_body_when_the_first_attempt_stopped_early() {
    let attempts = Arc::new(Mutex::new(Vec::<Bytes>::new()));
    let svc = {
        let attempts = attempts.clone();
        service_fn(move |req: Request<ReplayBody<Chunks>>| {
            let attempts = attempts.clone();
            async move {
                let n = attempts.lock().unwrap().len();
                let mut body = req.into_body();
                if n == 0 {
                    // Read one chunk, then answer 503 without reading the rest.
                    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
                    attempts.lock().unwrap().push(first);
                    return Ok::<_, BoxError>(status(503, None));
                }
                let all = body.collect().await?.to_bytes();
                attempts.lock().unwrap().push(all);
                Ok(status(200, None))
            }
        })
    };
    let svc = RetryLayer::builder()
        .http_replay()
        .build()
        .unwrap()
        .layer(svc);
    let res = svc
        .oneshot(Request::put("/").body(streaming(3, 10)).unwrap())
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let seen = attempts.lock().unwrap().clone();
    assert_eq!(seen[0], Bytes::from(vec![b'a'; 10]));
    assert_eq!(seen[1].len(), 30);
    assert_eq!(&seen[1][..10], &seen[0][..]);
    assert_eq!(&seen[1][20..], &[b'c'; 10][..]);
}

#[tokio::test(start_paused = true)]
async fn a_replayed_body_keeps_its_exact_size_hint() {
    use http_body::Body as _;
    let sizes = Arc::new(Mutex::new(Vec::new()));
    let svc = {
        let sizes = sizes.clone();
        service_fn(move |req: Request<ReplayBody<Full<Bytes>>>| {
            sizes.lock().unwrap().push(req.body().size_hint().exact());
            let n = sizes.lock().unwrap().len();
            async move {
                let _ = req.into_body().collect().await?;
                Ok::<_, BoxError>(status(if n == 1 { 503 } else { 200 }, None))
            }
        })
    };
    let svc = RetryLayer::builder()
        .http_replay()
        .build()
        .unwrap()
        .layer(svc);
    let req = Request::put("/")
        .body(Full::new(Bytes::from_static(b"12345")))
        .unwrap();
    assert_eq!(svc.oneshot(req).await.unwrap().status(), 200);
    assert_eq!(*sizes.lock().unwrap(), vec![Some(5), Some(5)]);
}

#[tokio::test(start_paused = true)]
async fn a_refused_connection_from_hyper_util_is_recognised_and_retried() {
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    // A loopback port nobody listens on any more.
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let reasons = Arc::new(Mutex::new(Vec::new()));
    let layer = {
        let reasons = reasons.clone();
        RetryLayer::builder()
            .http()
            .max_attempts(3)
            .on_retry(move |e| reasons.lock().unwrap().push(e.reason().to_string()))
            .build()
            .unwrap()
    };
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let req = Request::get(format!("http://{addr}/"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let err = layer.layer(client).oneshot(req).await.unwrap_err();
    assert!(seawall::retry::http::is_retryable_error(&*err));
    assert_eq!(
        reasons.lock().unwrap().len(),
        2,
        "{:?}",
        reasons.lock().unwrap()
    );
    assert_eq!(layer.handle().metrics().attempts, 3);
}
