//! A circuit breaker in front of a flaky HTTP server.
//!
//! The example starts a small HTTP server on 127.0.0.1 (a free port) that answers `500` for
//! its first 700 ms and `200` after that, and calls it every 40 ms through a hyper-util client
//! wrapped in a circuit breaker. You see the breaker open after three server errors, reject
//! calls while open, half-open after 200 ms, reopen while the server still fails, and close
//! once it has recovered.
//!
//! `cargo run --example circuit_breaker`

use http_body_util::Empty;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use seawall::circuit_breaker::{CircuitBreakerLayer, State};
use seawall::classify::ServerErrorsAsFailures;
use seawall::error::CircuitOpen;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::time::Instant;
use tower::{ServiceBuilder, ServiceExt};

/// How long the server fails before it recovers.
const OUTAGE: Duration = Duration::from_millis(700);

/// Serves `500` until `OUTAGE` has passed since `started`, then `200`.
async fn flaky_server(started: Instant) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |_req: Request<Incoming>| async move {
                    let status = if started.elapsed() < OUTAGE {
                        StatusCode::INTERNAL_SERVER_ERROR
                    } else {
                        StatusCode::OK
                    };
                    let mut res = Response::new(Empty::<Bytes>::new());
                    *res.status_mut() = status;
                    Ok::<_, Infallible>(res)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok(addr)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let started = Instant::now();
    let stamp = move || format!("[{:>5} ms]", started.elapsed().as_millis());
    let addr = flaky_server(started).await?;
    println!(
        "{} flaky server on http://{addr} (fails for {OUTAGE:?})",
        stamp()
    );

    let breaker = CircuitBreakerLayer::builder()
        .consecutive_failures(3)
        .open_duration(Duration::from_millis(200))
        .half_open_probes(2)
        // HTTP: 5xx responses are failures, 4xx are not.
        .classifier(ServerErrorsAsFailures)
        .build()?;
    let handle = breaker.handle();

    let mut events = handle.subscribe();
    tokio::spawn(async move {
        while let Ok(change) = events.recv().await {
            match change.open_for {
                Some(d) => println!(
                    "{} breaker {} -> {} (open for {d:?})",
                    stamp(),
                    change.from,
                    change.to
                ),
                None => println!("{} breaker {} -> {}", stamp(), change.from, change.to),
            }
        }
    });

    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let svc = ServiceBuilder::new().layer(breaker).service(client);

    let uri: hyper::Uri = format!("http://{addr}/").parse()?;
    let deadline = started + Duration::from_secs(4);
    let mut closed_after_recovery = 0;
    while Instant::now() < deadline {
        let req = Request::get(uri.clone()).body(Empty::new())?;
        match svc.clone().oneshot(req).await {
            Ok(res) => println!("{} GET / -> {}", stamp(), res.status()),
            Err(err) => match err.downcast_ref::<CircuitOpen>() {
                Some(open) => match open.retry_after() {
                    Some(d) => println!(
                        "{} GET / -> rejected: circuit open, half-opens in {} ms",
                        stamp(),
                        d.as_millis()
                    ),
                    None => println!("{} GET / -> rejected: all probes in flight", stamp()),
                },
                None => println!("{} GET / -> error: {err}", stamp()),
            },
        }
        if started.elapsed() > OUTAGE && handle.state() == State::Closed {
            closed_after_recovery += 1;
            if closed_after_recovery == 3 {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    // Let the event printer catch up.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let m = handle.metrics();
    println!(
        "{} done: state {}, {} calls, {} failures, {} rejected",
        stamp(),
        m.state,
        m.calls,
        m.failures,
        m.rejections
    );
    if m.state != State::Closed {
        return Err("the breaker did not close after the server recovered".into());
    }
    Ok(())
}
