//! The retry layer's `tracing` events, in a test binary of their own: tracing caches each
//! event's interest per process, and tests on other threads that hit the same events before
//! this test's subscriber exists can leave debug events filtered out.
#![cfg(feature = "retry")]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use seawall::retry::{Jitter, RetryBudget, RetryLayer};
use tower::{service_fn, BoxError, Layer, ServiceExt};

/// A service that always fails with `"refused"`.
fn always_refused(
) -> impl tower::Service<(), Response = (), Error = BoxError, Future = impl Send> + Clone {
    service_fn(|()| async { Err::<(), BoxError>("refused".into()) })
}

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn retries_and_budget_exhaustion_are_traced_under_seawall_retry() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    tracing::subscriber::with_default(subscriber, || {
        // Other tests in this binary may have registered the layer's callsites, on other
        // threads, before this subscriber existed, caching "no interest"; ask again.
        tracing::callsite::rebuild_interest_cache();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        rt.block_on(async {
            let budget = RetryBudget::builder()
                .ratio(0.0)
                .min_per_sec(1)
                .ttl(Duration::from_secs(1))
                .build()
                .unwrap();
            let layer = RetryLayer::builder()
                .jitter(Jitter::None)
                .budget(budget)
                .build()
                .unwrap();
            let _ = layer.layer(always_refused()).oneshot(()).await;
        });
    });
    let out = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let retry = out
        .lines()
        .find(|l| l.contains("retrying"))
        .unwrap_or_else(|| panic!("a retry event in {out:?}"));
    assert!(retry.contains("seawall::retry"), "{retry}");
    assert!(
        retry.contains("attempt=1") && retry.contains("delay_ms=100"),
        "{retry}"
    );
    assert!(retry.contains("refused"), "{retry}");
    let empty = out
        .lines()
        .find(|l| l.contains("retry budget exhausted"))
        .expect("a budget event");
    assert!(
        empty.contains("WARN") && empty.contains("attempt=2"),
        "{empty}"
    );
}
