//! The full client stack and the full server stack, happy path, against the bare service.
//!
//! - client: `ClientStack::new()` (propagation -> retry with budget -> breaker -> bulkhead ->
//!   tower `Timeout` 15 s) around a bare HTTP service, inside a correlation scope, as a
//!   handler's outbound call runs;
//! - server: `ServerStack` (correlation id -> HTTP face -> per-client rate limit, keyed by
//!   `x-client-id`, with a rate no bench reaches -> bulkhead) in front of a bare handler, with
//!   an incoming valid id.
//!
//! Every call builds its request as hyper's parser hands it over: headers whose values (and
//! the path) are slices of one shared buffer, in a map sized for them. The server's request
//! carries an `x-correlation-id`; the client's does not, so the propagation layer has its job
//! to do (it adds the id of the scope). Each stack has its own bare row, which builds the
//! same request: read a stack's cost as the difference from its bare row. The service is
//! held across calls, as a connection task holds it; the "cloned per call" rows add the clone
//! (and drop) that axum's `Router` makes per request.
//!
//! The summary table comes first: the fastest of many short rounds, the subjects' rounds
//! interleaved, so that every subject sees the same machine (a shared, busy machine moves
//! criterion's medians by a microsecond from one subject to the next). Criterion groups follow.
//!
//! Run: `cargo bench --all-features --bench stack` (`-- nomatchxyz` prints only the table).
mod support;

use std::convert::Infallible;
use std::future::{ready, Ready};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, Criterion, Throughput};
use http::header::{HeaderName, CONTENT_TYPE, HOST, USER_AGENT};
use http::{HeaderMap, HeaderValue, Method, Request, Response, Uri};
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

const ID: &str = "3f1c2a9e-5b7d-4e2f-9a61-0c8d7e6b5a43";
const CLIENT_ID: HeaderName = HeaderName::from_static("x-client-id");
const CORRELATION_ID: HeaderName = HeaderName::from_static("x-correlation-id");

/// What one request's head leaves in the read buffer: the path and the header values.
const HEAD: &str = "/items/7example.combench/1.0client-423f1c2a9e-5b7d-4e2f-9a61-0c8d7e6b5a43";

thread_local! {
    /// A connection's read buffer: every request's values are slices of it (a reference count
    /// each, no copy), as hyper's are.
    static BUFFER: Bytes = Bytes::from(HEAD.as_bytes().to_vec());
}

/// A request as it comes off the wire; with `x-correlation-id` when `with_id`.
fn request(with_id: bool) -> Request<()> {
    let buf = BUFFER.with(Bytes::clone);
    let value = |from: usize, len: usize| {
        HeaderValue::from_maybe_shared(buf.slice(from..from + len)).expect("value")
    };
    let mut headers = HeaderMap::with_capacity(4);
    headers.insert(HOST, value(8, 11));
    headers.insert(USER_AGENT, value(19, 9));
    headers.insert(CLIENT_ID, value(28, 9));
    if with_id {
        headers.insert(CORRELATION_ID, value(37, 36));
    }
    let mut req = Request::new(());
    *req.method_mut() = Method::GET;
    *req.uri_mut() = Uri::from_maybe_shared(buf.slice(0..8)).expect("path");
    *req.headers_mut() = headers;
    req
}

fn server_stack() -> ServerStack<HeaderKey> {
    ServerStack::new().with_rate_limit(
        RateLimitLayer::builder()
            .rate(1_000_000_000, Duration::from_secs(1))
            .burst(1_000_000_000)
            .key(HeaderKey::new(CLIENT_ID))
            .build()
            .expect("rate"),
    )
}

/// One call: `ready().await`, then `call().await`, as a connection task does.
async fn one<S>(svc: &mut S, with_id: bool)
where
    S: Service<Request<()>, Response = Response<()>>,
    S::Error: std::fmt::Debug,
{
    let res = svc
        .ready()
        .await
        .unwrap()
        .call(request(with_id))
        .await
        .unwrap();
    std::hint::black_box(res);
}

/// How a subject is called.
#[derive(Clone, Copy)]
struct Mode {
    /// The request carries an incoming `x-correlation-id` (server side).
    with_id: bool,
    /// The service is cloned (and dropped) per call, as axum's `Router` does.
    clone_per_call: bool,
}

/// `calls` calls on `svc`.
async fn calls<S>(svc: &mut S, calls: u64, mode: Mode)
where
    S: Service<Request<()>, Response = Response<()>> + Clone,
    S::Error: std::fmt::Debug,
{
    for _ in 0..calls {
        if mode.clone_per_call {
            one(&mut svc.clone(), mode.with_id).await;
        } else {
            one(svc, mode.with_id).await;
        }
    }
}

/// One row of the table: how to time a round on this thread, and rounds on several threads.
struct Subject<'a> {
    name: &'static str,
    /// Runs `n` calls on this thread and returns how long they took.
    round: Box<dyn FnMut(u64) -> Duration + 'a>,
    /// Runs `n` calls on each of `threads` threads at once and returns the wall time.
    threads: Box<dyn Fn(usize, u64) -> Duration + 'a>,
}

/// A subject over `svc`; inside a correlation scope (as a handler's outbound call runs) when
/// `scope` is given. The scope is entered once per round, outside the timing.
fn subject<'a, S>(
    name: &'static str,
    rt: &'a tokio::runtime::Runtime,
    svc: S,
    scope: Option<CorrelationId>,
    mode: Mode,
) -> Subject<'a>
where
    S: Service<Request<()>, Response = Response<()>> + Clone + Send + Sync + 'static,
    S::Error: std::fmt::Debug,
{
    let mut mine = svc.clone();
    let id = scope.clone();
    let round = move |n: u64| {
        let timed = async {
            let start = Instant::now();
            calls(&mut mine, n, mode).await;
            start.elapsed()
        };
        match &id {
            Some(id) => rt.block_on(tokio::task::unconstrained(id.clone().scope(timed))),
            None => rt.block_on(tokio::task::unconstrained(timed)),
        }
    };
    let threads = move |threads: usize, n: u64| {
        let svc = svc.clone();
        let scope = scope.clone();
        support::run_on_threads(threads, n, move |_, n| {
            let mut svc = svc.clone();
            let scope = scope.clone();
            async move {
                match scope {
                    Some(id) => id.scope(calls(&mut svc, n, mode)).await,
                    None => calls(&mut svc, n, mode).await,
                }
            }
        })
    };
    Subject {
        name,
        round: Box::new(round),
        threads: Box::new(threads),
    }
}

fn subjects(rt: &tokio::runtime::Runtime) -> Vec<Subject<'_>> {
    let _guard = rt.enter();
    let id = CorrelationId::try_from(ID).unwrap();
    let client = |clone_per_call| Mode {
        with_id: false,
        clone_per_call,
    };
    let server = |clone_per_call| Mode {
        with_id: true,
        clone_per_call,
    };
    vec![
        subject(
            "bare, client request",
            rt,
            Bare,
            Some(id.clone()),
            client(false),
        ),
        subject(
            "client stack",
            rt,
            ClientStack::new().layer(Bare),
            Some(id.clone()),
            client(false),
        ),
        subject(
            "client stack, cloned per call",
            rt,
            ClientStack::new().layer(Bare),
            Some(id),
            client(true),
        ),
        subject("bare, server request", rt, Bare, None, server(false)),
        subject(
            "server stack",
            rt,
            server_stack().layer(Bare),
            None,
            server(false),
        ),
        subject(
            "server stack, cloned per call",
            rt,
            server_stack().layer(Bare),
            None,
            server(true),
        ),
    ]
}

/// Rounds per subject, interleaved with the other subjects' rounds; the fastest is the figure
/// (on a shared machine, the round least disturbed by other processes). Short rounds, so that
/// many fall between two preemptions.
const ROUNDS: usize = 200;
const CALLS: u64 = 1_000;
/// Two-thread rounds are longer, so that the threads' start-up skew is small against them.
const THREAD_ROUNDS: usize = 10;
const THREAD_CALLS: u64 = 50_000;

/// Prints one markdown table: ns per call and allocations per call on one thread, and the
/// throughput of two threads sharing one stack relative to one thread.
fn summary(_: &mut Criterion) {
    let rt = support::runtime();
    let mut subjects = subjects(&rt);

    // Warm up: lazily built state (a key's entry, a thread's stripe, the allocator's free
    // lists) is not a per-call cost.
    for s in subjects.iter_mut() {
        (s.round)(10 * CALLS);
    }
    let allocs: Vec<f64> = subjects
        .iter_mut()
        .map(|s| {
            let ((), allocs) = support::counting(|| {
                (s.round)(CALLS);
            });
            allocs as f64 / CALLS as f64
        })
        .collect();
    let mut best = vec![f64::MAX; subjects.len()];
    for _ in 0..ROUNDS {
        for (s, best) in subjects.iter_mut().zip(best.iter_mut()) {
            let ns = (s.round)(CALLS).as_nanos() as f64 / CALLS as f64;
            *best = best.min(ns);
        }
    }
    let mut fastest = vec![[Duration::MAX; 2]; subjects.len()];
    for _ in 0..THREAD_ROUNDS {
        for (s, fastest) in subjects.iter().zip(fastest.iter_mut()) {
            for (i, threads) in [1, 2].into_iter().enumerate() {
                fastest[i] = fastest[i].min((s.threads)(threads, THREAD_CALLS));
            }
        }
    }

    println!("\n| subject | ns/call (1 thread) | added to bare | allocs/call | 2-thread throughput vs 1 |");
    println!("|---|---|---|---|---|");
    let mut base = 0;
    for (i, s) in subjects.iter().enumerate() {
        let [one, two] = fastest[i];
        let scaling = 2.0 * one.as_secs_f64() / two.as_secs_f64();
        // Each stack against the bare row before it, which makes the same requests.
        let (added, allocs) = if s.name.starts_with("bare") {
            base = i;
            (String::new(), format!("{:.2}", allocs[i]))
        } else {
            let added = format!(
                "{:+.1} ns ({:.2}x)",
                best[i] - best[base],
                best[i] / best[base]
            );
            (added, format!("{:+.2}", allocs[i] - allocs[base]))
        };
        println!(
            "| {} | {:.1} | {added} | {allocs} | {scaling:.2}x |",
            s.name, best[i]
        );
    }
    println!();
}

fn bench(c: &mut Criterion) {
    let rt = support::runtime();
    let mut subjects = subjects(&rt);
    let mut group = c.benchmark_group("stack");
    group.throughput(Throughput::Elements(1));
    for s in subjects.iter_mut() {
        group.bench_function(s.name, |b| b.iter_custom(|iters| (s.round)(iters)));
    }
    group.finish();

    let mut group = c.benchmark_group("stack_two_threads");
    group.throughput(Throughput::Elements(2));
    for s in subjects.iter() {
        group.bench_function(s.name, |b| b.iter_custom(|iters| (s.threads)(2, iters)));
    }
    group.finish();
}

/// `SEAWALL_PROFILE=NAME` runs only the subject named NAME, one round of
/// `SEAWALL_PROFILE_CALLS` calls (default 1,000,000), for `valgrind --tool=cachegrind` or
/// `callgrind`: instructions per call are the difference of two runs with different call
/// counts, divided by the difference.
fn profile(wanted: &str) {
    let calls = support::profile_calls();
    let rt = support::runtime();
    let mut subjects = subjects(&rt);
    let subject = subjects
        .iter_mut()
        .find(|s| s.name == wanted)
        .unwrap_or_else(|| panic!("no subject named {wanted:?}"));
    (subject.round)(calls);
}

criterion_group! {
    name = benches;
    config = support::criterion();
    targets = summary, bench
}

fn main() {
    support::main(profile, benches);
}
