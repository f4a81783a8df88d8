//! The bulkhead's `tracing` events, in a test binary of their own: tracing caches each event's
//! interest per process, and tests on other threads that hit the same events before this
//! test's subscriber exists can leave them filtered out.
#![cfg(feature = "bulkhead")]

use std::sync::Arc;

use seawall::bulkhead::BulkheadLayer;
use std::io::Write;
use std::sync::Mutex;
use tokio::sync::oneshot;
use tower::{service_fn, BoxError, Layer, Service, ServiceExt};
use tracing_subscriber::fmt::MakeWriter;

#[derive(Clone, Default)]
struct Buf(Arc<Mutex<Vec<u8>>>);

impl Write for Buf {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Buf {
    type Writer = Buf;
    fn make_writer(&'a self) -> Buf {
        self.clone()
    }
}

#[tokio::test(start_paused = true)]
async fn rejections_and_resizes_are_traced_under_seawall_bulkhead() {
    let buf = Buf::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(buf.clone())
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    // Other tests in this binary may have registered the layer's callsites, on other
    // threads, before this subscriber existed, caching "no interest"; ask again.
    tracing::callsite::rebuild_interest_cache();

    let layer = BulkheadLayer::builder().max_concurrent(1).build().unwrap();
    let mut svc = layer.layer(service_fn(|rx: oneshot::Receiver<u32>| async move {
        Ok::<_, BoxError>(rx.await.unwrap_or(0))
    }));
    let (_tx, rx) = oneshot::channel();
    let _held = svc.ready().await.unwrap().call(rx);
    let (_tx2, rx2) = oneshot::channel();
    assert!(svc.ready().await.unwrap().call(rx2).await.is_err());
    layer.handle().set_max_concurrent(4).unwrap();

    let out = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("DEBUG seawall::bulkhead") && l.contains("call rejected")),
        "{out}"
    );
    assert!(
        lines.iter().any(|l| l.contains("INFO seawall::bulkhead")
            && l.contains("capacity changed")
            && l.contains("old=1")
            && l.contains("new=4")),
        "{out}"
    );
}
