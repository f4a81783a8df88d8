//! A health report over the layers you name: HEALTHY, DEGRADED or UNHEALTHY, overall and per
//! component.
//!
//! Handles of breakers, bulkheads and limiters join a [`HealthRegistry`] under a name (any
//! [`HealthCheck`] can, closures included). [`HealthRegistry::report`] gives the worst status
//! of all as the overall one. With the `http` feature, [`HealthRegistry::service`] serves the
//! report as JSON, `200` when healthy or degraded and `503` when unhealthy, for load balancers
//! and orchestrators; in axum, mount it with `Router::route_service("/health", ...)`.
//!
//! What each layer reports:
//!
//! | component | HEALTHY | DEGRADED | UNHEALTHY |
//! |---|---|---|---|
//! | circuit breaker | closed (or disabled) | half-open | open (or forced open) |
//! | bulkhead | below 80% of capacity | at 80% or more of capacity | never: a full bulkhead is doing its job |
//! | rate limit | always: limiting is the limiter doing its job | | |
//!
//! # Example
//!
//! ```
//! use seawall::health::{ComponentHealth, Health, HealthRegistry};
//!
//! let registry = HealthRegistry::new();
//! registry.register("database", || ComponentHealth::new("custom", Health::Healthy, "pool ok"));
//! registry.register("search", || ComponentHealth::new("custom", Health::Degraded, "slow"));
//! let report = registry.report();
//! assert_eq!(report.status(), Health::Degraded);
//! assert_eq!(report.components().len(), 2);
//! assert!(report.to_json().starts_with(r#"{"status":"DEGRADED""#));
//! ```

use std::borrow::Cow;
use std::fmt::{self, Write as _};
use std::sync::{Arc, RwLock};

/// How healthy a component, or the whole, is. Ordered from best to worst.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Health {
    /// Working normally.
    Healthy,
    /// Working, but closer to its limits than it should be (a half-open breaker, a bulkhead
    /// near capacity).
    Degraded,
    /// Not working (an open breaker): send traffic elsewhere.
    Unhealthy,
}

impl Health {
    /// `"HEALTHY"`, `"DEGRADED"` or `"UNHEALTHY"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Health::Healthy => "HEALTHY",
            Health::Degraded => "DEGRADED",
            Health::Unhealthy => "UNHEALTHY",
        }
    }
}

impl fmt::Display for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One component's health, as a [`HealthCheck`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComponentHealth {
    kind: &'static str,
    status: Health,
    detail: Cow<'static, str>,
}

impl ComponentHealth {
    /// A component of `kind` (such as `"circuit_breaker"`) in `status`, with a short detail
    /// for people (such as `"open; half-open in 3s"`).
    pub fn new(kind: &'static str, status: Health, detail: impl Into<Cow<'static, str>>) -> Self {
        Self {
            kind,
            status,
            detail: detail.into(),
        }
    }

    /// The kind of component.
    pub fn kind(&self) -> &'static str {
        self.kind
    }

    /// Its status.
    pub fn status(&self) -> Health {
        self.status
    }

    /// The detail for people.
    pub fn detail(&self) -> &str {
        &self.detail
    }
}

/// Anything that can say how healthy it is: the layers' handles, or a closure.
pub trait HealthCheck: Send + Sync + 'static {
    /// The component's health now.
    fn health(&self) -> ComponentHealth;
}

impl<F> HealthCheck for F
where
    F: Fn() -> ComponentHealth + Send + Sync + 'static,
{
    fn health(&self) -> ComponentHealth {
        self()
    }
}

/// Named health checks, reported together.
///
/// # Clone
/// Clones share the same registry.
#[derive(Clone, Default)]
pub struct HealthRegistry {
    checks: Arc<RwLock<Checks>>,
}

type Checks = Vec<(Cow<'static, str>, Arc<dyn HealthCheck>)>;

impl fmt::Debug for HealthRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<String> = self
            .read()
            .iter()
            .map(|(name, _)| name.to_string())
            .collect();
        f.debug_struct("HealthRegistry")
            .field("components", &names)
            .finish()
    }
}

impl HealthRegistry {
    /// An empty registry; its report is HEALTHY.
    pub fn new() -> Self {
        Self::default()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Checks> {
        // A panic while the lock was held cannot leave the list half-written (push and retain
        // are the only writes), so a poisoned lock is still sound to read.
        self.checks.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds `check` under `name`, replacing any check of that name.
    pub fn register(&self, name: impl Into<Cow<'static, str>>, check: impl HealthCheck) {
        let name = name.into();
        let mut checks = self.checks.write().unwrap_or_else(|e| e.into_inner());
        checks.retain(|(n, _)| *n != name);
        checks.push((name, Arc::new(check)));
    }

    /// Removes the check named `name`; `true` if there was one.
    pub fn unregister(&self, name: &str) -> bool {
        let mut checks = self.checks.write().unwrap_or_else(|e| e.into_inner());
        let before = checks.len();
        checks.retain(|(n, _)| n != name);
        checks.len() != before
    }

    /// Asks every check now. The overall status is the worst component's.
    pub fn report(&self) -> HealthReport {
        let components: Vec<(String, ComponentHealth)> = self
            .read()
            .iter()
            .map(|(name, check)| (name.to_string(), check.health()))
            .collect();
        let status = components
            .iter()
            .map(|(_, c)| c.status)
            .max()
            .unwrap_or(Health::Healthy);
        HealthReport { status, components }
    }

    /// A service answering every request with the report as JSON: `200` when HEALTHY or
    /// DEGRADED, `503` when UNHEALTHY. Mount it in axum with
    /// `Router::route_service("/health", registry.service())`.
    #[cfg(feature = "http")]
    pub fn service(&self) -> HealthService {
        HealthService {
            registry: self.clone(),
        }
    }
}

/// The health of every registered component at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthReport {
    status: Health,
    components: Vec<(String, ComponentHealth)>,
}

impl HealthReport {
    /// The worst status of all components (HEALTHY when there are none).
    pub fn status(&self) -> Health {
        self.status
    }

    /// Each component's name and health, in the order they were registered.
    pub fn components(&self) -> &[(String, ComponentHealth)] {
        &self.components
    }

    /// The health of the component named `name`.
    pub fn component(&self, name: &str) -> Option<&ComponentHealth> {
        self.components
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, c)| c)
    }

    /// The report as JSON:
    /// `{"status":"DEGRADED","components":{"search":{"kind":"...","status":"...","detail":"..."}}}`.
    pub fn to_json(&self) -> String {
        let mut out = String::with_capacity(64 + 96 * self.components.len());
        let _ = write!(out, r#"{{"status":"{}","components":{{"#, self.status);
        for (i, (name, c)) in self.components.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            json_string(&mut out, name);
            out.push_str(r#":{"kind":"#);
            json_string(&mut out, c.kind);
            let _ = write!(out, r#","status":"{}","detail":"#, c.status);
            json_string(&mut out, &c.detail);
            out.push('}');
        }
        out.push_str("}}");
        out
    }
}

/// Writes `s` as a JSON string, escaped per RFC 8259.
fn json_string(out: &mut String, s: &str) {
    out.push('"');
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(feature = "circuit-breaker")]
impl HealthCheck for crate::circuit_breaker::CircuitBreakerHandle {
    /// Closed or disabled: HEALTHY; half-open, or open with its open time over (the next call
    /// probes): DEGRADED; open or forced open: UNHEALTHY.
    fn health(&self) -> ComponentHealth {
        use crate::circuit_breaker::State;
        let m = self.metrics();
        let status = match m.state {
            State::Closed | State::Disabled => Health::Healthy,
            State::HalfOpen => Health::Degraded,
            // The open time is over: the next call is a probe. A breaker half-opens only when a
            // call arrives, so an orchestrator that stops traffic on UNHEALTHY would otherwise
            // never let it recover; report it as half-open.
            State::Open if m.retry_after == Some(std::time::Duration::ZERO) => Health::Degraded,
            State::Open | State::ForcedOpen => Health::Unhealthy,
        };
        let detail = match m.retry_after {
            Some(after) => format!(
                "{}; half-open in {} ms; {} calls, {} failures, {} rejected",
                m.state,
                after.as_millis(),
                m.calls,
                m.failures,
                m.rejections
            ),
            None => format!(
                "{}; {} calls, {} failures, {} rejected",
                m.state, m.calls, m.failures, m.rejections
            ),
        };
        ComponentHealth::new("circuit_breaker", status, detail)
    }
}

#[cfg(feature = "bulkhead")]
impl HealthCheck for crate::bulkhead::BulkheadHandle {
    /// DEGRADED at 80% of capacity in flight or more, else HEALTHY; never UNHEALTHY (a full
    /// bulkhead is doing its job).
    fn health(&self) -> ComponentHealth {
        let m = self.metrics();
        let status = if m.in_flight.saturating_mul(5) >= m.capacity.saturating_mul(4) {
            Health::Degraded
        } else {
            Health::Healthy
        };
        let detail = format!(
            "{} of {} in flight, {} waiting, {} rejected",
            m.in_flight, m.capacity, m.waiting, m.rejected
        );
        ComponentHealth::new("bulkhead", status, detail)
    }
}

#[cfg(feature = "rate-limit")]
impl<K> HealthCheck for crate::rate_limit::RateLimitHandle<K>
where
    K: crate::rate_limit::KeyExtractor + Send + Sync + 'static,
    crate::rate_limit::RateLimitHandle<K>: Send + Sync,
{
    /// Always HEALTHY: limiting is the limiter doing its job. The detail gives the counts.
    fn health(&self) -> ComponentHealth {
        let (n, per) = self.rate();
        let detail = format!(
            "{} per {} ms, burst {}; {} allowed, {} limited, {} keys",
            n,
            per.as_millis(),
            self.burst(),
            self.allowed(),
            self.limited(),
            self.keys()
        );
        ComponentHealth::new("rate_limit", Health::Healthy, detail)
    }
}

#[cfg(feature = "http")]
pub use self::service::HealthService;

#[cfg(feature = "http")]
mod service {
    use super::{Health, HealthRegistry};
    use http::{header, HeaderValue, Request, Response, StatusCode};
    use std::convert::Infallible;
    use std::future::{ready, Ready};
    use std::task::{Context, Poll};
    use tower_service::Service;

    /// Serves a [`HealthRegistry`]'s report as JSON. Made by [`HealthRegistry::service`].
    #[derive(Debug, Clone)]
    pub struct HealthService {
        pub(super) registry: HealthRegistry,
    }

    impl<B> Service<Request<B>> for HealthService {
        type Response = Response<String>;
        type Error = Infallible;
        type Future = Ready<Result<Response<String>, Infallible>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: Request<B>) -> Self::Future {
            let report = self.registry.report();
            let mut res = Response::new(report.to_json());
            if report.status() == Health::Unhealthy {
                *res.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            }
            res.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            res.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            ready(Ok(res))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU8, Ordering};

    fn switchable() -> (Arc<AtomicU8>, impl HealthCheck) {
        let state = Arc::new(AtomicU8::new(0));
        let s = Arc::clone(&state);
        let check = move || {
            let status = match s.load(Ordering::Relaxed) {
                0 => Health::Healthy,
                1 => Health::Degraded,
                _ => Health::Unhealthy,
            };
            ComponentHealth::new("test", status, "")
        };
        (state, check)
    }

    #[test]
    fn overall_status_is_the_worst_component() {
        let registry = HealthRegistry::new();
        assert_eq!(registry.report().status(), Health::Healthy);
        let (a, check_a) = switchable();
        let (b, check_b) = switchable();
        registry.register("a", check_a);
        registry.register("b", check_b);
        assert_eq!(registry.report().status(), Health::Healthy);
        a.store(1, Ordering::Relaxed);
        assert_eq!(registry.report().status(), Health::Degraded);
        b.store(2, Ordering::Relaxed);
        assert_eq!(registry.report().status(), Health::Unhealthy);
        assert_eq!(
            registry.report().component("a").unwrap().status(),
            Health::Degraded
        );
        b.store(0, Ordering::Relaxed);
        a.store(0, Ordering::Relaxed);
        assert_eq!(registry.report().status(), Health::Healthy);
    }

    #[test]
    fn register_replaces_and_unregister_removes() {
        let registry = HealthRegistry::new();
        registry.register("x", || ComponentHealth::new("t", Health::Unhealthy, ""));
        registry.register("x", || ComponentHealth::new("t", Health::Healthy, ""));
        assert_eq!(registry.report().components().len(), 1);
        assert_eq!(registry.report().status(), Health::Healthy);
        assert!(registry.unregister("x"));
        assert!(!registry.unregister("x"));
        assert!(registry.report().components().is_empty());
    }

    #[test]
    fn json_escapes_hostile_names_and_details() {
        let registry = HealthRegistry::new();
        registry.register("a\"b\\c", || {
            ComponentHealth::new("t", Health::Healthy, "line\nbreak\u{1}")
        });
        assert_eq!(
            registry.report().to_json(),
            r#"{"status":"HEALTHY","components":{"a\"b\\c":{"kind":"t","status":"HEALTHY","detail":"line\nbreak\u0001"}}}"#
        );
    }

    #[cfg(feature = "circuit-breaker")]
    #[test]
    fn breaker_handle_reports_its_state() {
        let breaker = crate::circuit_breaker::CircuitBreakerLayer::new();
        let handle = breaker.handle();
        assert_eq!(handle.health().status(), Health::Healthy);
        handle.force_open();
        let h = handle.health();
        assert_eq!(
            (h.kind(), h.status()),
            ("circuit_breaker", Health::Unhealthy)
        );
        assert!(h.detail().starts_with("FORCED_OPEN"), "{}", h.detail());
        handle.disable();
        assert_eq!(handle.health().status(), Health::Healthy);
    }

    #[cfg(feature = "circuit-breaker")]
    #[tokio::test(start_paused = true)]
    async fn an_open_breaker_whose_open_time_is_over_reports_degraded_without_traffic() {
        use std::time::Duration;
        use tower::{Layer, ServiceExt};
        let breaker = crate::circuit_breaker::CircuitBreakerLayer::consecutive_failures(1)
            .open_duration(Duration::from_secs(5))
            .build()
            .unwrap();
        let handle = breaker.handle();
        let svc = breaker.layer(tower::service_fn(|()| async {
            Err::<(), tower::BoxError>("down".into())
        }));
        assert!(svc.oneshot(()).await.is_err());
        assert_eq!(handle.health().status(), Health::Unhealthy);
        tokio::time::advance(Duration::from_secs(5)).await;
        // No call has come to half-open it, but the next one would be a probe.
        assert_eq!(handle.health().status(), Health::Degraded);
    }

    #[cfg(feature = "bulkhead")]
    #[tokio::test]
    async fn bulkhead_handle_is_degraded_at_80_percent_in_flight() {
        use tower::{Layer, Service, ServiceExt};
        let bulkhead = crate::bulkhead::BulkheadLayer::new(5).unwrap();
        let handle = bulkhead.handle();
        let mut svc = bulkhead.layer(tower::service_fn(|()| {
            std::future::pending::<Result<(), tower::BoxError>>()
        }));
        let mut held = Vec::new();
        for n in 1..=5 {
            held.push(svc.ready().await.unwrap().call(()));
            let want = if n >= 4 {
                Health::Degraded
            } else {
                Health::Healthy
            };
            assert_eq!(handle.health().status(), want, "{n} of 5 in flight");
        }
        drop(held);
        assert_eq!(handle.health().status(), Health::Healthy);
    }

    #[cfg(feature = "rate-limit")]
    #[tokio::test(start_paused = true)]
    async fn rate_limit_handle_is_always_healthy_with_counts() {
        use tower::{Layer, ServiceExt};
        let limit = crate::rate_limit::RateLimitLayer::builder()
            .rate(1, std::time::Duration::from_secs(1))
            .build()
            .unwrap();
        let handle = limit.handle();
        let svc = limit.layer(tower::service_fn(|()| async {
            Ok::<_, tower::BoxError>(())
        }));
        svc.clone().oneshot(()).await.unwrap();
        svc.oneshot(()).await.unwrap_err();
        let h = handle.health();
        assert_eq!((h.kind(), h.status()), ("rate_limit", Health::Healthy));
        assert!(
            h.detail().contains("1 allowed, 1 limited"),
            "{}",
            h.detail()
        );
    }

    #[cfg(feature = "http")]
    #[tokio::test]
    async fn service_answers_503_only_when_unhealthy() {
        use tower::ServiceExt;
        let registry = HealthRegistry::new();
        let (state, check) = switchable();
        registry.register("dep", check);
        for (s, want) in [(0, 200), (1, 200), (2, 503)] {
            state.store(s, Ordering::Relaxed);
            let res = registry
                .service()
                .oneshot(http::Request::new(()))
                .await
                .unwrap();
            assert_eq!(res.status(), want);
            assert_eq!(res.headers()["content-type"], "application/json");
        }
    }
}
