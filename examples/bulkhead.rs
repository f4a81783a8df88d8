//! Two bulkheads in one axum router: a flood on the "regular" route fills its bulkhead and gets
//! `503`s, while the "critical" route, behind its own bulkhead, keeps answering.
//!
//! Run: `cargo run --example bulkhead`
use std::time::{Duration, Instant};

use axum::{routing::get, Router};
use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use seawall::bulkhead::BulkheadLayer;
use seawall::http::RejectionResponseLayer;
use tower::{BoxError, ServiceBuilder};

const REGULAR_FLOOD: usize = 60;
const CRITICAL_CALLS: usize = 10;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    // The classic pool example: one bulkhead per kind of work, each its own layer value.
    let critical = BulkheadLayer::builder().max_concurrent(10).build()?;
    let regular = BulkheadLayer::builder().max_concurrent(20).build()?;
    let (critical_handle, regular_handle) = (critical.handle(), regular.handle());

    let app = Router::new()
        .route(
            "/critical",
            get(|| async {
                tokio::time::sleep(Duration::from_millis(20)).await;
                "critical ok"
            })
            .layer(
                ServiceBuilder::new()
                    .layer(RejectionResponseLayer::new())
                    .layer(critical),
            ),
        )
        .route(
            "/regular",
            get(|| async {
                // A slow dependency behind the regular route.
                tokio::time::sleep(Duration::from_millis(500)).await;
                "regular ok"
            })
            .layer(
                ServiceBuilder::new()
                    .layer(RejectionResponseLayer::new())
                    .layer(regular),
            ),
        );

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    println!("server on http://{addr}: /critical (bulkhead 10), /regular (bulkhead 20)");

    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let get_status = |path: &'static str| {
        let client = client.clone();
        async move {
            let uri = format!("http://{addr}{path}").parse()?;
            let res = client.get(uri).await?;
            Ok::<_, BoxError>(res.status().as_u16())
        }
    };

    let start = Instant::now();
    println!("flooding /regular with {REGULAR_FLOOD} concurrent requests...");
    let flood: Vec<_> = (0..REGULAR_FLOOD)
        .map(|_| tokio::spawn(get_status("/regular")))
        .collect();
    // Let the flood fill the regular bulkhead, then call the critical route meanwhile.
    while regular_handle.in_flight() < 20 && start.elapsed() < Duration::from_secs(2) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    println!(
        "regular bulkhead: {} in flight of {}, {} rejected so far",
        regular_handle.in_flight(),
        regular_handle.capacity(),
        regular_handle.rejections()
    );
    let critical_calls: Vec<_> = (0..CRITICAL_CALLS)
        .map(|_| tokio::spawn(get_status("/critical")))
        .collect();
    let mut critical_ok = 0;
    for call in critical_calls {
        if call.await?? == 200 {
            critical_ok += 1;
        }
    }
    println!(
        "critical route during the flood: {critical_ok}/{CRITICAL_CALLS} answered 200 (after {:?})",
        start.elapsed()
    );

    let (mut ok, mut unavailable, mut other) = (0, 0, 0);
    for call in flood {
        match call.await?? {
            200 => ok += 1,
            503 => unavailable += 1,
            _ => other += 1,
        }
    }
    println!("regular route: {ok} answered 200, {unavailable} answered 503, {other} other");
    println!(
        "bulkheads now: critical {:?}\n               regular  {:?}",
        critical_handle.metrics(),
        regular_handle.metrics()
    );
    println!("done in {:?}", start.elapsed());
    if critical_ok != CRITICAL_CALLS || unavailable == 0 {
        return Err("the flood on /regular should be shed while /critical answers".into());
    }
    Ok(())
}
