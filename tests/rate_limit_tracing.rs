//! Rate limit: `tracing` events. Alone in its binary: a subscriber set for one test thread
//! and callsites first hit by other tests' threads do not mix well.

use std::sync::Arc;
use std::time::Duration;

use seawall::rate_limit::RateLimitLayer;
use tower::{service_fn, BoxError, Layer, ServiceExt};

const SEC: Duration = Duration::from_secs(1);

/// Collects what a `tracing` subscriber writes.
#[derive(Clone, Default)]
struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn rejections_and_rate_changes_are_traced_under_seawall_rate_limit() {
    let out = Captured::default();
    let writer = out.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter("seawall::rate_limit=debug")
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let layer = RateLimitLayer::builder()
        .rate(1, SEC)
        .burst(1)
        .build()
        .unwrap();
    let svc = layer.layer(service_fn(|()| async { Ok::<_, BoxError>(()) }));
    assert!(svc.clone().oneshot(()).await.is_ok());
    assert!(svc.clone().oneshot(()).await.is_err());
    layer.handle().set_rate(2, SEC).unwrap();

    let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
    let rejected = text
        .lines()
        .find(|l| l.contains("rate limited"))
        .unwrap_or_else(|| panic!("no rejection event in {text:?}"));
    assert!(rejected.contains("seawall::rate_limit"), "{rejected}");
    assert!(rejected.contains("retry_after=1s"), "{rejected}");
    assert!(text.contains("rate changed"), "{text}");
}
