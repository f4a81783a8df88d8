//! Random sequences of outcomes, delays and time advances, run through the breaker and through
//! a small reference model; both must take the same decisions.
#![cfg(feature = "circuit-breaker")]

use proptest::prelude::*;
use seawall::circuit_breaker::{Builder, CircuitBreakerLayer, State};
use seawall::classify::Outcome;
use seawall::error::CircuitOpen;
use std::collections::VecDeque;
use std::time::Duration;
use tokio::time::{advance, sleep, Instant};
use tower::{service_fn, Layer, Service, ServiceExt};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Ok,
    Fail,
    Ignore,
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self:?}")
    }
}
impl std::error::Error for Kind {}

#[derive(Debug, Clone, Copy)]
enum Op {
    /// A call that ends with `kind` after `delay_ms` (0: ready at once).
    Call { kind: Kind, delay_ms: u64 },
    /// Time passes.
    Advance { ms: u64 },
}

#[derive(Debug, Clone, Copy)]
enum Policy {
    Consecutive(u32),
    Count {
        size: u32,
        min: u32,
        rate: f64,
    },
    Time {
        length_ms: u64,
        buckets: u32,
        min: u32,
        rate: f64,
    },
}

#[derive(Debug, Clone, Copy)]
struct Cfg {
    policy: Policy,
    slow: Option<(u64, f64)>,
    probes: u32,
    open_ms: u64,
    growth: Option<(f64, u64)>,
}

impl Cfg {
    fn builder(&self) -> Builder {
        let mut b = CircuitBreakerLayer::builder();
        b = match self.policy {
            Policy::Consecutive(n) => b.consecutive_failures(n),
            Policy::Count { size, min, rate } => {
                b.failure_rate(rate).count_window(size).minimum_calls(min)
            }
            Policy::Time {
                length_ms,
                buckets,
                min,
                rate,
            } => b
                .failure_rate(rate)
                .time_window(Duration::from_millis(length_ms), buckets)
                .minimum_calls(min),
        };
        if let Some((ms, rate)) = self.slow {
            b = b.slow_calls(Duration::from_millis(ms), rate);
        }
        if let Some((mult, max_ms)) = self.growth {
            b = b.open_duration_growth(mult, Duration::from_millis(max_ms));
        }
        b.half_open_probes(self.probes)
            .open_duration(Duration::from_millis(self.open_ms))
            .jitter(0.0)
            // Probes here always answer; the maximum wait has tests of its own.
            .max_wait_in_half_open(Duration::ZERO, State::Open)
    }
}

/// The reference: the breaker's rules, written plainly for one caller at a time.
#[derive(Debug)]
enum MState {
    Closed,
    Open { until_us: u64 },
    HalfOpen { done: u32, failed: u32, slow: u32 },
}

#[derive(Debug)]
struct Model {
    cfg: Cfg,
    state: MState,
    trips: u32,
    /// When the breaker last closed: the growth is forgotten once it stayed closed for the
    /// longest open duration.
    closed_at_us: Option<u64>,
    streak: u32,
    /// Count window: (failed, slow) of the last calls. Time window: (bucket, failed, slow).
    window: VecDeque<(u64, bool, bool)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Admit {
    Closed,
    Probe,
    Rejected(Option<u64>),
}

impl Model {
    fn new(cfg: Cfg) -> Self {
        Self {
            cfg,
            state: MState::Closed,
            trips: 0,
            closed_at_us: None,
            streak: 0,
            window: VecDeque::new(),
        }
    }

    /// The state, true without traffic: an open breaker whose time is up is half-open.
    fn state(&mut self, now_us: u64) -> State {
        if matches!(self.state, MState::Open { until_us } if now_us >= until_us) {
            self.state = MState::HalfOpen {
                done: 0,
                failed: 0,
                slow: 0,
            };
        }
        match self.state {
            MState::Closed => State::Closed,
            MState::Open { .. } => State::Open,
            MState::HalfOpen { .. } => State::HalfOpen,
        }
    }

    fn admit(&mut self, now_us: u64) -> Admit {
        match self.state {
            MState::Closed => Admit::Closed,
            MState::Open { until_us } if now_us < until_us => {
                Admit::Rejected(Some(until_us - now_us))
            }
            MState::Open { .. } => {
                self.state = MState::HalfOpen {
                    done: 0,
                    failed: 0,
                    slow: 0,
                };
                Admit::Probe
            }
            MState::HalfOpen { .. } => Admit::Probe,
        }
    }

    fn open(&mut self, now_us: u64) {
        let base = Duration::from_millis(self.cfg.open_ms).as_secs_f64();
        let (mult, max) = match self.cfg.growth {
            Some((m, max_ms)) => (m, Duration::from_millis(max_ms)),
            // The default growth: doubling up to a minute, or the open duration if longer.
            None => (
                2.0,
                Duration::from_millis(self.cfg.open_ms).max(Duration::from_secs(60)),
            ),
        };
        let healthy = matches!(self.state, MState::Closed)
            && self
                .closed_at_us
                .is_some_and(|t| now_us - t >= max.as_micros() as u64);
        if healthy {
            self.trips = 0;
        }
        self.trips += 1;
        let secs = (base * mult.powi(self.trips as i32 - 1)).min(max.as_secs_f64());
        let d = Duration::from_secs_f64(secs).max(Duration::from_micros(1));
        self.state = MState::Open {
            until_us: now_us + d.as_micros() as u64,
        };
    }

    fn close(&mut self, now_us: u64) {
        self.state = MState::Closed;
        self.closed_at_us = Some(now_us);
        self.streak = 0;
        self.window.clear();
    }

    /// Evaluated when a failure or a slow call is recorded: both rates.
    fn trips_on_rates(&self, calls: u64, failures: u64, slows: u64) -> bool {
        let (rate, min) = match self.cfg.policy {
            Policy::Count { rate, min, size } => (rate, min.min(size)),
            Policy::Time { rate, min, .. } => (rate, min),
            Policy::Consecutive(_) => unreachable!(),
        };
        if calls == 0 || calls < u64::from(min) {
            return false;
        }
        (failures > 0 && failures as f64 / calls as f64 >= rate)
            || matches!(self.cfg.slow, Some((_, s)) if slows > 0 && slows as f64 / calls as f64 >= s)
    }

    fn finish(&mut self, admit: Admit, kind: Kind, delay_ms: u64, now_us: u64) {
        if kind == Kind::Ignore {
            return;
        }
        let failed = kind == Kind::Fail;
        let slow = matches!(self.cfg.slow, Some((ms, _)) if delay_ms > 0 && delay_ms >= ms);
        match admit {
            Admit::Rejected(_) => {}
            Admit::Probe => {
                let MState::HalfOpen {
                    done,
                    failed: bad,
                    slow: slows,
                } = &mut self.state
                else {
                    unreachable!("one caller at a time")
                };
                *done += 1;
                *bad += u32::from(failed);
                *slows += u32::from(slow);
                // Resilience4j's rule: the probes' rates against the thresholds (a majority
                // for the consecutive policy), decided as soon as the outcomes settle it.
                let n = f64::from(self.cfg.probes);
                let left = f64::from(self.cfg.probes - *done);
                let rate = match self.cfg.policy {
                    Policy::Count { rate, .. } | Policy::Time { rate, .. } => rate,
                    Policy::Consecutive(_) => 0.5,
                };
                let slow_rate = self.cfg.slow.map(|(_, r)| r);
                let (bad, slows) = (f64::from(*bad), f64::from(*slows));
                let reaches = |n_: f64, r: f64| n_ > 0.0 && n_ / n >= r;
                let reopen = reaches(bad, rate) || slow_rate.is_some_and(|r| reaches(slows, r));
                let close = !reaches(bad + left, rate)
                    && !slow_rate.is_some_and(|r| reaches(slows + left, r));
                if reopen {
                    self.open(now_us);
                } else if close {
                    self.close(now_us);
                }
            }
            Admit::Closed => match self.cfg.policy {
                Policy::Consecutive(n) => {
                    if failed {
                        self.streak += 1;
                        if self.streak >= n {
                            self.open(now_us);
                        }
                    } else {
                        self.streak = 0;
                    }
                }
                Policy::Count { size, .. } => {
                    self.window.push_back((0, failed, slow));
                    if self.window.len() > size as usize {
                        self.window.pop_front();
                    }
                    let calls = self.window.len() as u64;
                    let failures = self.window.iter().filter(|e| e.1).count() as u64;
                    let slows = self.window.iter().filter(|e| e.2).count() as u64;
                    if (failed || slow) && self.trips_on_rates(calls, failures, slows) {
                        self.open(now_us);
                    }
                }
                Policy::Time {
                    length_ms, buckets, ..
                } => {
                    let bucket_us = (Duration::from_millis(length_ms) / buckets).as_micros() as u64;
                    let bucket = now_us / bucket_us;
                    self.window.push_back((bucket, failed, slow));
                    let live = self
                        .window
                        .iter()
                        .filter(|e| e.0 + u64::from(buckets) > bucket);
                    let calls = live.clone().count() as u64;
                    let failures = live.clone().filter(|e| e.1).count() as u64;
                    let slows = live.filter(|e| e.2).count() as u64;
                    if (failed || slow) && self.trips_on_rates(calls, failures, slows) {
                        self.open(now_us);
                    }
                }
            },
        }
    }
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![4 => Just(Kind::Ok), 4 => Just(Kind::Fail), 1 => Just(Kind::Ignore)]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (kind(), prop_oneof![3 => Just(0u64), 1 => 1u64..400])
            .prop_map(|(kind, delay_ms)| Op::Call { kind, delay_ms }),
        1 => (1u64..3_000).prop_map(|ms| Op::Advance { ms }),
    ]
}

fn rate() -> impl Strategy<Value = f64> {
    prop_oneof![Just(0.25), Just(0.5), Just(0.75), Just(1.0)]
}

fn cfg() -> impl Strategy<Value = Cfg> {
    let policy = prop_oneof![
        (1u32..5).prop_map(Policy::Consecutive),
        (1u32..8, 1u32..8, rate()).prop_map(|(size, min, rate)| Policy::Count { size, min, rate }),
        (1_000u64..5_000, 1u32..6, 1u32..8, rate()).prop_map(|(length_ms, buckets, min, rate)| {
            Policy::Time {
                length_ms,
                buckets,
                min,
                rate,
            }
        }),
    ];
    (
        policy,
        proptest::option::of((50u64..300, rate())),
        1u32..4,
        100u64..2_000,
        proptest::option::of((
            prop_oneof![Just(1.0), Just(1.5), Just(2.0)],
            2_000u64..6_000,
        )),
    )
        .prop_map(|(policy, slow, probes, open_ms, growth)| Cfg {
            slow: match policy {
                Policy::Consecutive(_) => None,
                _ => slow,
            },
            policy,
            probes,
            open_ms,
            growth,
        })
}

async fn run(cfg: Cfg, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let layer = cfg
        .builder()
        .classifier(|r: &Result<(), Kind>| match r {
            Ok(()) => Outcome::Success,
            Err(Kind::Ignore) => Outcome::Ignored,
            Err(_) => Outcome::Failure,
        })
        .build()
        .expect("valid config");
    let t0 = Instant::now();
    let handle = layer.handle();
    let mut svc = layer.layer(service_fn(|(kind, delay_ms): (Kind, u64)| async move {
        if delay_ms > 0 {
            sleep(Duration::from_millis(delay_ms)).await;
        }
        match kind {
            Kind::Ok => Ok(()),
            k => Err(k),
        }
    }));
    let mut model = Model::new(cfg);
    let now_us = || (Instant::now() - t0).as_micros() as u64;
    for (i, op) in ops.into_iter().enumerate() {
        match op {
            Op::Advance { ms } => advance(Duration::from_millis(ms)).await,
            Op::Call { kind, delay_ms } => {
                let expected = model.admit(now_us());
                let result = svc.ready().await.unwrap().call((kind, delay_ms)).await;
                let got = match &result {
                    Err(e) => match e.downcast_ref::<CircuitOpen>() {
                        Some(open) => {
                            Admit::Rejected(open.retry_after().map(|d| d.as_micros() as u64))
                        }
                        None => Admit::Closed,
                    },
                    Ok(()) => Admit::Closed,
                };
                let expected_kind = match expected {
                    Admit::Probe => Admit::Closed,
                    e => e,
                };
                prop_assert_eq!(got, expected_kind, "op {}: {:?}", i, op);
                model.finish(expected, kind, delay_ms, now_us());
            }
        }
        prop_assert_eq!(
            handle.state(),
            model.state(now_us()),
            "after op {}: {:?}",
            i,
            op
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn breaker_takes_the_same_decisions_as_the_reference_model(
        cfg in cfg(),
        ops in proptest::collection::vec(op(), 1..120),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap();
        rt.block_on(run(cfg, ops))?;
    }
}

#[test]
fn the_model_trips_like_the_breaker_on_a_known_sequence() {
    // A sanity check of the model itself: 2 failures in a row open a consecutive(2) breaker.
    let mut m = Model::new(Cfg {
        policy: Policy::Consecutive(2),
        slow: None,
        probes: 1,
        open_ms: 1_000,
        growth: None,
    });
    for _ in 0..2 {
        let a = m.admit(0);
        m.finish(a, Kind::Fail, 0, 0);
    }
    assert_eq!(m.state(0), State::Open);
    assert_eq!(m.admit(500_000), Admit::Rejected(Some(500_000)));
    assert_eq!(m.admit(1_000_000), Admit::Probe);
}
