//! Rate limit in axum: shared across router clones, per client, 429 with its headers.

use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderName, Request, StatusCode};
use axum::routing::get;
use axum::Router;
use futures::future::join_all;
use seawall::http::RejectionResponseLayer;
use seawall::rate_limit::{ip_prefix, ExtensionKey, HeaderKey, RateLimitLayer};
use tower::{ServiceBuilder, ServiceExt};

const SEC: Duration = Duration::from_secs(1);

fn client(id: &str) -> Request<Body> {
    Request::builder()
        .uri("/")
        .header("x-client-id", id)
        .body(Body::empty())
        .unwrap()
}

fn anonymous() -> Request<Body> {
    Request::builder().uri("/").body(Body::empty()).unwrap()
}

fn app(limit: RateLimitLayer<HeaderKey>) -> Router {
    Router::new()
        .route("/", get(|| async { "ok" }))
        .route("/other", get(|| async { "other" }))
        .layer(
            ServiceBuilder::new()
                .layer(RejectionResponseLayer::new())
                .layer(limit.with_headers()),
        )
}

fn per_client(n: u32, per: Duration) -> RateLimitLayer<HeaderKey> {
    RateLimitLayer::builder()
        .rate(n, per)
        .key(HeaderKey::new(HeaderName::from_static("x-client-id")))
        .build()
        .unwrap()
}

// axum#2634: 1,500 requests passed a 5 req/s cap because each router clone had its own
// allowance. Here hundreds of concurrent requests through clones of one router, over two
// routes, admit exactly the allowance.
#[tokio::test(start_paused = true)]
async fn concurrent_requests_through_router_clones_admit_exactly_the_allowance() {
    let limit = RateLimitLayer::builder().rate(5, SEC).build().unwrap();
    let handle = limit.handle();
    let router = Router::new()
        .route("/", get(|| async { "ok" }))
        .route("/other", get(|| async { "other" }))
        .layer(
            ServiceBuilder::new()
                .layer(RejectionResponseLayer::new())
                .layer(limit),
        );
    let requests = (0..600).map(|i| {
        let uri = if i % 2 == 0 { "/" } else { "/other" };
        let req = Request::builder().uri(uri).body(Body::empty()).unwrap();
        router.clone().oneshot(req)
    });
    let statuses: Vec<StatusCode> = join_all(requests)
        .await
        .into_iter()
        .map(|r| r.unwrap().status())
        .collect();
    let ok = statuses.iter().filter(|s| **s == StatusCode::OK).count();
    let limited = statuses
        .iter()
        .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert_eq!((ok, limited), (5, 595));
    assert_eq!((handle.allowed(), handle.limited()), (5, 595));

    // One second later, exactly one second's worth again.
    tokio::time::advance(SEC).await;
    let again = join_all((0..100).map(|_| router.clone().oneshot(anonymous()))).await;
    let ok = again
        .into_iter()
        .filter(|r| r.as_ref().unwrap().status() == StatusCode::OK)
        .count();
    assert_eq!(ok, 5);
}

// The same on a multi-threaded runtime, with requests spawned as tasks (so truly concurrent),
// and a rate so low that the time the test takes does not matter.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn spawned_requests_on_many_threads_admit_exactly_the_allowance() {
    let limit = RateLimitLayer::builder()
        .rate(5, Duration::from_secs(3600))
        .build()
        .unwrap();
    let router = Router::new().route("/", get(|| async { "ok" })).layer(
        ServiceBuilder::new()
            .layer(RejectionResponseLayer::new())
            .layer(limit),
    );
    let tasks: Vec<_> = (0..400)
        .map(|_| tokio::spawn(router.clone().oneshot(anonymous())))
        .collect();
    let mut ok = 0;
    for t in tasks {
        ok += usize::from(t.await.unwrap().unwrap().status() == StatusCode::OK);
    }
    assert_eq!(ok, 5);
}

#[tokio::test(start_paused = true)]
async fn over_the_limit_is_429_with_retry_after_and_rate_limit_headers() {
    let router = app(per_client(2, SEC));
    let first = router.clone().oneshot(client("alice")).await.unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    assert_eq!(first.headers()["ratelimit-limit"], "2");
    assert_eq!(first.headers()["ratelimit-remaining"], "1");
    assert_eq!(first.headers()["ratelimit-reset"], "1");
    let second = router.clone().oneshot(client("alice")).await.unwrap();
    assert_eq!(second.headers()["ratelimit-remaining"], "0");

    tokio::time::advance(Duration::from_millis(100)).await;
    let third = router.clone().oneshot(client("alice")).await.unwrap();
    assert_eq!(third.status(), StatusCode::TOO_MANY_REQUESTS);
    let h = third.headers();
    assert_eq!(h["retry-after"], "1", "400 ms, rounded up to whole seconds");
    assert_eq!(h["ratelimit-limit"], "2");
    assert_eq!(h["ratelimit-remaining"], "0");
    assert_eq!(
        h["ratelimit-reset"], "1",
        "900 ms until both slots are back"
    );

    // Another client is not affected.
    let bob = router.clone().oneshot(client("bob")).await.unwrap();
    assert_eq!(bob.status(), StatusCode::OK);
    assert_eq!(bob.headers()["ratelimit-remaining"], "1");
}

#[tokio::test(start_paused = true)]
async fn requests_without_the_header_share_the_default_bucket() {
    let limit = per_client(1, SEC);
    let handle = limit.handle();
    let router = app(limit);
    assert_eq!(
        router.clone().oneshot(anonymous()).await.unwrap().status(),
        StatusCode::OK
    );
    assert_eq!(
        router.clone().oneshot(anonymous()).await.unwrap().status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    // An empty value, or one longer than max_len, is no key either.
    assert_eq!(
        router.clone().oneshot(client("")).await.unwrap().status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    let long = "x".repeat(129);
    assert_eq!(
        router
            .clone()
            .oneshot(client(&long))
            .await
            .unwrap()
            .status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(
        router
            .clone()
            .oneshot(client("carol"))
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    assert_eq!(handle.keys(), 1);
    assert_eq!(handle.remaining_for(b"carol"), 0);
    assert_eq!(handle.remaining_for(b"dave"), 1);
}

#[tokio::test(start_paused = true)]
async fn peers_are_keyed_by_address_from_connect_info() {
    let limit = RateLimitLayer::builder()
        .rate(1, SEC)
        .key(ExtensionKey::new(
            |ConnectInfo(addr): &ConnectInfo<SocketAddr>| ip_prefix(addr.ip()),
        ))
        .build()
        .unwrap();
    let router = Router::new().route("/", get(|| async { "ok" })).layer(
        ServiceBuilder::new()
            .layer(RejectionResponseLayer::new())
            .layer(limit),
    );
    // What `into_make_service_with_connect_info::<SocketAddr>()` puts in every request.
    let status = |peer: &'static str| {
        let mut req = anonymous();
        req.extensions_mut()
            .insert(ConnectInfo(peer.parse::<SocketAddr>().unwrap()));
        let router = router.clone();
        async move { router.oneshot(req).await.unwrap().status() }
    };
    assert_eq!(status("192.0.2.1:1000").await, StatusCode::OK);
    assert_eq!(
        status("192.0.2.1:2000").await,
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(status("192.0.2.2:1000").await, StatusCode::OK);
    // Two addresses of one IPv6 /64 are one client.
    assert_eq!(status("[2001:db8::1]:1").await, StatusCode::OK);
    assert_eq!(
        status("[2001:db8::ffff]:1").await,
        StatusCode::TOO_MANY_REQUESTS
    );
}
