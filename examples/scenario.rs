//! Does a stack keep a service standing? An open-loop load through four client configurations
//! against a backend whose faults change in scripted phases, on loopback.
//!
//! Run (about 2.5 minutes: four configurations, one after the other, five 6 s phases each):
//!
//! ```text
//! cargo run --release --features chaos --example scenario
//! ```
//!
//! The backend is an axum `Router` behind seawall's own [`ChaosLayer`], whose fault mix a
//! script switches at each phase: **healthy** (answers in 2 ms), **errors** (half the answers
//! `503`), **slow** (20 ms, ten times normal, and a fifth `503`), **hanging** (never answers),
//! **recovered** (healthy again). It counts the requests it receives. The client offers a fixed
//! open-loop load (300 calls a second, each with a 1 s deadline, latency measured from the
//! moment the call was due) through hyper-util's `Client` wrapped in:
//!
//! - **bare**: the client alone;
//! - **tower**: tower's `Retry` (3 attempts, `TpsBudget::default()`, exponential backoff from
//!   100 ms, retrying errors and `5xx`), `ConcurrencyLimit` (25), `Timeout` (250 ms per
//!   attempt);
//! - **tower-resilience**: its `Retry` (the `exponential_backoff()` preset: 3 attempts from
//!   100 ms, retrying errors and `5xx`), `CircuitBreaker` (builder defaults: 50% of the last 100
//!   calls, open 30 s; errors and `5xx` are failures), `Bulkhead` (25, reject when full) and
//!   tower's `Timeout` (250 ms; tower-resilience's own time limiter is not among this crate's
//!   dev-dependencies);
//! - **seawall**: `ClientStack::new().with_attempt_timeout(250 ms)`, its defaults otherwise.
//!
//! Each configuration runs alone against a fresh backend and a fresh client, so that one
//! cannot slow another down on the two cores. The run prints markdown tables (per phase and
//! configuration: goodput, latency percentiles, backend calls per client call, deadline misses,
//! fast rejections, time until the first open-circuit rejection, time to full goodput after
//! recovery), checks the bars of issues #18 and #23 for each seawall configuration, and draws
//! `target/scenario.png`: goodput and p99 over time, the phases shaded.
//!
//! Settings (arguments or environment):
//!
//! | argument | environment | default | what |
//! |---|---|---|---|
//! | `--short` | `SCENARIO_SHORT=1` | off | CI's mode: 0.4 s phases; checks only that every configuration completes and that the numbers are sane |
//! | `--phase SECS` | `SCENARIO_PHASE_SECS` | 6 (short: 0.4) | length of each phase |
//! | `--rate N` | `SCENARIO_RATE` | 300 | calls offered per second |
//! | `--only LIST` | `SCENARIO_ONLY` | all | configurations to run, by name: `bare,tower,tower-resilience,seawall` |
//! | `--seawall VARIANTS` | `SCENARIO_SEAWALL` | `defaults` | seawall configurations, `;`-separated, each `defaults` or `key=value,...` with keys `attempt_timeout` (default 250ms), `bulkhead` (permits), `open` (the breaker's open period, replacing the breaker with the builder's defaults and that period), `probes` (half-open probes, same: the classic breaker instead of the stack's adaptive throttling), `budget` (the retry budget, `RATIO/TTL`, e.g. `0.2/10s`) |
//! | `--out PATH` | `SCENARIO_CHART` | `target/scenario.png` (short: `target/scenario-short.png`) | the chart |
//! | | `SCENARIO_FONT` | DejaVu Sans if installed | a TrueType font for the chart's text; without one the chart has no text |
//!
//! For example, after a change of the breaker's defaults, `SCENARIO_ONLY=seawall cargo run
//! --release --features chaos --example scenario -- --seawall 'defaults;bulkhead=64,open=2s'`.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use http::{Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use seawall::bulkhead::BulkheadLayer;
use seawall::chaos::{ChaosHandle, ChaosLayer, Faults, Latency};
use seawall::circuit_breaker::CircuitBreakerLayer;
use seawall::classify::ServerErrorsAsFailures;
use seawall::error::Rejection;
use seawall::stack::ClientStack;
use tokio::time::Instant;
use tower::retry::backoff::{Backoff, ExponentialBackoff, ExponentialBackoffMaker, MakeBackoff};
use tower::retry::budget::{Budget, TpsBudget};
use tower::util::BoxCloneService;
use tower::{BoxError, Layer, ServiceBuilder, ServiceExt};

type HttpClient = Client<HttpConnector, Full<Bytes>>;
/// Every configuration, as the load generator sees it: a unit request, the backend's answer.
type Configured = BoxCloneService<(), Response<Incoming>, BoxError>;

/// Each call's deadline, from the moment it was due.
const DEADLINE: Duration = Duration::from_secs(1);
/// The seawall stack's and the peers' per-attempt timeout.
const ATTEMPT_TIMEOUT: Duration = Duration::from_millis(250);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

// ---------------------------------------------------------------------------------------------
// Settings

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Healthy,
    Errors,
    Slow,
    Hanging,
    Recovered,
}

const PHASES: [Phase; 5] = [
    Phase::Healthy,
    Phase::Errors,
    Phase::Slow,
    Phase::Hanging,
    Phase::Recovered,
];

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::Healthy => "healthy",
            Phase::Errors => "50% 503",
            Phase::Slow => "slow + 20% 503",
            Phase::Hanging => "hanging",
            Phase::Recovered => "recovered",
        }
    }

    /// What the backend's chaos layer injects in this phase.
    fn faults(self) -> Faults {
        let normal = Latency::Fixed(ms(2));
        match self {
            Phase::Healthy | Phase::Recovered => Faults::none().latency(1.0, normal),
            Phase::Errors => Faults::none()
                .latency(1.0, normal)
                .status(0.5, StatusCode::SERVICE_UNAVAILABLE),
            Phase::Slow => Faults::none()
                .latency(1.0, Latency::Fixed(ms(20)))
                .status(0.2, StatusCode::SERVICE_UNAVAILABLE),
            Phase::Hanging => Faults::none().hang(1.0),
        }
    }

    fn is_outage(self) -> bool {
        matches!(self, Phase::Errors | Phase::Slow | Phase::Hanging)
    }
}

/// A seawall configuration: the defaults, or some of them replaced.
#[derive(Debug, Clone, Default)]
struct SeawallVariant {
    spec: String,
    attempt_timeout: Option<Duration>,
    bulkhead: Option<usize>,
    open: Option<Duration>,
    probes: Option<u32>,
    /// The retry budget's ratio and time to live.
    budget: Option<(f64, Duration)>,
}

impl SeawallVariant {
    fn parse(spec: &str) -> Result<Self, String> {
        let spec = spec.trim();
        let mut v = SeawallVariant {
            spec: spec.to_owned(),
            ..Default::default()
        };
        if spec.is_empty() || spec == "defaults" {
            return Ok(v);
        }
        for pair in spec.split(',') {
            let (key, value) = pair
                .split_once('=')
                .ok_or_else(|| format!("`{pair}`: expected key=value"))?;
            let value = value.trim();
            match key.trim() {
                "attempt_timeout" => v.attempt_timeout = Some(parse_duration(value)?),
                "bulkhead" => v.bulkhead = Some(value.parse().map_err(|e| format!("{e}"))?),
                "open" => v.open = Some(parse_duration(value)?),
                "probes" => v.probes = Some(value.parse().map_err(|e| format!("{e}"))?),
                "budget" => {
                    let (ratio, ttl) = value
                        .split_once('/')
                        .ok_or_else(|| format!("`budget={value}`: expected RATIO/TTL"))?;
                    let ratio = ratio.parse().map_err(|e| format!("{e}"))?;
                    v.budget = Some((ratio, parse_duration(ttl)?));
                }
                other => return Err(format!("unknown seawall setting `{other}`")),
            }
        }
        Ok(v)
    }

    fn name(&self) -> String {
        if self.spec.is_empty() || self.spec == "defaults" {
            "seawall".to_owned()
        } else {
            format!("seawall ({})", self.spec)
        }
    }

    fn stack(&self) -> Result<ClientStack, BoxError> {
        let mut stack = ClientStack::new()
            .with_attempt_timeout(self.attempt_timeout.unwrap_or(ATTEMPT_TIMEOUT))?;
        if let Some(n) = self.bulkhead {
            stack = stack.with_bulkhead(BulkheadLayer::new(n)?);
        }
        if let Some((ratio, ttl)) = self.budget {
            let budget = seawall::retry::RetryBudget::builder()
                .ratio(ratio)
                .ttl(ttl)
                .build()?;
            stack = stack.with_retry(
                seawall::retry::RetryLayer::builder()
                    .http()
                    .budget(budget)
                    .build()?,
            );
        }
        if self.open.is_some() || self.probes.is_some() {
            let mut breaker = CircuitBreakerLayer::builder().classifier(ServerErrorsAsFailures);
            if let Some(open) = self.open {
                breaker = breaker.open_duration(open);
            }
            if let Some(probes) = self.probes {
                breaker = breaker.half_open_probes(probes);
            }
            stack = stack.with_circuit_breaker(breaker.build()?);
        }
        Ok(stack)
    }
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let (number, unit) = s
        .find(|c: char| c.is_ascii_alphabetic())
        .map_or((s, "s"), |i| s.split_at(i));
    let n: f64 = number.trim().parse().map_err(|e| format!("`{s}`: {e}"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" | "min" => n * 60.0,
        _ => return Err(format!("`{s}`: unit must be ms, s or m")),
    };
    Duration::try_from_secs_f64(secs).map_err(|e| format!("`{s}`: {e}"))
}

#[derive(Debug, Clone)]
enum Config {
    Bare,
    Tower,
    TowerResilience,
    Seawall(SeawallVariant),
}

impl Config {
    fn name(&self) -> String {
        match self {
            Config::Bare => "bare".to_owned(),
            Config::Tower => "tower".to_owned(),
            Config::TowerResilience => "tower-resilience".to_owned(),
            Config::Seawall(v) => v.name(),
        }
    }

    fn family(&self) -> &'static str {
        match self {
            Config::Bare => "bare",
            Config::Tower => "tower",
            Config::TowerResilience => "tower-resilience",
            Config::Seawall(_) => "seawall",
        }
    }
}

#[derive(Debug)]
struct Settings {
    short: bool,
    phase: Duration,
    rate: f64,
    configs: Vec<Config>,
    chart: PathBuf,
    /// `/proc/loadavg`'s first three figures when the run started: the machine is shared.
    load: Option<String>,
}

impl Settings {
    fn read() -> Result<Self, String> {
        let mut args = std::env::args().skip(1);
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let mut short = env("SCENARIO_SHORT").is_some_and(|v| v != "0");
        let mut phase = env("SCENARIO_PHASE_SECS");
        let mut rate = env("SCENARIO_RATE");
        let mut only = env("SCENARIO_ONLY");
        let mut seawall = env("SCENARIO_SEAWALL");
        let mut chart = env("SCENARIO_CHART");
        while let Some(arg) = args.next() {
            let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value"));
            match arg.as_str() {
                "--short" => short = true,
                "--phase" => phase = Some(value()?),
                "--rate" => rate = Some(value()?),
                "--only" => only = Some(value()?),
                "--seawall" => seawall = Some(value()?),
                "--out" => chart = Some(value()?),
                // `cargo bench`-style flags, should someone run it that way.
                "--bench" => {}
                other => {
                    return Err(format!(
                        "unknown argument `{other}` (see the example's docs)"
                    ))
                }
            }
        }
        let phase = match phase {
            Some(p) => Duration::try_from_secs_f64(p.parse().map_err(|e| format!("phase: {e}"))?)
                .map_err(|e| format!("phase: {e}"))?,
            None if short => ms(400),
            None => Duration::from_secs(6),
        };
        if phase < ms(100) {
            return Err("a phase must last at least 100 ms".into());
        }
        let rate: f64 = match rate {
            Some(r) => r.parse().map_err(|e| format!("rate: {e}"))?,
            None => 300.0,
        };
        if !(1.0..=5_000.0).contains(&rate) {
            return Err("the rate must lie in 1..=5000 calls a second".into());
        }
        let variants = seawall
            .as_deref()
            .unwrap_or("defaults")
            .split(';')
            .map(SeawallVariant::parse)
            .collect::<Result<Vec<_>, _>>()?;
        let mut configs = vec![Config::Bare, Config::Tower, Config::TowerResilience];
        configs.extend(variants.into_iter().map(Config::Seawall));
        if let Some(only) = only {
            let wanted: BTreeSet<&str> = only.split(',').map(str::trim).collect();
            for name in &wanted {
                if !["bare", "tower", "tower-resilience", "seawall"].contains(name) {
                    return Err(format!("unknown configuration `{name}` in SCENARIO_ONLY"));
                }
            }
            configs.retain(|c| wanted.contains(c.family()));
        }
        let chart = chart.map(PathBuf::from).unwrap_or_else(|| {
            let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
                || Path::new(env!("CARGO_MANIFEST_DIR")).join("target"),
                PathBuf::from,
            );
            target.join(if short {
                "scenario-short.png"
            } else {
                "scenario.png"
            })
        });
        let load = std::fs::read_to_string("/proc/loadavg")
            .ok()
            .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "));
        Ok(Settings {
            short,
            phase,
            rate,
            configs,
            chart,
            load,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// The backend

/// An axum backend behind a chaos layer, on its own runtime and thread.
struct Backend {
    addr: SocketAddr,
    received: Arc<AtomicU64>,
    chaos: ChaosHandle,
    runtime: tokio::runtime::Runtime,
}

impl Backend {
    fn start(seed: u64) -> Result<Self, BoxError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("backend")
            .enable_all()
            .build()?;
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;

        let received = Arc::new(AtomicU64::new(0));
        let chaos = ChaosLayer::builder()
            .http()
            .faults(Phase::Healthy.faults())
            .seed(seed)
            .enabled(true)
            .build()?;
        let handle = chaos.handle();
        let counter = Arc::clone(&received);
        let app = ServiceBuilder::new()
            .map_request(move |req: Request<Incoming>| {
                counter.fetch_add(1, Relaxed);
                req
            })
            .layer(chaos)
            .service(Router::new().route("/", get(|| async { "ok" })));

        runtime.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("a listener");
            loop {
                let stream = match listener.accept().await {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        // Out of file descriptors, most likely: let some close.
                        eprintln!("backend: accept failed: {e}");
                        tokio::time::sleep(ms(10)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let svc = TowerToHyperService::new(app.clone());
                tokio::spawn(async move {
                    // A hung call's connection ends when the runtime is dropped.
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Ok(Backend {
            addr,
            received,
            chaos: handle,
            runtime,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// The four client configurations

fn http_client() -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new()).build(connector)
}

/// A `GET /` to the backend.
fn get_request(uri: &Uri) -> Request<Full<Bytes>> {
    Request::get(uri.clone())
        .body(Full::new(Bytes::new()))
        .expect("a valid request")
}

/// The client as a service of unit requests.
fn bare(
    client: HttpClient,
    uri: Uri,
) -> impl tower::Service<
    (),
    Response = Response<Incoming>,
    Error = BoxError,
    Future = impl std::future::Future<Output = Result<Response<Incoming>, BoxError>> + Send + 'static,
> + Clone
       + Send
       + 'static {
    tower::service_fn(move |()| {
        let call = client.request(get_request(&uri));
        async move { call.await.map_err(BoxError::from) }
    })
}

fn boxed<E: Into<BoxError>>(e: E) -> BoxError {
    e.into()
}

/// tower's retry policy for the tower configuration: errors and `5xx` retried, up to 3
/// attempts, within a `TpsBudget`, after an exponential backoff.
#[derive(Clone)]
struct TowerPolicy {
    attempts: u32,
    budget: Arc<TpsBudget>,
    backoff: ExponentialBackoff,
}

impl<B> tower::retry::Policy<(), Response<B>, BoxError> for TowerPolicy {
    type Future = tokio::time::Sleep;

    fn retry(
        &mut self,
        _: &mut (),
        result: &mut Result<Response<B>, BoxError>,
    ) -> Option<Self::Future> {
        if self.attempts == 1 {
            // One deposit per call, as tower's budget docs do.
            self.budget.deposit();
        }
        let failed = match result {
            Ok(res) => res.status().is_server_error(),
            Err(_) => true,
        };
        if !failed || self.attempts >= 3 || !self.budget.withdraw() {
            return None;
        }
        self.attempts += 1;
        Some(self.backoff.next_backoff())
    }

    fn clone_request(&mut self, _: &()) -> Option<()> {
        Some(())
    }
}

fn build(config: &Config, client: HttpClient, uri: Uri) -> Result<Configured, BoxError> {
    Ok(match config {
        Config::Bare => BoxCloneService::new(bare(client, uri)),
        Config::Tower => {
            let backoff = ExponentialBackoffMaker::new(
                ms(100),
                Duration::from_secs(2),
                0.5,
                Default::default(),
            )?
            .make_backoff();
            let policy = TowerPolicy {
                attempts: 1,
                budget: Arc::new(TpsBudget::default()),
                backoff,
            };
            BoxCloneService::new(
                ServiceBuilder::new()
                    .retry(policy)
                    .concurrency_limit(25)
                    .timeout(ATTEMPT_TIMEOUT)
                    .service(bare(client, uri)),
            )
        }
        Config::TowerResilience => {
            use tower_resilience::bulkhead::BulkheadLayer;
            use tower_resilience::circuitbreaker::CircuitBreakerLayer;
            use tower_resilience::retry::RetryLayer;
            let timed = tower::timeout::Timeout::new(bare(client, uri), ATTEMPT_TIMEOUT);
            let bulkhead = BulkheadLayer::builder()
                .max_concurrent_calls(25)
                .reject_when_full()
                .build()?
                .layer(timed)
                .map_err(boxed);
            let breaker = CircuitBreakerLayer::builder()
                .failure_classifier(|r: &Result<Response<Incoming>, BoxError>| match r {
                    Ok(res) => res.status().is_server_error(),
                    Err(_) => true,
                })
                .build()?
                .layer(bulkhead)
                .map_err(boxed);
            let retry = RetryLayer::<(), Response<Incoming>, BoxError>::exponential_backoff()
                .retry_on_response(|res: &Response<Incoming>| res.status().is_server_error())
                .build()
                .layer(breaker);
            BoxCloneService::new(retry)
        }
        Config::Seawall(variant) => BoxCloneService::new(
            variant
                .stack()?
                .layer(client)
                .map_request(move |()| get_request(&uri)),
        ),
    })
}

/// Whether an error is an open circuit's fast rejection, or a full bulkhead's.
fn rejection(err: &BoxError) -> Option<Outcome> {
    use tower_resilience::bulkhead::BulkheadServiceError;
    use tower_resilience::circuitbreaker::CircuitBreakerError;
    match Rejection::find(&**err) {
        Some(Rejection::CircuitOpen(_)) => return Some(Outcome::Open),
        Some(Rejection::BulkheadFull(_)) => return Some(Outcome::Full),
        _ => {}
    }
    let mut err = err;
    if let Some(e) = err.downcast_ref::<CircuitBreakerError<BoxError>>() {
        match e {
            CircuitBreakerError::OpenCircuit => return Some(Outcome::Open),
            CircuitBreakerError::Inner(inner) => err = inner,
        }
    }
    match err.downcast_ref::<BulkheadServiceError<BoxError>>() {
        Some(e) if e.is_bulkhead() => Some(Outcome::Full),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// One run

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// A `2xx` answer.
    Ok,
    /// Another status (the `503`s that got through).
    Status(u16),
    /// Refused at once by an open circuit.
    Open,
    /// Refused at once by a full bulkhead.
    Full,
    /// Another error (a timed-out attempt, a connection error).
    Error,
    /// No answer within the deadline.
    Missed,
}

#[derive(Debug, Clone, Copy)]
struct Record {
    /// When the call was due, from the start of the run.
    due: Duration,
    /// From due to answered (the deadline for a missed call).
    took: Duration,
    outcome: Outcome,
}

struct Run {
    name: String,
    /// The breaker's open period, where the configuration sets it.
    open: Option<Duration>,
    records: Vec<Record>,
    /// The backend's received-request count at each phase boundary (six of them).
    received: Vec<u64>,
}

async fn one_call(svc: Configured, due: Instant) -> (Duration, Outcome) {
    let call = async move {
        let res = svc.oneshot(()).await?;
        let status = res.status();
        // Read the body to its end, so that the connection goes back to the pool.
        res.into_body().collect().await?;
        Ok::<_, BoxError>(status)
    };
    let outcome = match tokio::time::timeout_at(due + DEADLINE, call).await {
        Err(_) => Outcome::Missed,
        Ok(Ok(status)) if status.is_success() => Outcome::Ok,
        Ok(Ok(status)) => Outcome::Status(status.as_u16()),
        Ok(Err(e)) => rejection(&e).unwrap_or(Outcome::Error),
    };
    (due.elapsed(), outcome)
}

async fn run(config: &Config, settings: &Settings, backend: &Backend) -> Result<Run, BoxError> {
    let uri: Uri = format!("http://{}/", backend.addr).parse()?;
    let svc = build(config, http_client(), uri)?;

    // A few calls before the clock starts, so that the run does not measure connecting.
    for _ in 0..5 {
        let _ = one_call(svc.clone(), Instant::now()).await;
    }

    let start = Instant::now() + ms(20);
    let phase = settings.phase;
    let script = {
        let chaos = backend.chaos.clone();
        let received = Arc::clone(&backend.received);
        tokio::spawn(async move {
            let mut counts = Vec::with_capacity(PHASES.len() + 1);
            for (k, p) in PHASES.iter().enumerate() {
                tokio::time::sleep_until(start + phase * k as u32).await;
                counts.push(received.load(Relaxed));
                chaos.set_faults(p.faults()).expect("valid faults");
            }
            tokio::time::sleep_until(start + phase * PHASES.len() as u32).await;
            counts.push(received.load(Relaxed));
            counts
        })
    };

    let total = phase * PHASES.len() as u32;
    let calls = (total.as_secs_f64() * settings.rate).round() as u64;
    let mut pending = Vec::with_capacity(calls as usize);
    for i in 0..calls {
        let due = start + Duration::from_secs_f64(i as f64 / settings.rate);
        tokio::time::sleep_until(due).await;
        let svc = svc.clone();
        pending.push(tokio::spawn(async move {
            let (took, outcome) = one_call(svc, due).await;
            Record {
                due: due - start,
                took,
                outcome,
            }
        }));
    }
    let mut records = Vec::with_capacity(pending.len());
    for call in pending {
        records.push(call.await?);
    }
    let received = script.await?;
    Ok(Run {
        name: config.name(),
        open: match config {
            Config::Seawall(v) => v.open,
            _ => None,
        },
        records,
        received,
    })
}

// ---------------------------------------------------------------------------------------------
// Figures

#[derive(Debug, Clone, Default)]
struct PhaseStats {
    calls: usize,
    ok: usize,
    /// Successful answers per second.
    goodput: f64,
    p50: Duration,
    p99: Duration,
    p999: Duration,
    /// Requests the backend received per call offered.
    amplification: f64,
    missed: usize,
    /// Refused at once, by an open circuit or a full bulkhead.
    rejected: usize,
    /// From the phase's start to the first call refused by an open circuit.
    first_open: Option<Duration>,
    /// From the phase's start to the first 1 s window (or the phase, if shorter) with at
    /// least 95% of the offered calls answered successfully.
    full_goodput: Option<Duration>,
}

/// The `q` quantile of sorted durations (nearest rank).
fn quantile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn phase_stats(run: &Run, k: usize, settings: &Settings) -> PhaseStats {
    let (from, to) = (settings.phase * k as u32, settings.phase * (k as u32 + 1));
    let calls: Vec<&Record> = run
        .records
        .iter()
        .filter(|r| (from..to).contains(&r.due))
        .collect();
    let mut took: Vec<Duration> = calls.iter().map(|r| r.took).collect();
    took.sort_unstable();
    let count = |o: Outcome| calls.iter().filter(|r| r.outcome == o).count();
    let ok = count(Outcome::Ok);

    let window = settings.phase.min(Duration::from_secs(1));
    let step = window / 10;
    let full_goodput = (0..)
        .map(|i| step * i)
        .take_while(|s| *s + window <= settings.phase)
        .find(|s| {
            let inside: Vec<_> = calls
                .iter()
                .filter(|r| (from + *s..from + *s + window).contains(&r.due))
                .collect();
            let ok = inside.iter().filter(|r| r.outcome == Outcome::Ok).count();
            !inside.is_empty() && ok as f64 >= 0.95 * inside.len() as f64
        });
    PhaseStats {
        calls: calls.len(),
        ok,
        goodput: ok as f64 / settings.phase.as_secs_f64(),
        p50: quantile(&took, 0.5),
        p99: quantile(&took, 0.99),
        p999: quantile(&took, 0.999),
        amplification: (run.received[k + 1] - run.received[k]) as f64 / calls.len().max(1) as f64,
        missed: count(Outcome::Missed),
        rejected: count(Outcome::Open) + count(Outcome::Full),
        first_open: calls
            .iter()
            .filter(|r| r.outcome == Outcome::Open)
            .map(|r| r.due - from)
            .min(),
        full_goodput,
    }
}

fn fmt_ms(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms < 10.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{ms:.0} ms")
    }
}

fn fmt_opt(d: Option<Duration>, settings: &Settings) -> String {
    match d {
        Some(d) if d < Duration::from_secs(10) => format!("{:.1} s", d.as_secs_f64()),
        Some(d) => format!("{:.0} s", d.as_secs_f64()),
        None => format!("> {:.1} s", settings.phase.as_secs_f64()),
    }
}

/// The tables, in markdown.
fn report(runs: &[Run], stats: &[Vec<PhaseStats>], settings: &Settings) -> String {
    let mut out = String::new();
    let names: Vec<&str> = runs.iter().map(|r| r.name.as_str()).collect();
    let _ = writeln!(
        out,
        "Offered load {:.0} calls/s, open loop, deadline {} per call; five phases of {:.1} s; \
         {} cores; load average {} before the run.\n",
        settings.rate,
        fmt_ms(DEADLINE),
        settings.phase.as_secs_f64(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        settings.load.as_deref().unwrap_or("unknown"),
    );

    let pivot = |out: &mut String, title: &str, cell: &dyn Fn(&PhaseStats) -> String| {
        let _ = writeln!(out, "| {title} | {} |", names.join(" | "));
        let _ = writeln!(out, "|---|{}", "---|".repeat(names.len()));
        for (k, phase) in PHASES.iter().enumerate() {
            let cells: Vec<String> = stats.iter().map(|s| cell(&s[k])).collect();
            let _ = writeln!(out, "| {} | {} |", phase.name(), cells.join(" | "));
        }
        let _ = writeln!(out);
    };
    pivot(&mut out, "goodput (ok/s)", &|s| format!("{:.0}", s.goodput));
    pivot(&mut out, "backend calls per call", &|s| {
        format!("{:.2}", s.amplification)
    });
    pivot(&mut out, "p99", &|s| fmt_ms(s.p99));

    let _ = writeln!(
        out,
        "| phase | configuration | goodput (ok/s) | p50 | p99 | p99.9 | backend calls per call \
         | missed deadline | fast rejections | first open-circuit rejection | full goodput after |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|---|");
    for (k, phase) in PHASES.iter().enumerate() {
        for (run, s) in runs.iter().zip(stats) {
            let s = &s[k];
            let opened = if phase.is_outage() {
                s.first_open
                    .map_or("none".to_owned(), |d| format!("{:.2} s", d.as_secs_f64()))
            } else {
                "".to_owned()
            };
            let full = if phase.is_outage() {
                "".to_owned()
            } else {
                fmt_opt(s.full_goodput, settings)
            };
            let _ = writeln!(
                out,
                "| {} | {} | {:.0} | {} | {} | {} | {:.2} | {} | {} | {opened} | {full} |",
                phase.name(),
                run.name,
                s.goodput,
                fmt_ms(s.p50),
                fmt_ms(s.p99),
                fmt_ms(s.p999),
                s.amplification,
                s.missed,
                s.rejected,
            );
        }
    }
    out
}

/// The bars of issues #18 and #23, checked for each seawall configuration against the peers
/// that ran.
fn bars(runs: &[Run], stats: &[Vec<PhaseStats>], settings: &Settings) -> String {
    let mut out = String::new();
    let peer = |name: &str| runs.iter().position(|r| r.name == name).map(|i| &stats[i]);
    let (bare, tower) = (peer("bare"), peer("tower"));
    let mark = |ok: bool| if ok { "yes" } else { "**no**" };
    let idx = |p: Phase| PHASES.iter().position(|q| *q == p).expect("a phase");
    let (errors, slow, hang, recovered) = (
        idx(Phase::Errors),
        idx(Phase::Slow),
        idx(Phase::Hanging),
        idx(Phase::Recovered),
    );
    for (run, s) in runs.iter().zip(stats) {
        if !run.name.starts_with("seawall") {
            continue;
        }
        let _ = writeln!(out, "Bars for {}:\n", run.name);
        let peers = |k: usize| {
            let mut seen = Vec::new();
            for (name, peer) in [("bare", bare), ("tower", tower)] {
                if let Some(p) = peer {
                    seen.push(format!("{name} {:.2}", p[k].amplification));
                }
            }
            if seen.is_empty() {
                String::new()
            } else {
                format!("; peers: {}", seen.join(", "))
            }
        };
        for k in [errors, slow, hang] {
            let _ = writeln!(
                out,
                "- #18, {}: at most 1.1 backend calls per call: {} ({:.2}{}); p99 within the \
                 {} deadline: {} ({})",
                PHASES[k].name(),
                mark(s[k].amplification <= 1.1),
                s[k].amplification,
                peers(k),
                fmt_ms(DEADLINE),
                mark(s[k].p99 <= DEADLINE),
                fmt_ms(s[k].p99),
            );
        }
        if let Some(open) = run.open {
            let _ = writeln!(
                out,
                "- #18, recovered: full goodput within two open periods ({}): {}",
                fmt_opt(Some(open * 2), settings),
                mark(s[recovered].full_goodput.is_some_and(|d| d <= open * 2)),
            );
        }
        if let Some(bare) = bare {
            let _ = writeln!(
                out,
                "- #23, 50% 503: goodput at least bare's ({:.0}): {} ({:.0}); at most 1.3 backend \
                 calls per call: {} ({:.2})",
                bare[errors].goodput,
                mark(s[errors].goodput >= bare[errors].goodput),
                s[errors].goodput,
                mark(s[errors].amplification <= 1.3),
                s[errors].amplification,
            );
        }
        if let Some(tower) = tower {
            let _ = writeln!(
                out,
                "- #23, slow: goodput at least 95% of tower's ({:.0}): {} ({:.0}); at most 1.3 \
                 backend calls per call: {} ({:.2})",
                tower[slow].goodput,
                mark(s[slow].goodput >= 0.95 * tower[slow].goodput),
                s[slow].goodput,
                mark(s[slow].amplification <= 1.3),
                s[slow].amplification,
            );
        }
        let _ = writeln!(
            out,
            "- #23, hanging: every call answered by its deadline: {} ({} missed); at most 0.2 \
             backend calls per call: {} ({:.2})",
            mark(s[hang].missed == 0),
            s[hang].missed,
            mark(s[hang].amplification <= 0.2),
            s[hang].amplification,
        );
        let _ = writeln!(
            out,
            "- #23, recovered: full goodput within 2 s: {} ({})\n",
            mark(
                s[recovered]
                    .full_goodput
                    .is_some_and(|d| d <= Duration::from_secs(2))
            ),
            s[recovered]
                .full_goodput
                .map_or("never".to_owned(), |d| format!("{:.1} s", d.as_secs_f64())),
        );
    }
    out
}

/// What every run must show, short or full: it completed, and its numbers are sane.
fn sanity(runs: &[Run], stats: &[Vec<PhaseStats>], settings: &Settings) -> Vec<String> {
    let mut problems = Vec::new();
    let offered = (settings.phase.as_secs_f64() * PHASES.len() as f64 * settings.rate).round();
    for (run, s) in runs.iter().zip(stats) {
        let healthy = &s[0];
        if run.records.len() as f64 != offered {
            problems.push(format!(
                "{}: {} calls recorded of {offered}",
                run.name,
                run.records.len()
            ));
        }
        if (healthy.ok as f64) < 0.9 * healthy.calls as f64 {
            problems.push(format!(
                "{}: only {} of {} calls succeeded while the backend was healthy",
                run.name, healthy.ok, healthy.calls
            ));
        }
        if !(0.9..=1.1).contains(&healthy.amplification) {
            problems.push(format!(
                "{}: {:.2} backend calls per call while the backend was healthy",
                run.name, healthy.amplification
            ));
        }
        // The deadline is enforced; a call that took much longer was stuck somewhere.
        if let Some(r) = run.records.iter().find(|r| r.took > DEADLINE + ms(500)) {
            problems.push(format!("{}: a call took {}", run.name, fmt_ms(r.took)));
        }
    }
    problems
}

// ---------------------------------------------------------------------------------------------
// The chart

/// Registers a TrueType font for the chart's text: `SCENARIO_FONT`, or DejaVu Sans where
/// Debian's `fonts-dejavu-core` puts it. `false` when there is none: the chart goes without
/// text.
fn register_font() -> bool {
    let candidates = std::env::var_os("SCENARIO_FONT")
        .map(PathBuf::from)
        .into_iter()
        .chain([
            PathBuf::from("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"),
            PathBuf::from("/usr/share/fonts/TTF/DejaVuSans.ttf"),
        ]);
    for path in candidates {
        if let Ok(bytes) = std::fs::read(&path) {
            // plotters keeps registered fonts for the life of the process.
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            let style = plotters::style::FontStyle::Normal;
            if plotters::style::register_font("sans-serif", style, bytes).is_ok() {
                return true;
            }
        }
    }
    false
}

/// Goodput and p99 per bucket of `width`, by the time calls were due.
fn series(run: &Run, width: Duration, total: Duration) -> Vec<(f64, f64, Duration)> {
    let buckets = (total.as_secs_f64() / width.as_secs_f64()).round() as usize;
    let mut took: Vec<Vec<Duration>> = vec![Vec::new(); buckets];
    let mut ok = vec![0usize; buckets];
    for r in &run.records {
        let b = ((r.due.as_secs_f64() / width.as_secs_f64()) as usize).min(buckets - 1);
        took[b].push(r.took);
        ok[b] += usize::from(r.outcome == Outcome::Ok);
    }
    took.iter_mut()
        .zip(ok)
        .enumerate()
        .map(|(b, (t, ok))| {
            t.sort_unstable();
            let mid = (b as f64 + 0.5) * width.as_secs_f64();
            (mid, ok as f64 / width.as_secs_f64(), quantile(t, 0.99))
        })
        .collect()
}

fn draw_chart(runs: &[Run], settings: &Settings, path: &Path) -> Result<bool, BoxError> {
    use plotters::prelude::*;

    let text = register_font();
    let (width, height) = (1200u32, 760u32);
    let mut pixels = vec![0u8; width as usize * height as usize * 3];
    let total = settings.phase * PHASES.len() as u32;
    let bucket = settings.phase / 12;
    let colors = [
        RGBColor(200, 40, 40),
        RGBColor(40, 90, 200),
        RGBColor(220, 140, 0),
        RGBColor(20, 150, 60),
        RGBColor(130, 60, 170),
        RGBColor(0, 160, 170),
        RGBColor(90, 90, 90),
    ];
    let shade = |p: Phase| match p {
        Phase::Healthy | Phase::Recovered => RGBColor(120, 200, 120),
        Phase::Errors => RGBColor(240, 160, 60),
        Phase::Slow => RGBColor(240, 220, 60),
        Phase::Hanging => RGBColor(230, 80, 80),
    };
    let secs = total.as_secs_f64();
    let phase_secs = settings.phase.as_secs_f64();
    let all: Vec<_> = runs.iter().map(|r| series(r, bucket, total)).collect();
    {
        let root = BitMapBackend::with_buffer(&mut pixels, (width, height)).into_drawing_area();
        root.fill(&WHITE)?;
        let root = if text {
            root.titled(
                &format!(
                    "Goodput and p99 latency, {:.0} calls/s offered, {} deadline",
                    settings.rate,
                    fmt_ms(DEADLINE)
                ),
                ("sans-serif", 22),
            )?
        } else {
            root
        };
        let (upper, lower) = root.split_vertically(root.dim_in_pixel().1 / 2);
        let label_x = if text { 35 } else { 5 };
        let label_y = if text { 70 } else { 5 };

        let mut goodput = ChartBuilder::on(&upper)
            .margin(12)
            .x_label_area_size(label_x)
            .y_label_area_size(label_y)
            .build_cartesian_2d(0f64..secs, 0f64..settings.rate * 1.1)?;
        let mut p99 = ChartBuilder::on(&lower)
            .margin(12)
            .x_label_area_size(label_x)
            .y_label_area_size(label_y)
            .build_cartesian_2d(0f64..secs, (1f64..2_000f64).log_scale())?;
        for (k, phase) in PHASES.iter().enumerate() {
            let (x0, x1) = (k as f64 * phase_secs, (k + 1) as f64 * phase_secs);
            let fill = shade(*phase).mix(0.18).filled();
            goodput.draw_series([Rectangle::new([(x0, 0.0), (x1, settings.rate * 1.1)], fill)])?;
            p99.draw_series([Rectangle::new([(x0, 1.0), (x1, 2_000.0)], fill)])?;
            if text {
                goodput.draw_series([Text::new(
                    phase.name(),
                    (x0 + phase_secs * 0.04, settings.rate * 1.06),
                    ("sans-serif", 15),
                )])?;
            }
        }
        if text {
            let whole = |v: &f64| format!("{v:.0}");
            let seconds = |v: &f64| format!("{v}");
            goodput
                .configure_mesh()
                .disable_mesh()
                .x_desc("seconds")
                .y_desc("successful answers per second")
                .x_label_formatter(&seconds)
                .y_label_formatter(&whole)
                .label_style(("sans-serif", 14))
                .draw()?;
            p99.configure_mesh()
                .disable_mesh()
                .x_desc("seconds")
                .y_desc("p99 latency, ms (log)")
                .x_label_formatter(&seconds)
                .y_label_formatter(&whole)
                .label_style(("sans-serif", 14))
                .draw()?;
        } else {
            goodput
                .configure_mesh()
                .disable_mesh()
                .x_labels(0)
                .y_labels(0)
                .draw()?;
            p99.configure_mesh()
                .disable_mesh()
                .x_labels(0)
                .y_labels(0)
                .draw()?;
        }
        for (i, (run, points)) in runs.iter().zip(&all).enumerate() {
            let color = colors[i % colors.len()];
            let style = color.stroke_width(2);
            let line = goodput.draw_series(LineSeries::new(
                points.iter().map(|(x, g, _)| (*x, *g)),
                style,
            ))?;
            if text {
                line.label(run.name.as_str()).legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(3))
                });
            }
            p99.draw_series(LineSeries::new(
                points
                    .iter()
                    .map(|(x, _, p)| (*x, (p.as_secs_f64() * 1000.0).clamp(1.0, 2_000.0))),
                style,
            ))?;
        }
        if text {
            goodput
                .configure_series_labels()
                .position(SeriesLabelPosition::LowerLeft)
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK.mix(0.4))
                .label_font(("sans-serif", 14))
                .draw()?;
        }
        root.present()?;
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let file = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut encoder = png::Encoder::new(file, width, height);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    encoder.set_compression(png::Compression::High);
    encoder.write_header()?.write_image_data(&pixels)?;
    Ok(text)
}

// ---------------------------------------------------------------------------------------------

fn main() -> std::process::ExitCode {
    match scenario() {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::FAILURE,
        Err(e) => {
            eprintln!("scenario: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Runs every configuration, prints the tables and draws the chart; `false` when a run's
/// numbers are not sane.
fn scenario() -> Result<bool, BoxError> {
    let settings = Settings::read()?;
    if settings.configs.is_empty() {
        return Err("no configuration to run".into());
    }
    let mut runs = Vec::new();
    for config in &settings.configs {
        eprintln!("scenario: {} ...", config.name());
        // The same seed for every backend: the same stream of faults for each configuration.
        let backend = Backend::start(18)?;
        let client = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("client")
            .enable_all()
            .build()?;
        let result = client.block_on(run(config, &settings, &backend));
        client.shutdown_background();
        backend.runtime.shutdown_background();
        runs.push(result?);
    }

    let stats: Vec<Vec<PhaseStats>> = runs
        .iter()
        .map(|run| {
            (0..PHASES.len())
                .map(|k| phase_stats(run, k, &settings))
                .collect()
        })
        .collect();
    println!("{}", report(&runs, &stats, &settings));
    if !settings.short {
        println!("{}", bars(&runs, &stats, &settings));
    }
    match draw_chart(&runs, &settings, &settings.chart) {
        Ok(text) => eprintln!(
            "scenario: chart written to {}{}",
            settings.chart.display(),
            if text {
                ""
            } else {
                " (without text: no font found; set SCENARIO_FONT to a .ttf file)"
            }
        ),
        Err(e) => return Err(format!("drawing the chart: {e}").into()),
    }
    let problems = sanity(&runs, &stats, &settings);
    for p in &problems {
        eprintln!("scenario: NOT SANE: {p}");
    }
    if problems.is_empty() {
        eprintln!(
            "scenario: every configuration completed; the numbers are sane ({})",
            if settings.short {
                "short mode"
            } else {
                "full run"
            }
        );
    }
    Ok(problems.is_empty())
}
