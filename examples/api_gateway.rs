//! An API gateway in axum, the classic pattern: one entry point in front of two backend
//! services, which authenticates callers, limits each client's rate and routes by path.
//!
//! - a request without `Authorization` gets `401`;
//! - clients are told apart by `X-Client-ID`, each with its own allowance (3 calls, then one
//!   every 2 s); a client over its limit gets `429` with `Retry-After` and `RateLimit-*`
//!   headers, and admitted responses carry the `RateLimit-*` headers too;
//! - `/users...` goes to the users service, `/orders...` to the orders service, anything else
//!   is `404`.
//!
//! Everything listens on 127.0.0.1, port 0. The example runs a few scripted client calls,
//! prints what each gets, and exits.
//!
//! Run: `cargo run --example api_gateway`

use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderName, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::Router;
use http_body_util::BodyExt;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use seawall::http::RejectionResponseLayer;
use seawall::rate_limit::{HeaderKey, RateLimitLayer};
use tower::{BoxError, ServiceBuilder};

type HttpClient = Client<HttpConnector, Body>;

/// Serves `app` on a fresh loopback port.
async fn serve(app: Router) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(addr)
}

/// A backend service that says who it is and what it was asked.
fn backend(name: &'static str) -> Router {
    let reply = move |req: Request| async move { format!("{name} service: {}", req.uri().path()) };
    Router::new().fallback(reply)
}

/// Forwards `req` to the backend at `to`, keeping method, path, query, headers and body.
async fn forward(client: HttpClient, to: SocketAddr, mut req: Request) -> Response {
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let uri: Uri = match format!("http://{to}{path}").parse() {
        Ok(uri) => uri,
        Err(_) => return StatusCode::BAD_REQUEST.into_response(),
    };
    *req.uri_mut() = uri;
    match client.request(req).await {
        Ok(res) => res.map(Body::new),
        Err(err) => {
            eprintln!("gateway: backend {to} failed: {err}");
            StatusCode::BAD_GATEWAY.into_response()
        }
    }
}

async fn require_authorization(req: Request, next: Next) -> Response {
    if req.headers().contains_key(header::AUTHORIZATION) {
        next.run(req).await
    } else {
        (StatusCode::UNAUTHORIZED, "missing Authorization").into_response()
    }
}

async fn run() -> Result<(), BoxError> {
    let users = serve(backend("users")).await?;
    let orders = serve(backend("orders")).await?;
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();

    // Per client: a burst of 3, then one call every 2 s.
    let per_client = RateLimitLayer::builder()
        .rate(1, Duration::from_secs(2))
        .burst(3)
        .key(HeaderKey::new(HeaderName::from_static("x-client-id")))
        .build()?;
    let limits = per_client.handle();

    let to = |addr: SocketAddr| {
        let client = client.clone();
        any(move |req: Request| forward(client.clone(), addr, req))
    };
    let gateway = Router::new()
        .route("/users", to(users))
        .route("/users/{*rest}", to(users))
        .route("/orders", to(orders))
        .route("/orders/{*rest}", to(orders))
        .route("/health", get(|| async { "ok" }))
        // Only matched routes are authenticated and limited; anything else is a plain 404.
        .route_layer(
            ServiceBuilder::new()
                .layer(middleware::from_fn(require_authorization))
                .layer(RejectionResponseLayer::new())
                .layer(per_client.with_headers()),
        );
    let gateway_addr = serve(gateway).await?;
    println!("backends: users on {users}, orders on {orders}; gateway on {gateway_addr}");
    println!();

    let script: &[(&str, Option<&str>, &str)] = &[
        ("alice", Some("Bearer alice-token"), "/users/42"),
        (
            "alice",
            Some("Bearer alice-token"),
            "/orders?since=2026-01-01",
        ),
        ("alice", Some("Bearer alice-token"), "/users"),
        ("alice", Some("Bearer alice-token"), "/users/43"),
        ("bob", Some("Bearer bob-token"), "/orders/7"),
        ("mallory", None, "/users/42"),
        ("bob", Some("Bearer bob-token"), "/no/such/path"),
    ];
    for (client_id, auth, path) in script {
        let mut req = Request::builder()
            .uri(format!("http://{gateway_addr}{path}"))
            .header("x-client-id", *client_id);
        if let Some(auth) = auth {
            req = req.header(header::AUTHORIZATION, *auth);
        }
        let res = client.request(req.body(Body::empty())?).await?;
        let status = res.status();
        let headers = res.headers().clone();
        let body = res.into_body().collect().await?.to_bytes();
        let show = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(|v| format!(" {name}={v}"))
                .unwrap_or_default()
        };
        println!(
            "{client_id:>8} GET {path:<26} -> {status}{}{}{}  {:?}",
            show("retry-after"),
            show("ratelimit-remaining"),
            show("ratelimit-reset"),
            String::from_utf8_lossy(&body),
        );
    }
    println!();
    println!(
        "rate limit: {} allowed, {} limited, {} client keys held (of at most {})",
        limits.allowed(),
        limits.limited(),
        limits.keys(),
        limits.max_keys()
    );
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    tokio::time::timeout(Duration::from_secs(10), run()).await?
}
