//! A hyper-util client behind seawall's retry layer, against a local server that fails twice
//! (a `503`, then a `503` with `Retry-After: 1`) and then answers.
//!
//! Run: `cargo run --example retry`

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use seawall::retry::{Jitter, RetryLayer};
use std::convert::Infallible;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tower::{BoxError, Layer, ServiceExt};

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let addr = serve_flaky().await?;
    let started = Instant::now();

    let layer = RetryLayer::builder()
        .http()
        .max_attempts(4)
        .initial_delay(Duration::from_millis(200))
        .jitter(Jitter::Equal)
        .max_retry_after(Duration::from_secs(2))
        .on_retry(move |e| {
            let hint = match e.server_hint() {
                Some(h) => format!(" (server asked for {h:?})"),
                None => String::new(),
            };
            println!(
                "client: attempt {} failed with {}; retrying in {:?}{hint}",
                e.attempt(),
                e.reason(),
                e.delay(),
            );
        })
        .build()?;
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let svc = layer.layer(client);

    let req = Request::get(format!("http://{addr}/greeting")).body(Full::new(Bytes::new()))?;
    let res = tokio::time::timeout(Duration::from_secs(10), svc.oneshot(req)).await??;
    let status = res.status();
    let body = res.into_body().collect().await?.to_bytes();
    println!(
        "client: {status} {:?} after {:.1?}; metrics {:?}",
        String::from_utf8_lossy(&body),
        started.elapsed(),
        layer.handle().metrics()
    );
    assert_eq!(status, StatusCode::OK);
    Ok(())
}

/// Starts a server on 127.0.0.1:0 that answers 503, then 503 with `Retry-After: 1`, then 200.
async fn serve_flaky() -> std::io::Result<std::net::SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let hits = Arc::new(AtomicU32::new(0));
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let hits = hits.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let n = hits.fetch_add(1, Ordering::SeqCst) + 1;
                    async move {
                        let res = match n {
                            1 => Response::builder()
                                .status(StatusCode::SERVICE_UNAVAILABLE)
                                .body(Full::new(Bytes::from("busy"))),
                            2 => Response::builder()
                                .status(StatusCode::SERVICE_UNAVAILABLE)
                                .header("retry-after", "1")
                                .body(Full::new(Bytes::from("busy, come back in a second"))),
                            _ => Response::builder().body(Full::new(Bytes::from("hello"))),
                        }
                        .expect("a valid response");
                        println!(
                            "server: request {n} {} -> {}",
                            req.uri().path(),
                            res.status()
                        );
                        Ok::<_, Infallible>(res)
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok(addr)
}
