//! The correlation-id server layer against a bare HTTP service and against tower-http's
//! `SetRequestId` + `PropagateRequestId` with `MakeRequestUuid`, with an incoming valid id and
//! with a generated one, response echo included; single-threaded and with two threads.
//!
//! The bare service answers a response with one header (`content-type`, as an axum handler's
//! response has), and every request carries `host` and `user-agent`, as every HTTP/1.1 request
//! does: the header maps then have room, and what is measured is each layer's own work. The
//! incoming id is a `Bytes`-backed value shared with the "connection buffer", as hyper hands it
//! over. The "routed" rows send requests whose extension map is already in use, as axum's are
//! when the layer is added with `Router::layer` (axum has put `MatchedPath` there).
//!
//! Besides criterion's figures, `fastest_rounds` prints the fastest of many short interleaved
//! rounds per subject, which holds steady on a busy machine where criterion's means drift.
//!
//! Run: `cargo bench --all-features --bench correlation`
mod support;

use std::cell::RefCell;
use std::convert::Infallible;
use std::future::{ready, Ready};
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, Criterion, Throughput};
use futures::FutureExt;
use http::header::{HeaderName, CONTENT_TYPE, HOST, USER_AGENT};
use http::{HeaderValue, Request, Response};
use seawall::correlation::{CorrelationId, CorrelationIdLayer};
use tower::{Layer, Service, ServiceBuilder, ServiceExt};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};

#[global_allocator]
static ALLOC: support::CountingAlloc = support::CountingAlloc;

const X_CORRELATION_ID: HeaderName = HeaderName::from_static("x-correlation-id");

/// The bare HTTP service: always ready, answers at once with a `text/plain` response.
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
        res.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        ready(Ok(res))
    }
}

/// An incoming id, as hyper hands it over: a slice of a shared buffer.
fn incoming_id() -> HeaderValue {
    let buf = Bytes::copy_from_slice(
        b"GET / HTTP/1.1\r\nx-correlation-id: 3f2b8c1e-9d4a-4b7e-a1c2-5e6f7a8b9c0d\r\n",
    );
    HeaderValue::from_maybe_shared(buf.slice(34..70)).unwrap()
}

/// What a request carries besides `host` and `user-agent`.
#[derive(Clone, Copy)]
struct Kind {
    /// An `x-correlation-id` header.
    id: bool,
    /// An extension already, as axum's `MatchedPath` when the layer is added with
    /// `Router::layer`: then the request's extension map exists before the layer runs.
    routed: bool,
}

const INCOMING: Kind = Kind {
    id: true,
    routed: false,
};
const MISSING: Kind = Kind {
    id: false,
    routed: false,
};
const ROUTED: Kind = Kind {
    id: true,
    routed: true,
};

/// Stands for axum's `MatchedPath`.
#[derive(Clone)]
struct MatchedPath;

/// A request as a server sees it.
#[inline]
fn request(kind: Kind, incoming: &HeaderValue) -> Request<()> {
    let mut req = Request::new(());
    let headers = req.headers_mut();
    headers.insert(HOST, HeaderValue::from_static("api.example.com"));
    headers.insert(USER_AGENT, HeaderValue::from_static("bench/1.0"));
    if kind.id {
        headers.insert(X_CORRELATION_ID, incoming.clone());
    }
    if kind.routed {
        req.extensions_mut().insert(MatchedPath);
    }
    req
}

/// One call: `ready().await`, then `call().await`, as a server's connection task does.
macro_rules! one_call {
    ($svc:expr, $kind:expr, $incoming:expr) => {{
        let svc = &mut $svc;
        let res = svc
            .ready()
            .await
            .unwrap()
            .call(request($kind, $incoming))
            .await;
        std::hint::black_box(res.ok());
    }};
}

fn seawall() -> impl Service<Request<()>, Response = Response<()>, Error = Infallible> + Clone {
    CorrelationIdLayer::new().layer(Bare)
}

fn tower_http() -> impl Service<Request<()>, Response = Response<()>, Error = Infallible> + Clone {
    ServiceBuilder::new()
        .layer(SetRequestIdLayer::new(X_CORRELATION_ID, MakeRequestUuid))
        .layer(PropagateRequestIdLayer::new(X_CORRELATION_ID))
        .service(Bare)
}

/// The least any correlation-id layer must do, without looking the header up, checking it,
/// making a span or scoping the task: put a `CorrelationId` (a clone of the incoming one) in
/// the request's extensions and, with `echo`, a clone of the incoming value on the response.
/// Its cost over the bare service is the floor that the allocator and the `http` types set.
#[derive(Clone)]
struct Floor {
    id: CorrelationId,
    echo: bool,
}

impl Floor {
    fn new(echo: bool) -> Self {
        Self {
            id: CorrelationId::try_from(incoming_id()).unwrap(),
            echo,
        }
    }
}

impl Service<Request<()>> for Floor {
    type Response = Response<()>;
    type Error = Infallible;
    type Future = Ready<Result<Response<()>, Infallible>>;

    #[inline]
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    #[inline]
    fn call(&mut self, mut req: Request<()>) -> Self::Future {
        req.extensions_mut().insert(self.id.clone());
        let echo = self.echo.then(|| req.headers()[X_CORRELATION_ID].clone());
        let Ok(mut res) = Bare.call(req).into_inner();
        if let Some(echo) = echo {
            res.headers_mut().insert(X_CORRELATION_ID, echo);
        }
        ready(Ok(res))
    }
}

/// Every subject: a name, a service, and what its requests carry.
macro_rules! for_each_subject {
    ($m:ident) => {
        $m!("bare, incoming id", Bare, INCOMING);
        $m!("seawall, incoming id", seawall(), INCOMING);
        $m!("tower-http, incoming id", tower_http(), INCOMING);
        $m!("bare, no id", Bare, MISSING);
        $m!("seawall, generated", seawall(), MISSING);
        $m!("tower-http, generated", tower_http(), MISSING);
    };
}

/// The same with a request whose extension map is in use (axum's `Router::layer`).
macro_rules! for_each_routed_subject {
    ($m:ident) => {
        $m!("bare, incoming id, routed", Bare, ROUTED);
        $m!("seawall, incoming id, routed", seawall(), ROUTED);
        $m!("tower-http, incoming id, routed", tower_http(), ROUTED);
    };
}

/// The floor under any correlation-id layer: see [`Floor`].
macro_rules! for_each_floor_subject {
    ($m:ident) => {
        $m!("bare, incoming id", Bare, INCOMING);
        $m!("floor: extension", Floor::new(false), INCOMING);
        $m!("floor: extension + echo", Floor::new(true), INCOMING);
        $m!("bare, incoming id, routed", Bare, ROUTED);
        $m!("floor: extension, routed", Floor::new(false), ROUTED);
        $m!("floor: ext. + echo, routed", Floor::new(true), ROUTED);
    };
}

fn single_thread(c: &mut Criterion) {
    let mut group = c.benchmark_group("correlation/1 thread");
    let rt = support::runtime();
    let incoming = incoming_id();
    macro_rules! bench {
        ($name:expr, $svc:expr, $kind:expr) => {{
            let mut svc = $svc;
            group.bench_function($name, |b| {
                b.iter_custom(|iters| {
                    rt.block_on(tokio::task::unconstrained(async {
                        let start = Instant::now();
                        for _ in 0..iters {
                            one_call!(svc, $kind, &incoming);
                        }
                        start.elapsed()
                    }))
                })
            });
        }};
    }
    for_each_subject!(bench);
    for_each_routed_subject!(bench);
    group.finish();
}

fn two_threads(c: &mut Criterion) {
    let mut group = c.benchmark_group("correlation/threads");
    macro_rules! bench {
        ($name:expr, $svc:expr, $kind:expr) => {{
            let svc = $svc;
            for threads in [1usize, 2] {
                group.throughput(Throughput::Elements(threads as u64));
                let svc = svc.clone();
                group.bench_function(format!("{} x{threads}", $name), move |b| {
                    let svc = svc.clone();
                    b.iter_custom(move |iters| {
                        let svc = svc.clone();
                        support::run_on_threads(threads, iters, move |_, iters| {
                            let mut svc = svc.clone();
                            let incoming = incoming_id();
                            async move {
                                for _ in 0..iters {
                                    one_call!(svc, $kind, &incoming);
                                }
                            }
                        })
                    })
                });
            }
        }};
    }
    for_each_subject!(bench);
    group.finish();
}

fn allocations(_: &mut Criterion) {
    println!("\nallocations per call (request and response included, 1 thread):");
    let incoming = incoming_id();
    macro_rules! count {
        ($name:expr, $svc:expr, $kind:expr) => {{
            let svc = Rc::new(RefCell::new($svc));
            let incoming = &incoming;
            let per_call = support::allocations_per_call(10_000, || {
                let svc = Rc::clone(&svc);
                async move {
                    let call = {
                        let mut svc = svc.borrow_mut();
                        let ready = svc.ready().now_or_never().expect("always ready");
                        ready.unwrap().call(request($kind, incoming))
                    };
                    std::hint::black_box(call.await.ok());
                }
            });
            println!("  {:<32} {per_call:.2}", $name);
        }};
    }
    for_each_subject!(count);
    for_each_routed_subject!(count);
    for_each_floor_subject!(count);
}

/// Criterion's means drift with the other work on a shared machine. This prints, for each
/// subject, the fastest of many short interleaved rounds: the figure a quiet machine gives,
/// and a ratio that every subject measured under the same conditions.
fn fastest_rounds(_: &mut Criterion) {
    const ROUNDS: usize = 300;
    const CALLS: u32 = 4_000;
    let rt = support::runtime();
    let incoming = incoming_id();
    let mut names = Vec::new();
    let mut runs: Vec<Box<dyn FnMut() -> Duration>> = Vec::new();
    macro_rules! add {
        ($name:expr, $svc:expr, $kind:expr) => {{
            let mut svc = $svc;
            let incoming = incoming.clone();
            let rt = &rt;
            names.push($name);
            runs.push(Box::new(move || {
                rt.block_on(tokio::task::unconstrained(async {
                    let start = Instant::now();
                    for _ in 0..CALLS {
                        one_call!(svc, $kind, &incoming);
                    }
                    start.elapsed()
                }))
            }));
        }};
    }
    for_each_subject!(add);
    for_each_routed_subject!(add);
    for_each_floor_subject!(add);
    let mut best = vec![Duration::MAX; runs.len()];
    for _ in 0..ROUNDS {
        for (run, best) in runs.iter_mut().zip(&mut best) {
            *best = (*best).min(run());
        }
    }
    let ns: Vec<f64> = best
        .iter()
        .map(|d| d.as_nanos() as f64 / f64::from(CALLS))
        .collect();
    println!("\nfastest of {ROUNDS} interleaved rounds of {CALLS} calls, ns per call:");
    for (i, name) in names.iter().enumerate() {
        // Subjects come in threes: bare first, then seawall and tower-http on the same requests.
        let bare = ns[i - i % 3];
        println!(
            "  {name:<32} {:>7.1}  +{:>6.1} over bare  x{:.2}",
            ns[i],
            ns[i] - bare,
            ns[i] / bare
        );
    }
}

/// `SEAWALL_PROFILE=NAME` runs only the subject named NAME, `SEAWALL_PROFILE_CALLS` times
/// (default 1,000,000), for `perf record` or `valgrind --tool=callgrind`.
fn profile(wanted: &str) {
    let calls = support::profile_calls();
    let rt = support::runtime();
    let incoming = incoming_id();
    let mut found = false;
    macro_rules! run {
        ($name:expr, $svc:expr, $kind:expr) => {{
            if !found && $name == wanted {
                found = true;
                let mut svc = $svc;
                rt.block_on(tokio::task::unconstrained(async {
                    for _ in 0..calls {
                        one_call!(svc, $kind, &incoming);
                    }
                }));
            }
        }};
    }
    for_each_subject!(run);
    for_each_routed_subject!(run);
    for_each_floor_subject!(run);
    assert!(found, "no subject named {wanted:?}");
}

criterion_group! {
    name = benches;
    config = support::criterion();
    targets = allocations, fastest_rounds, single_thread, two_threads
}

fn main() {
    support::main(profile, benches);
}
