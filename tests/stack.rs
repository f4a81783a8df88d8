//! End to end, on loopback: an axum server with the `ServerStack` in front of a handler that
//! calls a backend through a hyper-util client wrapped in the `ClientStack`. The backend's
//! failures and latency are switched by the test; the test follows the story as the backend
//! degrades and recovers.
//!
//! Real sockets need real time: the durations are short (breaker open 200 ms, attempt timeout
//! 100 ms), no assertion is on wall-clock timing, and the whole test takes about a second.
#![cfg(all(
    feature = "retry",
    feature = "circuit-breaker",
    feature = "bulkhead",
    feature = "rate-limit",
    feature = "correlation-id"
))]

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
use seawall::circuit_breaker::{CircuitBreakerLayer, State as BreakerState};
use seawall::classify::ServerErrorsAsFailures;
use seawall::health::HealthRegistry;
use seawall::rate_limit::{HeaderKey, RateLimitLayer};
use seawall::retry::{RetryBudget, RetryLayer};
use seawall::stack::{ClientStack, ServerStack};
use tokio::sync::Notify;
use tower::{BoxError, Layer, ServiceExt};

const OK: u8 = 0;
const FAIL_503: u8 = 1;
const HOLD: u8 = 2;
const SLOW: u8 = 3;

/// The backend: what it does is `mode`; it counts its hits and records the correlation id of
/// each.
#[derive(Clone, Default)]
struct Backend {
    mode: Arc<AtomicU8>,
    hits: Arc<AtomicU32>,
    ids: Arc<Mutex<Vec<String>>>,
    release: Arc<Notify>,
}

impl Backend {
    fn hits(&self) -> u32 {
        self.hits.load(Ordering::SeqCst)
    }

    fn ids_since(&self, from: usize) -> Vec<String> {
        self.ids.lock().unwrap()[from..].to_vec()
    }

    fn id_count(&self) -> usize {
        self.ids.lock().unwrap().len()
    }
}

async fn backend_handler(State(b): State<Backend>, headers: HeaderMap) -> Response {
    let id = headers
        .get("x-correlation-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("<none>")
        .to_owned();
    b.ids.lock().unwrap().push(id);
    b.hits.fetch_add(1, Ordering::SeqCst);
    match b.mode.load(Ordering::SeqCst) {
        FAIL_503 => (StatusCode::SERVICE_UNAVAILABLE, "backend down").into_response(),
        HOLD => {
            // Bounded, so a forgotten release cannot hang the test.
            let _ = tokio::time::timeout(Duration::from_secs(3), b.release.notified()).await;
            "backend slow but fine".into_response()
        }
        SLOW => {
            tokio::time::sleep(Duration::from_secs(2)).await;
            "too late".into_response()
        }
        _ => "backend fine".into_response(),
    }
}

type HttpClient = Client<HttpConnector, Full<Bytes>>;

#[derive(Clone)]
struct Front<S> {
    client: S,
    backend: SocketAddr,
}

/// The server's handler: calls the backend through the client stack and answers with what it
/// got; the client stack's errors become responses (`503` + `Retry-After` for an open circuit,
/// `504` for a timed-out last attempt).
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
        .unwrap();
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

async fn serve(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

struct Harness {
    backend: Backend,
    front: SocketAddr,
    http: HttpClient,
    client_stack: ClientStack,
    server_stack: ServerStack<HeaderKey>,
}

impl Harness {
    async fn get(
        &self,
        path: &str,
        client_id: &str,
        corr: Option<&str>,
    ) -> (StatusCode, HeaderMap, String) {
        let mut req =
            Request::get(format!("http://{}{path}", self.front)).header("x-client-id", client_id);
        if let Some(id) = corr {
            req = req.header("x-correlation-id", id);
        }
        let res = self
            .http
            .request(req.body(Full::default()).unwrap())
            .await
            .unwrap();
        let (parts, body) = res.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        (
            parts.status,
            parts.headers,
            String::from_utf8_lossy(&body).into_owned(),
        )
    }

    async fn health(&self) -> (StatusCode, String) {
        let (status, _, body) = self.get("/health", "ops", None).await;
        (status, body)
    }
}

async fn start() -> Harness {
    let backend = Backend::default();
    let backend_addr = serve(
        Router::new()
            .route("/data", get(backend_handler))
            .with_state(backend.clone()),
    )
    .await;

    let client_stack = ClientStack::new()
        .with_retry(
            RetryLayer::builder()
                .http()
                .max_attempts(3)
                .initial_delay(Duration::from_millis(5))
                .max_delay(Duration::from_millis(10))
                .max_retry_after(Duration::from_millis(1))
                .budget(RetryBudget::default())
                .seed(7)
                .build()
                .unwrap(),
        )
        .with_circuit_breaker(
            CircuitBreakerLayer::builder()
                .consecutive_failures(5)
                .open_duration(Duration::from_millis(200))
                .half_open_probes(1)
                .classifier(ServerErrorsAsFailures)
                .build()
                .unwrap(),
        )
        .with_bulkhead(BulkheadLayer::new(8).unwrap())
        .with_attempt_timeout(Duration::from_millis(100))
        .unwrap();
    let http: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    let front = Front {
        client: client_stack.layer(http.clone()),
        backend: backend_addr,
    };

    let server_stack = ServerStack::new()
        .with_rate_limit(
            RateLimitLayer::builder()
                .rate(10, Duration::from_secs(10))
                .key(HeaderKey::new(HeaderName::from_static("x-client-id")))
                .build()
                .unwrap(),
        )
        .with_bulkhead(BulkheadLayer::new(8).unwrap());

    let health = HealthRegistry::new();
    client_stack.register_health(&health, "backend");
    server_stack.register_health(&health, "server");

    let app = Router::new()
        .route("/api", get(front_handler))
        .with_state(front)
        .layer(server_stack.clone())
        .route_service("/health", health.service());
    let front = serve(app).await;
    Harness {
        backend,
        front,
        http,
        client_stack,
        server_stack,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stacks_degrade_and_recover_as_the_backend_does() {
    let t = start().await;
    let breaker = t.client_stack.breaker();

    // 1. Healthy: one hit per call; the id the client sent, or the one the server made, is
    //    the one the backend saw and the one on the response.
    let (status, headers, body) = t.get("/api", "alice", Some("order-1")).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "backend fine"));
    assert_eq!(headers["x-correlation-id"], "order-1");
    assert_eq!(t.backend.ids_since(0), ["order-1"]);
    let (status, headers, _) = t.get("/api", "alice", None).await;
    assert_eq!(status, StatusCode::OK);
    let made = headers["x-correlation-id"].to_str().unwrap().to_owned();
    assert_eq!(made.len(), 36, "a UUID");
    assert_eq!(t.backend.ids_since(1), [made]);
    assert_eq!(t.backend.hits(), 2);
    let (status, body) = t.health().await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.starts_with(r#"{"status":"HEALTHY""#), "{body}");

    // 2. The backend hangs: each attempt times out (100 ms) and is retried, three attempts in
    //    all, each counted by the breaker (3 failures in a row, not yet 5). The last error is a
    //    timeout: 504.
    t.backend.mode.store(SLOW, Ordering::SeqCst);
    let (status, headers, _) = t.get("/api", "alice", Some("order-2")).await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(headers["x-correlation-id"], "order-2");
    assert_eq!(t.backend.hits(), 5);
    assert_eq!(
        t.backend.ids_since(2),
        ["order-2"; 3],
        "every attempt carries the id"
    );
    assert_eq!(breaker.state(), BreakerState::Closed);
    assert_eq!(breaker.metrics().consecutive_failures, 3);

    // 3. The backend answers 503: attempts 1 and 2 reach it (failures 4 and 5: the breaker
    //    opens); attempt 3 meets the open breaker, whose retry_after does not fit, so the call
    //    ends there: 503 with Retry-After, made of the CircuitOpen.
    t.backend.mode.store(FAIL_503, Ordering::SeqCst);
    let (status, headers, _) = t.get("/api", "alice", Some("order-3")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(headers["x-correlation-id"], "order-3");
    assert!(headers.contains_key("retry-after"));
    assert_eq!(t.backend.hits(), 7, "two attempts reached the backend");
    assert_eq!(breaker.state(), BreakerState::Open);
    let retry = t.client_stack.retry().metrics();
    assert_eq!(retry.retries, 4, "2 retries in step 2, 2 in step 3");
    assert_eq!(retry.budget_rejections, 0);

    // 4. While open: fast 503s, the backend is not called, health is UNHEALTHY (503).
    let (status, headers, _) = t.get("/api", "alice", Some("order-4")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(headers["x-correlation-id"], "order-4");
    assert_eq!(t.backend.hits(), 7);
    let (status, body) = t.health().await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body.starts_with(r#"{"status":"UNHEALTHY""#), "{body}");
    assert!(
        body.contains(
            r#""backend.circuit_breaker":{"kind":"circuit_breaker","status":"UNHEALTHY""#
        ),
        "{body}"
    );

    // 5. The backend recovers (slowly: it holds the probe until we release it). After the open
    //    duration, the next call half-opens the breaker and is its one probe: health is
    //    DEGRADED (200) while it is in flight; it succeeds and the breaker closes.
    t.backend.mode.store(HOLD, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(250)).await;
    let ids_before = t.backend.id_count();
    let probe = {
        let (front, http) = (t.front, t.http.clone());
        tokio::spawn(async move {
            let req = Request::get(format!("http://{front}/api"))
                .header("x-client-id", "alice")
                .header("x-correlation-id", "order-5")
                .body(Full::default())
                .unwrap();
            http.request(req).await.unwrap().status()
        })
    };
    let mut waited = 0;
    while t.backend.hits() < 8 {
        assert!(waited < 300, "the probe never reached the backend");
        tokio::time::sleep(Duration::from_millis(10)).await;
        waited += 1;
    }
    assert_eq!(breaker.state(), BreakerState::HalfOpen);
    let (status, body) = t.health().await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.starts_with(r#"{"status":"DEGRADED""#), "{body}");
    t.backend.release.notify_one();
    assert_eq!(probe.await.unwrap(), StatusCode::OK);
    assert_eq!(t.backend.ids_since(ids_before), ["order-5"]);
    assert_eq!(breaker.state(), BreakerState::Closed);
    let (status, body) = t.health().await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.starts_with(r#"{"status":"HEALTHY""#), "{body}");
    t.backend.mode.store(OK, Ordering::SeqCst);

    // 6. One client bursts: 10 calls per 10 s each; the 11th gets 429 with Retry-After and
    //    its id; the backend is not called for it; another client is unaffected.
    let hits = t.backend.hits();
    for i in 0..10 {
        let (status, _, _) = t.get("/api", "greedy", None).await;
        assert_eq!(status, StatusCode::OK, "call {i} of the burst");
    }
    let (status, headers, _) = t.get("/api", "greedy", Some("burst-11")).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(headers["x-correlation-id"], "burst-11");
    let retry_after: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=10).contains(&retry_after), "{retry_after}");
    assert_eq!(t.backend.hits(), hits + 10);
    let (status, _, _) = t.get("/api", "polite", None).await;
    assert_eq!(status, StatusCode::OK);
    let limit = t.server_stack.rate_limit();
    assert_eq!(limit.limited(), 1);
    assert!(limit.keys() >= 3, "alice, greedy, polite");
    assert_eq!(t.server_stack.bulkhead().in_flight(), 0);
    assert_eq!(t.client_stack.bulkhead().in_flight(), 0);
}

/// The budget, not the attempt count, bounds retries when every call fails: 20 calls to a
/// backend that always answers 503, 3 attempts each, but a budget with a reserve of one retry
/// and no deposits (ratio 0): one retry in all, and the backend sees 21 requests, not 60.
#[tokio::test(start_paused = true)]
async fn retries_are_bounded_by_the_budget_when_everything_fails() {
    let hits = Arc::new(AtomicU32::new(0));
    let backend = {
        let hits = Arc::clone(&hits);
        tower::service_fn(move |_: Request<()>| {
            hits.fetch_add(1, Ordering::SeqCst);
            async {
                let mut res = http::Response::new(());
                *res.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
                Ok::<_, BoxError>(res)
            }
        })
    };
    let budget = RetryBudget::builder()
        .ratio(0.0)
        .min_per_sec(1)
        .ttl(Duration::from_secs(1))
        .build()
        .unwrap();
    let stack = ClientStack::new().with_retry(
        RetryLayer::builder()
            .http()
            .max_attempts(3)
            .initial_delay(Duration::from_millis(1))
            .max_delay(Duration::from_millis(2))
            .budget(budget)
            .build()
            .unwrap(),
    );
    stack.breaker().disable(); // this test is about the budget alone
    let svc = stack.layer(backend);
    for _ in 0..20 {
        let res = svc.clone().oneshot(Request::new(())).await.unwrap();
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    }
    let m = stack.retry().metrics();
    assert_eq!(m.retries, 1);
    assert_eq!(m.budget_rejections, 20);
    assert_eq!(hits.load(Ordering::SeqCst), 21);
}
