//! The `serde` feature: stacks and layers described in a config document behave as
//! configured, left-out fields are the builders' defaults, bad values are errors that name
//! where they are, and durations read and write in human form.
#![cfg(all(
    feature = "serde",
    feature = "retry",
    feature = "circuit-breaker",
    feature = "bulkhead",
    feature = "rate-limit",
    feature = "correlation-id"
))]

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response, StatusCode};
use proptest::prelude::*;
use seawall::bulkhead::BulkheadLayer;
use seawall::circuit_breaker::{CircuitBreakerLayer, State};
use seawall::config::{
    BulkheadConfig, CircuitBreakerConfig, ClientStackConfig, CorrelationIdConfig, HeaderKeyConfig,
    OpenDurationGrowth, RateLimitConfig, RetryBudgetConfig, RetryConfig, ServerStackConfig,
    SlowCalls, TimeWindow,
};
use seawall::correlation::CorrelationIdLayer;
use seawall::error::{CircuitOpen, ConfigError};
use seawall::retry::{Jitter, RetryBudget, RetryLayer};
use seawall::stack::{ClientStack, ServerStack};
use tokio::sync::Notify;
use tower::{service_fn, BoxError, Layer, Service, ServiceExt};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn get(client: &str) -> Request<String> {
    Request::get("/")
        .header("x-client-id", client)
        .body(String::new())
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_server_stack_from_toml_limits_caps_and_tags_as_configured() {
    let config: ServerStackConfig = toml::from_str(
        r#"
        [correlation]
        header_names = ["x-request-id"]

        [rate_limit]
        rate = 2
        per = "1s"
        key = { header = "x-client-id" }

        [bulkhead]
        max_concurrent = 2
        "#,
    )
    .unwrap();
    let stack = config.build().unwrap();
    let release = Arc::new(Notify::new());
    let app = stack.layer(service_fn({
        let release = release.clone();
        move |req: Request<String>| {
            let release = release.clone();
            async move {
                if req.headers()["x-client-id"] == "holder" {
                    release.notified().await;
                }
                Ok::<_, BoxError>(Response::new(String::from("ok")))
            }
        }
    }));

    // Rate limit: 2 a second per client, burst 2.
    for _ in 0..2 {
        assert_eq!(app.clone().oneshot(get("a")).await.unwrap().status(), 200);
    }
    let refused = app.clone().oneshot(get("a")).await.unwrap();
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(refused.headers()["retry-after"], "1");
    assert_eq!(app.clone().oneshot(get("b")).await.unwrap().status(), 200);
    assert_eq!(stack.rate_limit().limited(), 1);

    // Bulkhead: the third call at once is refused.
    let holders: Vec<_> = (0..2)
        .map(|_| tokio::spawn(app.clone().oneshot(get("holder"))))
        .collect();
    for _ in 0..100 {
        if stack.bulkhead().in_flight() == 2 {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(stack.bulkhead().in_flight(), 2);
    let full = app.clone().oneshot(get("c")).await.unwrap();
    assert_eq!(full.status(), StatusCode::SERVICE_UNAVAILABLE);
    release.notify_waiters();
    for holder in holders {
        assert_eq!(holder.await.unwrap().unwrap().status(), 200);
    }
    assert_eq!(stack.bulkhead().in_flight(), 0);

    // Correlation: ids under the configured header, kept when valid, made when missing.
    let mut req = get("d");
    req.headers_mut()
        .insert("x-request-id", "abc-123".parse().unwrap());
    let res = app.clone().oneshot(req).await.unwrap();
    assert_eq!(res.headers()["x-request-id"], "abc-123");
    let res = app.oneshot(get("e")).await.unwrap();
    assert_eq!(res.headers()["x-request-id"].len(), 36);
    assert!(res.headers().get("x-correlation-id").is_none());
}

#[tokio::test(start_paused = true)]
async fn a_client_stack_from_toml_retries_and_trips_as_configured() {
    let config: ClientStackConfig = toml::from_str(
        r#"
        attempt_timeout = "1s"

        [retry]
        max_attempts = 2
        initial_delay = "10ms"
        jitter = "none"

        [circuit_breaker]
        consecutive_failures = 3
        open_duration = "30s"

        [bulkhead]
        max_concurrent = 1
        "#,
    )
    .unwrap();
    let stack = config.build().unwrap();
    assert_eq!(stack.attempt_timeout(), Duration::from_secs(1));
    assert_eq!(stack.bulkhead().capacity(), 1);
    let hits = Arc::new(AtomicU32::new(0));
    let client = stack.layer(service_fn({
        let hits = hits.clone();
        move |_: Request<String>| {
            hits.fetch_add(1, Ordering::SeqCst);
            async {
                let mut res = Response::new(String::from("down"));
                *res.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
                Ok::<_, BoxError>(res)
            }
        }
    }));

    // Two attempts, two failures: the answer is the last 503.
    let res = client.clone().oneshot(get("a")).await.unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(hits.load(Ordering::SeqCst), 2);
    assert_eq!(stack.breaker().state(), State::Closed);

    // The third failure in a row trips the breaker; the second attempt meets the open circuit,
    // which half-opens in 30 s, far beyond the 10 ms backoff, so it is not retried.
    let err = client.clone().oneshot(get("a")).await.unwrap_err();
    assert!(err.downcast_ref::<CircuitOpen>().is_some(), "{err}");
    assert_eq!(hits.load(Ordering::SeqCst), 3);
    assert_eq!(stack.breaker().state(), State::Open);

    // Refused at once from now on: the backend sees nothing more.
    let err = client.oneshot(get("a")).await.unwrap_err();
    let open = err.downcast_ref::<CircuitOpen>().unwrap();
    assert!(open.retry_after().unwrap() <= Duration::from_secs(30));
    assert_eq!(hits.load(Ordering::SeqCst), 3);
    assert_eq!(stack.retry().metrics().retries, 2);
}

#[tokio::test(start_paused = true)]
async fn a_standalone_bulkhead_of_two_refuses_the_third_call() {
    let config: BulkheadConfig = toml::from_str("max_concurrent = 2").unwrap();
    let mut svc = config.build().unwrap().layer(service_fn(|()| {
        std::future::pending::<Result<(), BoxError>>()
    }));
    let _first = svc.ready().await.unwrap().call(());
    let _second = svc.ready().await.unwrap().call(());
    let third = svc.ready().await.unwrap().call(());
    // Bounded, so a bulkhead that admits it fails the test instead of hanging it.
    let third = tokio::time::timeout(Duration::from_secs(1), third)
        .await
        .expect("refused at once, not admitted");
    assert!(third.unwrap_err().is::<seawall::error::BulkheadFull>());
}

#[test]
fn breaker_settings_from_a_document_match_the_builder() {
    let doc = r#"
        consecutive_failures = 2
        open_duration = "10s"
        max_wait_in_half_open = "30s"
        close_after_max_wait = true
        metrics_only = true
        adaptive_throttling = 2.0
    "#;
    // Throttling needs a rate policy: the builder's error, through the document.
    let config: CircuitBreakerConfig = toml::from_str(doc).unwrap();
    assert_eq!(config.build().unwrap_err().field(), "consecutive_failures");
    let doc = doc.replace("adaptive_throttling = 2.0", "");
    let config: CircuitBreakerConfig = toml::from_str(&doc).unwrap();
    let built = config.build().unwrap();
    let reference = CircuitBreakerLayer::builder()
        .consecutive_failures(2)
        .open_duration(Duration::from_secs(10))
        .max_wait_in_half_open(Duration::from_secs(30), State::Closed)
        .metrics_only(true)
        .build()
        .unwrap();
    assert_eq!(shape(&built), shape(&reference));
}

/// What a layer's `Debug` shows: its whole validated configuration (no seed or hasher, which
/// are random).
fn shape(layer: &impl std::fmt::Debug) -> String {
    format!("{layer:?}")
}

#[tokio::test(start_paused = true)]
async fn fields_left_out_are_the_builders_defaults() {
    // An empty document is the default config.
    assert_eq!(
        toml::from_str::<ClientStackConfig>("").unwrap(),
        ClientStackConfig::default()
    );
    assert_eq!(
        toml::from_str::<ServerStackConfig>("").unwrap(),
        ServerStackConfig::default()
    );

    // Each layer builds what its builder builds with nothing set.
    assert_eq!(
        shape(&CircuitBreakerConfig::default().build().unwrap()),
        shape(&CircuitBreakerLayer::builder().build().unwrap())
    );
    assert_eq!(
        shape(&BulkheadConfig::default().build().unwrap()),
        shape(&BulkheadLayer::builder().build().unwrap())
    );
    assert_eq!(
        shape(&RetryConfig::default().build().unwrap()),
        shape(&RetryLayer::builder().build().unwrap())
    );
    assert_eq!(
        shape(&CorrelationIdConfig::default().build().unwrap()),
        shape(&CorrelationIdLayer::builder().build().unwrap())
    );
    assert_eq!(
        shape(&RetryBudgetConfig::default().build().unwrap()),
        shape(&RetryBudget::default())
    );
    let mut limit = RateLimitConfig::default();
    limit.rate = Some(10);
    let built = limit.build().unwrap().handle();
    let reference = seawall::rate_limit::RateLimitLayer::builder()
        .rate(10, Duration::from_secs(1))
        .build()
        .unwrap()
        .handle();
    assert_eq!(
        (built.rate(), built.burst()),
        (reference.rate(), reference.burst())
    );

    // The stacks build what `new()` builds.
    assert_eq!(
        shape(&ClientStackConfig::default().build().unwrap()),
        shape(&ClientStack::new())
    );
    let (built, reference) = (
        ServerStackConfig::default().build().unwrap(),
        ServerStack::new(),
    );
    assert_eq!(built.rate_limit().rate(), reference.rate_limit().rate());
    assert_eq!(built.rate_limit().burst(), reference.rate_limit().burst());
    assert_eq!(built.bulkhead().capacity(), reference.bulkhead().capacity());
    assert_eq!(
        built.correlation().header_names(),
        reference.correlation().header_names()
    );

    // A retry section that sets something keeps the client stack's budget...
    let config: ClientStackConfig = toml::from_str("[retry]\nmax_attempts = 2").unwrap();
    let budget = config.build().unwrap().retry().budget().cloned().unwrap();
    let stack_budget = ClientStack::new().retry().budget().cloned().unwrap();
    assert_eq!(shape(&budget), shape(&stack_budget));
    // ...and a standalone retry layer has none, as its builder.
    assert!(RetryConfig::default()
        .build()
        .unwrap()
        .handle()
        .budget()
        .is_none());
}

/// Reads `doc` as a client stack and builds it; the error it must give.
fn client_error(doc: &str) -> ConfigError {
    toml::from_str::<ClientStackConfig>(doc)
        .unwrap_or_else(|e| panic!("{doc}: {e}"))
        .build()
        .expect_err(doc)
}

fn server_error(doc: &str) -> ConfigError {
    toml::from_str::<ServerStackConfig>(doc)
        .unwrap_or_else(|e| panic!("{doc}: {e}"))
        .build()
        .expect_err(doc)
}

#[test]
fn every_invalid_value_is_a_config_error_naming_its_path() {
    let client = [
        ("[bulkhead]\nmax_concurrent = 0", "bulkhead.max_concurrent"),
        ("[bulkhead]\nmax_waiting = 5", "bulkhead.max_waiting"),
        (
            "[circuit_breaker]\nfailure_rate = 1.5",
            "circuit_breaker.failure_rate",
        ),
        (
            "[circuit_breaker]\nconsecutive_failures = 0",
            "circuit_breaker.consecutive_failures",
        ),
        (
            "[circuit_breaker]\nconsecutive_failures = 3\nfailure_rate = 0.5",
            "circuit_breaker.consecutive_failures",
        ),
        (
            "[circuit_breaker]\ncount_window = 10\ntime_window = { length = \"10s\", buckets = 10 }",
            "circuit_breaker.time_window",
        ),
        (
            "[circuit_breaker]\ntime_window = { length = \"10s\", buckets = 0 }",
            "circuit_breaker.time_window",
        ),
        (
            "[circuit_breaker]\nslow_calls = { duration = \"1s\", rate = 0.0 }",
            "circuit_breaker.slow_calls",
        ),
        (
            "[circuit_breaker]\nopen_duration = \"0s\"",
            "circuit_breaker.open_duration",
        ),
        (
            "[circuit_breaker]\nopen_duration_growth = { multiplier = 0.5, max = \"5m\" }",
            "circuit_breaker.open_duration_growth",
        ),
        ("[circuit_breaker]\njitter = 1.0", "circuit_breaker.jitter"),
        (
            "[circuit_breaker]\nhalf_open_probes = 0",
            "circuit_breaker.half_open_probes",
        ),
        ("[retry]\nmax_attempts = 0", "retry.max_attempts"),
        ("[retry]\nmultiplier = 0.5", "retry.multiplier"),
        (
            "[retry]\ninitial_delay = \"2s\"\nmax_delay = \"1s\"",
            "retry.max_delay",
        ),
        ("[retry]\nmax_retry_after = \"2h\"", "retry.max_retry_after"),
        ("[retry]\nattempt_timeout = \"0s\"", "retry.attempt_timeout"),
        ("[retry]\ndeadline = \"0s\"", "retry.deadline"),
        ("[retry]\nbudget = { ratio = -1.0 }", "retry.budget.ratio"),
        ("[retry]\nbudget = { ttl = \"0s\" }", "retry.budget.ttl"),
        ("[retry]\nreplay_limit = 1024", "retry.replay_limit"),
        ("attempt_timeout = \"0s\"", "attempt_timeout"),
        (
            "[correlation]\nheader_name = \"bad header\"",
            "correlation.header_name",
        ),
    ];
    for (doc, path) in client {
        let err = client_error(doc);
        assert_eq!(err.path(), path, "{doc}");
        assert!(err.to_string().contains(&format!("`{path}`")), "{err}");
    }

    let server = [
        ("[rate_limit]\nrate = 0", "rate_limit.rate"),
        ("[rate_limit]\nper = \"1m\"", "rate_limit.rate"),
        ("[rate_limit]\nrate = 5\nper = \"0s\"", "rate_limit.per"),
        ("[rate_limit]\nrate = 5\nburst = 0", "rate_limit.burst"),
        (
            "[rate_limit]\nrate = 5\nmax_keys = 0",
            "rate_limit.max_keys",
        ),
        ("[rate_limit]\nwait_up_to = \"0s\"", "rate_limit.wait_up_to"),
        (
            "[rate_limit]\nkey = { header = \"no spaces\" }",
            "rate_limit.key",
        ),
        (
            "[correlation]\nheader_names = []",
            "correlation.header_names",
        ),
        (
            "[correlation]\nheader_names = [\"x-id\", \"X-Id\"]",
            "correlation.header_names",
        ),
        (
            "[correlation]\nheader_names = [\"a:b\"]",
            "correlation.header_names",
        ),
        ("[correlation]\nmax_len = 0", "correlation.max_len"),
        (
            "[correlation]\nallowed_chars = \"a b\"",
            "correlation.allowed_chars",
        ),
        (
            "[correlation]\nallowed_chars = \"\"",
            "correlation.allowed_chars",
        ),
        ("[bulkhead]\nmax_concurrent = 0", "bulkhead.max_concurrent"),
    ];
    for (doc, path) in server {
        let err = server_error(doc);
        assert_eq!(err.path(), path, "{doc}");
        assert!(err.to_string().contains(&format!("`{path}`")), "{err}");
    }

    // Standalone, the path is the field; a setting the build cannot use is refused.
    let err = RateLimitConfig::default().build().unwrap_err();
    assert_eq!((err.layer(), err.path().as_ref()), ("rate_limit", "rate"));
    let mut keyed = RateLimitConfig::default();
    keyed.rate = Some(5);
    keyed.key = Some(HeaderKeyConfig::new("x-client-id"));
    assert_eq!(keyed.build().unwrap_err().path(), "key");
    assert!(keyed.build_http().is_ok());
    let mut retry = RetryConfig::default();
    retry.idempotency_key = Some(true);
    assert_eq!(retry.build().unwrap_err().path(), "idempotency_key");
    assert!(retry.build_http().is_ok());
    retry.replay_limit = Some(1024);
    assert_eq!(retry.build_http().unwrap_err().path(), "replay_limit");
    assert!(retry.build_http_replay().is_ok());
    retry.budget = Some(RetryBudgetConfig::default());
    retry.budget.as_mut().unwrap().ratio = Some(f64::NAN);
    assert_eq!(
        retry.build_http_replay().unwrap_err().path(),
        "budget.ratio"
    );
}

#[test]
fn reading_errors_name_the_field() {
    let read = |doc: &str| {
        toml::from_str::<ClientStackConfig>(doc)
            .unwrap_err()
            .to_string()
    };
    for (doc, says) in [
        (
            "[bulkhead]\nmax_concurent = 3",
            "unknown field `max_concurent`",
        ),
        ("[retry]\nbudget = { ratoi = 0.1 }", "unknown field `ratoi`"),
        ("[retyr]\nmax_attempts = 3", "unknown field `retyr`"),
        (
            "[bulkhead]\nmax_wait = \"25 0ms\"",
            "invalid duration \"25 0ms\" for `max_wait`: 25 has no unit",
        ),
        (
            "[retry]\nbudget = { ttl = \"10 seconds\" }",
            "invalid duration \"10 seconds\" for `budget.ttl`",
        ),
        (
            "[circuit_breaker]\ntime_window = { length = \"ten\", buckets = 10 }",
            "invalid duration \"ten\" for `time_window.length`",
        ),
        (
            "[bulkhead]\nmax_wait = 250",
            "expected a duration for `max_wait`",
        ),
        (
            "[retry]\njitter = \"fuller\"",
            "invalid jitter \"fuller\" for `jitter`",
        ),
        (
            "[circuit_breaker]\ntime_window = { length = \"10s\" }",
            "missing field `buckets`",
        ),
        ("[bulkhead]\nmax_concurrent = \"ten\"", "max_concurrent"),
    ] {
        let err = read(doc);
        assert!(err.contains(says), "{doc}\n-> {err}");
    }

    // Any serde format: JSON says the same (with a line and column instead of the key).
    let err = serde_json::from_str::<ServerStackConfig>(r#"{"rate_limit": {"per": "1 minute"}}"#)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("invalid duration \"1 minute\" for `per`"),
        "{err}"
    );
}

#[test]
fn durations_read_in_human_form() {
    let read = |text: &str| {
        toml::from_str::<BulkheadConfig>(&format!("max_wait = {text:?}")).map(|c| c.max_wait)
    };
    for (text, want) in [
        ("250ms", ms(250)),
        ("2s", ms(2_000)),
        ("1s 500ms", ms(1_500)),
        ("1.5s", ms(1_500)),
        ("2m", ms(120_000)),
        ("1m 30s", ms(90_000)),
        ("1m30s", ms(90_000)),
        ("1h", ms(3_600_000)),
        ("100us", Duration::from_micros(100)),
        ("0", Duration::ZERO),
    ] {
        assert_eq!(read(text).unwrap(), Some(want), "{text}");
    }
    for garbage in [
        "", "250", "25 0ms", "ms", "1 s s", "-1s", "1e3ms", "1sec", "1.5ns", "∞", "1s,2s",
    ] {
        assert!(read(garbage).is_err(), "{garbage:?} was read");
    }
}

/// Every field set, with values every layer accepts.
fn full_configs() -> (ClientStackConfig, ServerStackConfig) {
    let mut client = ClientStackConfig::default();
    client.attempt_timeout = Some(ms(2_500));
    client.correlation.header_name = Some("x-request-id".into());
    let r = &mut client.retry;
    r.max_attempts = Some(4);
    r.initial_delay = Some(ms(250));
    r.multiplier = Some(1.5);
    r.max_delay = Some(ms(90_000));
    r.jitter = Some(Jitter::Decorrelated);
    r.max_retry_after = Some(ms(30_000));
    r.attempt_timeout = Some(ms(1_500));
    r.deadline = Some(ms(10_000));
    r.seed = Some(7);
    r.idempotency_key = Some(true);
    let mut budget = RetryBudgetConfig::default();
    budget.ratio = Some(0.1);
    budget.min_per_sec = Some(5);
    budget.ttl = Some(ms(20_000));
    r.budget = Some(budget);
    let b = &mut client.circuit_breaker;
    b.failure_rate = Some(0.25);
    b.time_window = Some(TimeWindow {
        length: ms(10_000),
        buckets: 10,
    });
    b.minimum_calls = Some(20);
    b.slow_calls = Some(SlowCalls {
        duration: ms(2_000),
        rate: 0.5,
    });
    b.open_duration = Some(ms(90_000));
    b.open_duration_growth = Some(OpenDurationGrowth {
        multiplier: 2.0,
        max: ms(600_000),
    });
    b.jitter = Some(0.1);
    b.jitter_seed = Some(42);
    b.half_open_probes = Some(3);
    b.event_capacity = Some(16);
    let h = &mut client.bulkhead;
    h.max_concurrent = Some(10);
    h.max_wait = Some(ms(50));
    h.max_waiting = Some(100);
    h.retry_after = Some(ms(1_000));

    let mut server = ServerStackConfig::default();
    server.correlation.header_names = Some(vec!["x-request-id".into(), "x-correlation-id".into()]);
    server.correlation.max_len = Some(64);
    server.correlation.allowed_chars = Some("0123456789abcdef-".into());
    let l = &mut server.rate_limit;
    l.rate = Some(100);
    l.per = Some(ms(60_000));
    l.burst = Some(20);
    l.wait_up_to = Some(ms(250));
    l.max_keys = Some(1_000);
    let mut key = HeaderKeyConfig::new("x-client-id");
    key.max_len = Some(64);
    l.key = Some(key);
    server.bulkhead = client.bulkhead.clone();
    (client, server)
}

#[test]
fn a_config_written_and_read_back_is_the_same() {
    let (client, server) = full_configs();
    client.build().unwrap();
    server.build().unwrap();

    let text = toml::to_string(&client).unwrap();
    assert_eq!(toml::from_str::<ClientStackConfig>(&text).unwrap(), client);
    for written in [
        "attempt_timeout = \"2s 500ms\"",
        "max_delay = \"1m 30s\"",
        "jitter = \"decorrelated\"",
        "open_duration = \"1m 30s\"",
        "max = \"10m\"",
        "length = \"10s\"",
    ] {
        assert!(text.contains(written), "{written} not in\n{text}");
    }
    let text = toml::to_string(&server).unwrap();
    assert_eq!(toml::from_str::<ServerStackConfig>(&text).unwrap(), server);
    assert!(text.contains("per = \"1m\""), "{text}");

    let json = serde_json::to_string(&client).unwrap();
    assert_eq!(
        serde_json::from_str::<ClientStackConfig>(&json).unwrap(),
        client
    );

    // Only what was set is written.
    assert_eq!(
        toml::to_string(&BulkheadConfig::default()).unwrap().trim(),
        ""
    );
}

proptest! {
    #[test]
    fn any_duration_is_written_in_human_form_and_read_back(
        secs in prop_oneof![0u64..100_000, any::<u64>()],
        nanos in prop_oneof![Just(0u32), 0u32..1_000_000_000],
    ) {
        let mut config = BulkheadConfig::default();
        config.max_wait = Some(Duration::new(secs, nanos));
        let json = serde_json::to_string(&config).unwrap();
        prop_assert_eq!(serde_json::from_str::<BulkheadConfig>(&json).unwrap(), config);
    }

    #[test]
    fn any_string_is_read_or_refused_without_panic(text in any::<String>()) {
        let doc = serde_json::json!({ "max_wait": text });
        if let Ok(config) = serde_json::from_value::<BulkheadConfig>(doc) {
            // What is read writes back to a form that reads the same.
            let again = serde_json::to_value(&config).unwrap();
            prop_assert_eq!(serde_json::from_value::<BulkheadConfig>(again).unwrap(), config);
        }
    }

    #[test]
    fn strings_made_of_duration_characters_never_panic(text in "[0-9 .a-zµ]{0,24}") {
        let _ = serde_json::from_value::<BulkheadConfig>(serde_json::json!({ "max_wait": text }));
    }
}

#[tokio::test]
async fn the_readme_config_builds_the_stack_it_describes() {
    let readme = include_str!("../README.md");
    let start = readme
        .find("```toml\n# server.toml")
        .expect("the README's server.toml")
        + 7;
    let doc = &readme[start..start + readme[start..].find("```").unwrap()];
    let stack = toml::from_str::<ServerStackConfig>(doc)
        .unwrap()
        .build()
        .unwrap();
    assert_eq!(stack.rate_limit().rate(), (100, Duration::from_secs(1)));
    assert_eq!(stack.rate_limit().burst(), 20);
    assert_eq!(stack.bulkhead().capacity(), 64);
    assert_eq!(stack.correlation().header_names()[0], "x-request-id");
    // A config-built stack joins a health report as any other.
    let health = seawall::health::HealthRegistry::new();
    stack.register_health(&health, "server");
    assert_eq!(health.report().components().len(), 2);
}
