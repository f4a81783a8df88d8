//! The chaos layer allocates nothing on the way through: neither when it is off, nor when it
//! is on and draws no fault. Its own test binary, with one test, so that the counting
//! allocator sees only this test's thread.
#![cfg(feature = "chaos")]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use futures::FutureExt;
use seawall::chaos::{ChaosLayer, Latency};
use tower::{service_fn, BoxError, Layer, Service, ServiceExt};

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

/// The system allocator, counting each thread's allocations.
struct Counting;

// SAFETY: every call goes to `System` unchanged; the count is a const-initialized
// thread-local `Cell`, which neither allocates nor touches the memory handed out.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        System.alloc_zeroed(layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

#[test]
fn calls_that_draw_no_fault_allocate_nothing() {
    // Latency that never fires and no outcome fault: the enabled path draws and passes.
    let chaos = ChaosLayer::builder()
        .latency(0.0, Latency::Fixed(std::time::Duration::from_secs(1)))
        .seed(1)
        .build()
        .unwrap();
    let handle = chaos.handle();
    let mut svc = chaos.layer(service_fn(|n: u64| async move { Ok::<_, BoxError>(n) }));

    for enabled in [false, true] {
        if enabled {
            handle.enable();
        }
        let before = allocations();
        for i in 0..1_000 {
            let ready = svc.ready().now_or_never().expect("ready at once").unwrap();
            let answer = ready
                .call(i)
                .now_or_never()
                .expect("answered at once")
                .unwrap();
            assert_eq!(answer, i);
        }
        assert_eq!(allocations() - before, 0, "enabled: {enabled}");
    }
    assert_eq!(handle.metrics().drawn, 1_000);
}
