//! The limiter against a reference model: a token bucket counted in nanoseconds of credit,
//! fed random arrival times.

use std::time::Duration;

use proptest::prelude::*;
use seawall::error::RateLimited;
use seawall::rate_limit::RateLimitLayer;
use tower::{service_fn, BoxError, Layer, ServiceExt};

/// A token bucket: `credit` nanoseconds, one call costs `t`, at most `burst * t` kept.
struct Model {
    t: u64,
    cap: u64,
    credit: u64,
    last: u64,
}

impl Model {
    fn new(n: u32, per: Duration, burst: u32) -> Self {
        // The documented emission interval: per / n, rounded up to the nanosecond.
        let t = per.as_nanos().div_ceil(u128::from(n)) as u64;
        Self {
            t,
            cap: t * u64::from(burst),
            credit: t * u64::from(burst),
            last: 0,
        }
    }

    /// `Ok(())` if a call at `now` is admitted, else `Err(retry_after)`.
    fn call(&mut self, now: u64) -> Result<(), Duration> {
        self.credit = (self.credit + (now - self.last)).min(self.cap);
        self.last = now;
        if self.credit >= self.t {
            self.credit -= self.t;
            Ok(())
        } else {
            Err(Duration::from_nanos(self.t - self.credit))
        }
    }
}

fn arrivals() -> impl Strategy<Value = Vec<u64>> {
    // Gaps in nanoseconds: many zero or tiny, some long.
    prop::collection::vec(
        prop_oneof![
            3 => Just(0u64),
            4 => 0u64..50_000_000,
            2 => 0u64..2_000_000_000,
        ],
        1..80,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn gcra_matches_a_token_bucket(
        n in 1u32..20,
        per_ms in 1u64..5_000,
        burst in 1u32..8,
        gaps in arrivals(),
    ) {
        let per = Duration::from_millis(per_ms);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        rt.block_on(async move {
            let layer = RateLimitLayer::builder().rate(n, per).burst(burst).build().unwrap();
            let svc = layer.layer(service_fn(|()| async { Ok::<_, BoxError>(()) }));
            let mut model = Model::new(n, per, burst);
            let start = tokio::time::Instant::now();
            for gap in gaps {
                tokio::time::advance(Duration::from_nanos(gap)).await;
                let now = start.elapsed().as_nanos() as u64;
                let got = svc.clone().oneshot(()).await.map_err(|e| {
                    e.downcast_ref::<RateLimited>().expect("a rate-limit rejection").retry_after()
                });
                prop_assert_eq!(got, model.call(now), "at {} ns", now);
            }
            Ok(())
        })?;
    }
}
