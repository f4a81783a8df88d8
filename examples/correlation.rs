//! One id from the edge to every log line and downstream call.
//!
//! Two axum services on loopback: `orders` calls `inventory` through a hyper-util client
//! wrapped in `PropagateCorrelationIdLayer`. Both run `CorrelationIdLayer`, so every log line
//! of both services carries the same `correlation_id`, and the response echoes it.
//!
//! Run: `cargo run --example correlation`

use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::routing::get;
use axum::{Extension, Router};
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use seawall::correlation::{
    self, CorrelationId, CorrelationIdLayer, PropagateCorrelationId, PropagateCorrelationIdLayer,
};
use tower::{BoxError, Layer, ServiceExt};

type HttpClient = PropagateCorrelationId<Client<HttpConnector, Body>>;

/// Serves `app` on 127.0.0.1, port chosen by the OS.
async fn serve(app: Router) -> Result<SocketAddr, BoxError> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(addr)
}

/// `inventory`: answers with the id it was called with.
async fn inventory() -> Result<SocketAddr, BoxError> {
    let app = Router::new()
        .route(
            "/stock/{item}",
            get(
                |Extension(id): Extension<CorrelationId>,
                 axum::extract::Path(item): axum::extract::Path<String>| async move {
                    tracing::info!(%item, "inventory: checking stock");
                    id.to_string()
                },
            ),
        )
        .layer(CorrelationIdLayer::new());
    serve(app).await
}

/// `orders`: calls `inventory` twice, once directly and once from a spawned task.
async fn orders(inventory: SocketAddr, client: HttpClient) -> Result<SocketAddr, BoxError> {
    async fn fetch(client: HttpClient, url: String) -> Result<String, BoxError> {
        let res = client
            .oneshot(Request::get(url).body(Body::empty())?)
            .await?;
        let body = res.into_body().collect().await?.to_bytes();
        Ok(String::from_utf8(body.to_vec())?)
    }

    let app = Router::new()
        .route(
            "/order",
            get(move |State(client): State<HttpClient>| async move {
                tracing::info!("orders: placing order");
                let url = format!("http://{inventory}/stock/apple");
                let direct = fetch(client.clone(), url.clone()).await;
                // A spawned task keeps the id with `correlation::spawn`.
                let background = correlation::spawn(async move {
                    tracing::info!("orders: background re-check");
                    fetch(client, url).await
                });
                let background = background.await.map_err(BoxError::from).and_then(|r| r);
                match (direct, background) {
                    (Ok(seen), Ok(again)) => {
                        tracing::info!(inventory_saw = %seen, "orders: done");
                        Ok(format!("{seen} {again}"))
                    }
                    (Err(e), _) | (_, Err(e)) => {
                        tracing::warn!(error = %e, "orders: inventory failed");
                        Err(StatusCode::BAD_GATEWAY)
                    }
                }
            }),
        )
        .with_state(client)
        .layer(CorrelationIdLayer::new());
    serve(app).await
}

async fn run() -> Result<(), BoxError> {
    let client = PropagateCorrelationIdLayer::new()
        .layer(Client::builder(TokioExecutor::new()).build_http::<Body>());
    let inventory = inventory().await?;
    let orders = orders(inventory, client).await?;
    println!("orders on {orders}, inventory on {inventory}\n");

    // The caller at the edge: a plain client, no propagation.
    let edge = Client::builder(TokioExecutor::new()).build_http::<Body>();
    for sent in [None, Some("checkout-7f3a"), Some("bad id with spaces")] {
        println!("--- GET /order with x-correlation-id: {sent:?}");
        let mut req = Request::get(format!("http://{orders}/order"));
        if let Some(sent) = sent {
            req = req.header("x-correlation-id", sent);
        }
        let res = edge.request(req.body(Body::empty())?).await?;
        let echoed = res.headers()["x-correlation-id"].to_str()?.to_owned();
        let body = res.into_body().collect().await?.to_bytes();
        let body = String::from_utf8(body.to_vec())?;
        println!("response x-correlation-id: {echoed}");
        println!("inventory saw (direct, spawned): {body}\n");
        assert_eq!(body, format!("{echoed} {echoed}"), "one id end to end");
        if sent == Some("checkout-7f3a") {
            assert_eq!(echoed, "checkout-7f3a");
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    tracing_subscriber::fmt()
        .with_env_filter("info,seawall=debug")
        .with_target(false)
        .with_ansi(false)
        .without_time()
        .init();
    tokio::time::timeout(Duration::from_secs(10), run()).await??;
    println!("same id in both services' log lines and on every response");
    Ok(())
}
