//! The guided tour: seawall's two ready-made stacks, end to end, on loopback.
//!
//! A backend, a front server with the `ServerStack` (correlation id -> HTTP face -> per-client
//! rate limit -> bulkhead) whose handler calls the backend through a hyper-util client wrapped
//! in the `ClientStack` (correlation propagation -> retry -> circuit breaker -> bulkhead ->
//! per-attempt timeout), and a `/health` report. The tour then breaks the backend and mends it,
//! and prints what each layer does:
//!
//! 1. healthy calls, with the correlation id on both sides;
//! 2. the backend hangs: attempts time out and are retried;
//! 3. the backend fails (503): retries, the breaker opens;
//! 4. fast 503s while open, and the health report says UNHEALTHY;
//! 5. the backend recovers: half-open (DEGRADED), then closed (HEALTHY);
//! 6. one client bursts and gets 429 with Retry-After; another is unaffected.
//!
//! Everything listens on 127.0.0.1, port 0; the tour takes about a second and exits.
//!
//! Run: `cargo run --example tour`

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use seawall::bulkhead::BulkheadLayer;
use seawall::circuit_breaker::{CircuitBreakerHandle, CircuitBreakerLayer, StateChange};
use seawall::classify::ServerErrorsAsFailures;
use seawall::health::HealthRegistry;
use seawall::rate_limit::{HeaderKey, RateLimitLayer};
use seawall::retry::{RetryBudget, RetryEvent, RetryLayer};
use seawall::stack::{ClientStack, ServerStack};
use tokio::sync::{broadcast, Notify};
use tower::{BoxError, Layer, ServiceExt};

const OK: u8 = 0;
const FAIL_503: u8 = 1;
const HOLD: u8 = 2;
const SLOW: u8 = 3;

/// The backend: `mode` says what it does; it counts its hits and remembers the last id.
#[derive(Clone, Default)]
struct Backend {
    mode: Arc<AtomicU8>,
    hits: Arc<AtomicU32>,
    last_id: Arc<Mutex<String>>,
    release: Arc<Notify>,
}

impl Backend {
    fn hits(&self) -> u32 {
        self.hits.load(Ordering::SeqCst)
    }

    fn last_id(&self) -> String {
        self.last_id.lock().unwrap().clone()
    }
}

async fn backend_handler(State(b): State<Backend>, headers: HeaderMap) -> Response {
    let id = headers
        .get("x-correlation-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("<none>");
    *b.last_id.lock().unwrap() = id.to_owned();
    b.hits.fetch_add(1, Ordering::SeqCst);
    match b.mode.load(Ordering::SeqCst) {
        FAIL_503 => (StatusCode::SERVICE_UNAVAILABLE, "backend down").into_response(),
        HOLD => {
            let _ = tokio::time::timeout(Duration::from_secs(3), b.release.notified()).await;
            "backend fine (slowly)".into_response()
        }
        SLOW => {
            tokio::time::sleep(Duration::from_secs(2)).await;
            "too late".into_response()
        }
        _ => "backend fine".into_response(),
    }
}

#[derive(Clone)]
struct Front<S> {
    client: S,
    backend: SocketAddr,
}

/// The front handler: calls the backend through the client stack; an open circuit becomes a
/// `503` with `Retry-After`, a timed-out last attempt a `504`.
async fn front_handler<S>(State(front): State<Front<S>>) -> Response
where
    S: tower::Service<
            Request<Full<Bytes>>,
            Response = http::Response<hyper::body::Incoming>,
            Error = BoxError,
        > + Clone,
{
    let req = Request::get(format!("http://{}/data", front.backend))
        .body(Full::default())
        .expect("a valid request");
    match front.client.oneshot(req).await {
        Ok(res) => {
            let status = res.status();
            let body = res.into_body().collect().await.map(|b| b.to_bytes());
            (status, body.unwrap_or_default()).into_response()
        }
        Err(e) if e.is::<tower::timeout::error::Elapsed>() => {
            (StatusCode::GATEWAY_TIMEOUT, "backend timed out").into_response()
        }
        Err(e) => seawall::http::rejection_response::<Body>(&*e),
    }
}

async fn serve(app: Router) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(addr)
}

type HttpClient = Client<HttpConnector, Full<Bytes>>;

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
    }
}

async fn call(
    http: &HttpClient,
    front: SocketAddr,
    path: &str,
    client_id: &str,
    id: Option<&str>,
) -> Result<Reply, BoxError> {
    let mut req = Request::get(format!("http://{front}{path}")).header("x-client-id", client_id);
    if let Some(id) = id {
        req = req.header("x-correlation-id", id);
    }
    let res = http.request(req.body(Full::default())?).await?;
    let (parts, body) = res.into_parts();
    let body = body.collect().await?.to_bytes();
    Ok(Reply {
        status: parts.status,
        headers: parts.headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// Prints the breaker's state changes seen since the last call.
fn print_changes(events: &mut broadcast::Receiver<StateChange>) {
    while let Ok(change) = events.try_recv() {
        match change.open_for {
            Some(d) => println!(
                "     [breaker] {} -> {} for {} ms",
                change.from,
                change.to,
                d.as_millis()
            ),
            None => println!("     [breaker] {} -> {}", change.from, change.to),
        }
    }
}

async fn print_health(http: &HttpClient, front: SocketAddr) -> Result<(), BoxError> {
    let r = call(http, front, "/health", "ops", None).await?;
    let overall = r.body.split('"').nth(3).unwrap_or("?");
    println!("     GET /health -> {} {overall}", r.status.as_u16());
    Ok(())
}

fn breaker_line(breaker: &CircuitBreakerHandle) -> String {
    let m = breaker.metrics();
    format!(
        "breaker {} ({} calls, {} failures, {} rejected)",
        m.state, m.calls, m.failures, m.rejections
    )
}

async fn run() -> Result<(), BoxError> {
    // The backend.
    let backend = Backend::default();
    let backend_addr = serve(
        Router::new()
            .route("/data", get(backend_handler))
            .with_state(backend.clone()),
    )
    .await?;

    // The client stack: short durations so the tour is quick.
    let client_stack = ClientStack::new()
        .with_retry(
            RetryLayer::builder()
                .http()
                .max_attempts(3)
                .initial_delay(Duration::from_millis(10))
                .max_delay(Duration::from_millis(20))
                .max_retry_after(Duration::from_millis(1))
                .budget(RetryBudget::default())
                .on_retry(|e: &RetryEvent<'_>| {
                    println!(
                        "     [retry] attempt {} failed ({}); retrying in {} ms",
                        e.attempt(),
                        e.reason(),
                        e.delay().as_millis()
                    );
                })
                .build()?,
        )
        .with_circuit_breaker(
            CircuitBreakerLayer::builder()
                .consecutive_failures(5)
                .open_duration(Duration::from_millis(300))
                .half_open_probes(1)
                .classifier(ServerErrorsAsFailures)
                .build()?,
        )
        .with_bulkhead(BulkheadLayer::new(8)?)
        .with_attempt_timeout(Duration::from_millis(100))?;
    let http: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    let front_state = Front {
        client: client_stack.layer(http.clone()),
        backend: backend_addr,
    };
    let breaker = client_stack.breaker();
    let mut events = breaker.subscribe();

    // The server stack: each client (X-Client-ID) 10 calls per 10 s.
    let server_stack = ServerStack::new()
        .with_rate_limit(
            RateLimitLayer::builder()
                .rate(10, Duration::from_secs(10))
                .key(HeaderKey::new(HeaderName::from_static("x-client-id")))
                .build()?,
        )
        .with_bulkhead(BulkheadLayer::new(16)?);

    let health = HealthRegistry::new();
    client_stack.register_health(&health, "backend");
    server_stack.register_health(&health, "server");

    let app = Router::new()
        .route("/api", get(front_handler))
        .with_state(front_state)
        .layer(server_stack.clone())
        .route_service("/health", health.service());
    let front = serve(app).await?;
    println!("seawall tour: backend on {backend_addr}, front server on {front}\n");

    println!("1. Healthy calls: the id goes from the client to the backend and back.");
    let r = call(&http, front, "/api", "alice", Some("order-1")).await?;
    println!(
        "     alice sends x-correlation-id: order-1 -> {} {:?}, response id {}, backend saw {}",
        r.status.as_u16(),
        r.body,
        r.header("x-correlation-id"),
        backend.last_id()
    );
    let r = call(&http, front, "/api", "alice", None).await?;
    println!(
        "     alice sends no id -> {}, the server made {}, backend saw {}",
        r.status.as_u16(),
        r.header("x-correlation-id"),
        backend.last_id()
    );
    print_health(&http, front).await?;

    println!("\n2. The backend hangs: each attempt times out after 100 ms and is retried.");
    backend.mode.store(SLOW, Ordering::SeqCst);
    let hits = backend.hits();
    let r = call(&http, front, "/api", "alice", Some("order-2")).await?;
    println!(
        "     -> {} {:?} after {} backend hits; {}",
        r.status.as_u16(),
        r.body,
        backend.hits() - hits,
        breaker_line(&breaker)
    );

    println!("\n3. The backend fails with 503: retried, and the breaker opens.");
    backend.mode.store(FAIL_503, Ordering::SeqCst);
    let hits = backend.hits();
    let r = call(&http, front, "/api", "alice", Some("order-3")).await?;
    print_changes(&mut events);
    println!(
        "     -> {} Retry-After: {} after {} backend hits (the last attempt met the open breaker)",
        r.status.as_u16(),
        r.header("retry-after"),
        backend.hits() - hits
    );

    println!("\n4. While open: fast 503s, the backend is left alone, health is UNHEALTHY.");
    let hits = backend.hits();
    for i in 4..6 {
        let id = format!("order-{i}");
        let r = call(&http, front, "/api", "alice", Some(&id)).await?;
        println!(
            "     {id} -> {} Retry-After: {} (id {}), backend hits +{}",
            r.status.as_u16(),
            r.header("retry-after"),
            r.header("x-correlation-id"),
            backend.hits() - hits
        );
    }
    print_health(&http, front).await?;

    println!("\n5. The backend recovers; after the open duration the next call is the probe.");
    backend.mode.store(HOLD, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(350)).await;
    let hits = backend.hits();
    let probe = {
        let http = http.clone();
        tokio::spawn(async move { call(&http, front, "/api", "alice", Some("order-6")).await })
    };
    for _ in 0..300 {
        if backend.hits() > hits {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    print_changes(&mut events);
    println!("     the probe is in flight:");
    print_health(&http, front).await?;
    backend.release.notify_one();
    let r = probe.await??;
    print_changes(&mut events);
    println!(
        "     probe -> {} {:?}; {}",
        r.status.as_u16(),
        r.body,
        breaker_line(&breaker)
    );
    backend.mode.store(OK, Ordering::SeqCst);
    print_health(&http, front).await?;

    println!("\n6. One client bursts (10 calls per 10 s each); another is unaffected.");
    for i in 1..=12 {
        let r = call(&http, front, "/api", "greedy", None).await?;
        if r.status == StatusCode::TOO_MANY_REQUESTS {
            println!(
                "     greedy #{i} -> 429 Retry-After: {} s, RateLimit-Remaining: {}, id {}",
                r.header("retry-after"),
                r.header("ratelimit-remaining"),
                r.header("x-correlation-id")
            );
        } else if i == 1 || i >= 10 {
            println!("     greedy #{i} -> {}", r.status.as_u16());
        } else if i == 2 {
            println!("     ...");
        }
    }
    let r = call(&http, front, "/api", "polite", None).await?;
    println!("     polite #1 -> {} {:?}", r.status.as_u16(), r.body);
    let limit = server_stack.rate_limit();
    println!(
        "     rate limit: {} allowed, {} limited, {} clients",
        limit.allowed(),
        limit.limited(),
        limit.keys()
    );

    let retry = client_stack.retry().metrics();
    println!(
        "\nDone: the backend was hit {} times; {} retries, {} calls rejected by the breaker.",
        backend.hits(),
        retry.retries,
        breaker.metrics().rejections
    );
    Ok(())
}

#[tokio::main]
async fn main() {
    match tokio::time::timeout(Duration::from_secs(10), run()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            eprintln!("tour failed: {e}");
            std::process::exit(1);
        }
        Err(_) => {
            eprintln!("tour timed out");
            std::process::exit(1);
        }
    }
}
