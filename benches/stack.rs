//! The full client stack and the full server stack, happy path, against the bare service.
//!
//! - client: `ClientStack::new()` (propagation -> retry with budget -> breaker -> bulkhead ->
//!   tower `Timeout` 15 s) around a bare HTTP service, inside a correlation scope, as a
//!   handler's outbound call runs;
//! - server: `ServerStack` (correlation id -> HTTP face -> per-client rate limit, keyed by
//!   `x-client-id`, with a rate no bench reaches -> bulkhead) in front of a bare handler, with
//!   an incoming valid id.
//!
//! Every call builds its request (four headers, as a real one has), in the bare row too: read
//! the stacks' cost as the difference from the bare row. Prints allocations per call; two-thread rows give the combined throughput (compare with the
//! one-thread rows as a ratio, measured in the same run).
//!
//! Run: `cargo bench --all-features --bench stack`
mod support;

use std::convert::Infallible;
use std::future::{ready, Ready};
use std::task::{Context, Poll};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use http::header::{HeaderName, CONTENT_TYPE, HOST, USER_AGENT};
use http::{HeaderValue, Request, Response};
use seawall::correlation::CorrelationId;
use seawall::rate_limit::{HeaderKey, RateLimitLayer};
use seawall::stack::{ClientStack, ServerStack};
use tower::{Layer, Service, ServiceExt};

#[global_allocator]
static ALLOC: support::CountingAlloc = support::CountingAlloc;

/// The bare HTTP service: always ready, answers at once.
#[derive(Clone, Copy)]
struct Bare;

impl Service<Request<()>> for Bare {
    type Response = Response<()>;
    type Error = Infallible;
    type Future = Ready<Result<Response<()>, Infallible>>;

    #[inline]
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    #[inline]
    fn call(&mut self, req: Request<()>) -> Self::Future {
        std::hint::black_box(&req);
        let mut res = Response::new(());
        res.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        ready(Ok(res))
    }
}

fn request() -> Request<()> {
    Request::get("/items/7")
        .header(HOST, "example.com")
        .header(USER_AGENT, "bench/1.0")
        .header("x-client-id", "client-42")
        .header("x-correlation-id", "3f1c2a9e-5b7d-4e2f-9a61-0c8d7e6b5a43")
        .body(())
        .expect("request")
}

fn server_stack() -> ServerStack<HeaderKey> {
    ServerStack::new().with_rate_limit(
        RateLimitLayer::builder()
            .rate(1_000_000_000, Duration::from_secs(1))
            .burst(1_000_000_000)
            .key(HeaderKey::new(HeaderName::from_static("x-client-id")))
            .build()
            .expect("rate"),
    )
}

async fn one<S>(svc: &mut S)
where
    S: Service<Request<()>, Response = Response<()>>,
    S::Error: std::fmt::Debug,
{
    let res = svc.ready().await.unwrap().call(request()).await.unwrap();
    std::hint::black_box(res);
}

fn bench(c: &mut Criterion) {
    let id = CorrelationId::try_from("3f1c2a9e-5b7d-4e2f-9a61-0c8d7e6b5a43").unwrap();
    let rt = support::runtime();
    let mut group = c.benchmark_group("stack");
    group.throughput(Throughput::Elements(1));

    group.bench_function("bare", |b| {
        let svc = Bare;
        b.to_async(&rt)
            .iter(|| tokio::task::unconstrained(async { one(&mut svc.clone()).await }));
    });
    group.bench_function("client_stack", |b| {
        let _guard = rt.enter();
        let svc = ClientStack::new().layer(Bare);
        b.to_async(&rt).iter(|| {
            let mut svc = svc.clone();
            tokio::task::unconstrained(id.clone().scope(async move { one(&mut svc).await }))
        });
    });
    group.bench_function("server_stack", |b| {
        let _guard = rt.enter();
        let svc = server_stack().layer(Bare);
        b.to_async(&rt).iter(|| {
            let mut svc = svc.clone();
            tokio::task::unconstrained(async move { one(&mut svc).await })
        });
    });
    group.finish();

    let mut group = c.benchmark_group("stack_two_threads");
    group.throughput(Throughput::Elements(2));
    let client = {
        let _guard = rt.enter();
        ClientStack::new().layer(Bare)
    };
    group.bench_function("client_stack", |b| {
        b.iter_custom(|iters| {
            let svc = client.clone();
            let id = id.clone();
            support::run_on_threads(2, iters, move |_, n| {
                let mut svc = svc.clone();
                id.clone().scope(async move {
                    for _ in 0..n {
                        one(&mut svc).await;
                    }
                })
            })
        });
    });
    let server = {
        let _guard = rt.enter();
        server_stack().layer(Bare)
    };
    group.bench_function("server_stack", |b| {
        b.iter_custom(|iters| {
            let svc = server.clone();
            support::run_on_threads(2, iters, move |_, n| {
                let mut svc = svc.clone();
                async move {
                    for _ in 0..n {
                        one(&mut svc).await;
                    }
                }
            })
        });
    });
    group.finish();

    let bare = support::allocations_per_call(10_000, || async { one(&mut Bare).await });
    let client_svc = {
        let _guard = rt.enter();
        ClientStack::new().layer(Bare)
    };
    let client = support::allocations_per_call(10_000, || {
        let mut svc = client_svc.clone();
        id.clone().scope(async move { one(&mut svc).await })
    });
    let server_svc = {
        let _guard = rt.enter();
        server_stack().layer(Bare)
    };
    let server = support::allocations_per_call(10_000, || {
        let mut svc = server_svc.clone();
        async move { one(&mut svc).await }
    });
    println!(
        "allocations per call: bare {bare:.2}, client stack {client:.2}, server stack {server:.2}"
    );
}

criterion_group! {
    name = benches;
    config = support::criterion();
    targets = bench
}
criterion_main!(benches);
