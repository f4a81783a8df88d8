//! The bulkhead across OS threads: each thread owns a slot of the permits (see the module docs
//! of `src/bulkhead/state.rs`), so these tests move permits between threads, let threads exit
//! with permits in flight, run more threads than there are slots, and resize while permits
//! move. Every call is driven by hand (`now_or_never`, `block_on`): no clock is involved.
#![cfg(feature = "bulkhead")]

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Barrier, Mutex};
use std::task::{Context, Poll};
use std::thread;

use futures::executor::block_on;
use futures::FutureExt;
use seawall::bulkhead::{Bulkhead, BulkheadHandle, BulkheadLayer};
use seawall::error::BulkheadFull;
use tokio::sync::oneshot;
use tower::{service_fn, BoxError, Layer, Service};

type Gated = Bulkhead<
    tower::util::ServiceFn<
        fn(oneshot::Receiver<u32>) -> Pin<Box<dyn Future<Output = Result<u32, BoxError>> + Send>>,
    >,
>;
type Call = <Gated as Service<oneshot::Receiver<u32>>>::Future;

/// A call in flight: its response future (holding the permit) and the sender that ends it.
struct Held {
    call: Call,
    end: oneshot::Sender<u32>,
}

impl Held {
    /// Ends the call and drives it to completion on the current thread, which gives the permit
    /// back from here.
    fn finish(self) {
        let _ = self.end.send(7);
        assert_eq!(block_on(self.call).unwrap(), 7);
    }
}

fn gated_call(
    rx: oneshot::Receiver<u32>,
) -> Pin<Box<dyn Future<Output = Result<u32, BoxError>> + Send>> {
    Box::pin(async move { Ok(rx.await.unwrap_or(0)) })
}

fn gated(layer: &BulkheadLayer) -> Gated {
    let f: fn(oneshot::Receiver<u32>) -> _ = gated_call;
    layer.layer(service_fn(f))
}

fn reject(n: usize) -> BulkheadLayer {
    BulkheadLayer::builder().max_concurrent(n).build().unwrap()
}

/// Makes a call that must be admitted, and keeps it in flight.
fn hold(svc: &mut Gated) -> Held {
    let (end, rx) = oneshot::channel();
    let mut call = svc.call(rx);
    assert!(
        (&mut call).now_or_never().is_none(),
        "an admitted call waits for its sender"
    );
    Held { call, end }
}

/// Makes a call that must be rejected at once.
fn refused(svc: &mut Gated) {
    let (_end, rx) = oneshot::channel();
    match svc.call(rx).now_or_never() {
        Some(Err(e)) => assert!(e.downcast_ref::<BulkheadFull>().is_some(), "{e}"),
        Some(Ok(_)) => panic!("a call over the limit completed"),
        None => panic!("a call over the limit was admitted"),
    }
}

/// Takes `n` permits on a new thread and brings the calls back.
fn hold_on_a_new_thread(svc: &Gated, n: usize) -> Vec<Held> {
    let mut svc = svc.clone();
    thread::spawn(move || (0..n).map(|_| hold(&mut svc)).collect())
        .join()
        .unwrap()
}

fn assert_quiet(handle: &BulkheadHandle) {
    let m = handle.metrics();
    assert_eq!((m.in_flight, m.available), (0, m.capacity), "{m:?}");
}

#[test]
fn a_permit_taken_on_one_thread_can_be_given_back_on_another() {
    let layer = reject(6);
    let handle = layer.handle();
    let mut svc = gated(&layer);

    // Taken on a helper thread, given back here.
    let theirs = hold_on_a_new_thread(&svc, 4);
    let mine: Vec<Held> = (0..2).map(|_| hold(&mut svc)).collect();
    assert_eq!(handle.in_flight(), 6);
    refused(&mut svc);
    for held in theirs {
        held.finish();
    }
    assert_eq!(handle.in_flight(), 2);

    // Taken here, given back on a helper thread (which may own none of their slots).
    thread::spawn(move || mine.into_iter().for_each(Held::finish))
        .join()
        .unwrap();
    assert_quiet(&handle);

    // Nothing was lost or counted twice: exactly the limit again, from either thread.
    let again = hold_on_a_new_thread(&svc, 3);
    let more: Vec<Held> = (0..3).map(|_| hold(&mut svc)).collect();
    refused(&mut svc);
    again.into_iter().chain(more).for_each(Held::finish);
    assert_quiet(&handle);
}

#[test]
fn a_thread_exiting_with_permits_in_flight_leaves_exact_accounting() {
    // Threads one after another, so each new one gets the number (and so the slot) the last
    // one gave back: a new owner must carry on the old owner's count.
    let layer = reject(8);
    let handle = layer.handle();
    let svc = gated(&layer);
    let mut carried = Vec::new();
    for round in 0..40 {
        let mut svc = svc.clone();
        let out = thread::spawn(move || {
            let mut calls: Vec<Held> = (0..3).map(|_| hold(&mut svc)).collect();
            // One given back by its own thread (the owner's path), two carried out.
            calls.pop().unwrap().finish();
            calls
        })
        .join()
        .unwrap();
        carried.extend(out);
        assert_eq!(handle.in_flight(), carried.len(), "round {round}");
        if carried.len() > 4 {
            carried.drain(..).for_each(Held::finish);
            assert_quiet(&handle);
        }
    }
    carried.drain(..).for_each(Held::finish);
    assert_quiet(&handle);

    let mut svc = svc.clone();
    let full: Vec<Held> = (0..8).map(|_| hold(&mut svc)).collect();
    refused(&mut svc);
    full.into_iter().for_each(Held::finish);
    assert_quiet(&handle);
}

#[test]
fn more_threads_than_slots_share_the_limit_exactly() {
    // More live threads than a bulkhead ever has slots (at most 64): those past the slot
    // count take and give back permits as non-owners. They are admitted one at a time, so no
    // race can make one of them refuse while a permit is free.
    const THREADS: usize = 80;
    let layer = reject(THREADS);
    let handle = layer.handle();
    let svc = gated(&layer);
    let go = Arc::new(Barrier::new(THREADS + 1));
    let (admitted, report) = mpsc::channel();
    let mut threads = Vec::new();
    for i in 0..THREADS {
        let mut svc = svc.clone();
        let admitted = admitted.clone();
        let go = Arc::clone(&go);
        threads.push(thread::spawn(move || {
            let held = hold(&mut svc);
            admitted.send(()).unwrap();
            go.wait();
            // Half end their call here, half hand it back to the main thread.
            if i % 2 == 0 {
                held.finish();
                None
            } else {
                Some(held)
            }
        }));
        report.recv().unwrap();
    }
    assert_eq!(handle.in_flight(), THREADS);
    refused(&mut svc.clone());
    go.wait();
    let handed: Vec<Held> = threads
        .into_iter()
        .filter_map(|t| t.join().unwrap())
        .collect();
    assert_eq!(handle.in_flight(), THREADS / 2);
    handed.into_iter().for_each(Held::finish);
    assert_quiet(&handle);
}

#[test]
fn resizing_while_permits_move_between_threads_keeps_exact_accounting() {
    let layer = reject(6);
    let handle = layer.handle();
    let mut svc = gated(&layer);
    let mut calls = hold_on_a_new_thread(&svc, 6);
    refused(&mut svc);

    // Shrink below in flight: nothing is admitted until in flight is below the new limit.
    handle.set_max_concurrent(2).unwrap();
    let moved: Vec<Held> = calls.drain(..3).collect();
    thread::spawn(move || moved.into_iter().for_each(Held::finish))
        .join()
        .unwrap();
    assert_eq!(handle.in_flight(), 3);
    refused(&mut svc);
    calls.pop().unwrap().finish();
    assert_eq!(handle.in_flight(), 2);
    refused(&mut svc);
    calls.pop().unwrap().finish();
    assert_eq!(handle.in_flight(), 1);
    calls.push(hold(&mut svc));
    assert_eq!(handle.in_flight(), 2);
    refused(&mut svc);

    // Grow while the calls sit on another thread: exactly the room added is admitted.
    let elsewhere = thread::spawn(move || calls);
    handle.set_max_concurrent(5).unwrap();
    let mut calls = elsewhere.join().unwrap();
    calls.extend(hold_on_a_new_thread(&svc, 2));
    calls.push(hold(&mut svc));
    assert_eq!(handle.in_flight(), 5);
    refused(&mut svc);
    let (here, there): (Vec<_>, Vec<_>) =
        calls.into_iter().enumerate().partition(|(i, _)| i % 2 == 0);
    thread::spawn(move || there.into_iter().for_each(|(_, h)| h.finish()))
        .join()
        .unwrap();
    here.into_iter().for_each(|(_, h)| h.finish());
    assert_quiet(&handle);
    assert_eq!(handle.capacity(), 5);
}

/// Counts the calls in flight inside it and remembers the most at once.
#[derive(Clone, Default)]
struct Probe {
    now: Arc<AtomicUsize>,
    max: Arc<AtomicUsize>,
}

struct Leave(Arc<AtomicUsize>);

impl Drop for Leave {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Pending once, then ready: lets other threads run while a call is in flight.
struct YieldOnce(bool);

impl Future for YieldOnce {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            return Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

impl Service<usize> for Probe {
    type Response = ();
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<(), BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, yields: usize) -> Self::Future {
        let (now, max) = (self.now.clone(), self.max.clone());
        Box::pin(async move {
            let current = now.fetch_add(1, Ordering::SeqCst) + 1;
            max.fetch_max(current, Ordering::SeqCst);
            let _out = Leave(now);
            for _ in 0..yields {
                YieldOnce(false).await;
            }
            Ok(())
        })
    }
}

#[test]
fn never_more_than_the_limit_in_flight_when_threads_finish_each_others_calls() {
    const LIMIT: usize = 5;
    const THREADS: usize = 12;
    const ROUNDS: usize = 20_000;
    let layer = reject(LIMIT);
    let handle = layer.handle();
    let probe = Probe::default();
    let max = probe.max.clone();
    let svc = layer.layer(probe);
    // Admitted calls parked for any thread to finish.
    let parked = Arc::new(Mutex::new(Vec::new()));
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let mut svc = svc.clone();
            let parked = Arc::clone(&parked);
            thread::spawn(move || {
                let mut admitted = 0usize;
                for i in 0..ROUNDS {
                    let mut call = svc.call(i % 4);
                    match (&mut call).now_or_never() {
                        Some(Err(e)) => {
                            assert!(e.downcast_ref::<BulkheadFull>().is_some(), "{e}");
                            continue;
                        }
                        Some(Ok(())) => {}
                        None if (i + t) % 3 == 0 => parked.lock().unwrap().push(call),
                        None => block_on(call).unwrap(),
                    }
                    admitted += 1;
                    // Finish a call some other thread parked, now and then.
                    if i % 2 == 0 {
                        let other = parked.lock().unwrap().pop();
                        if let Some(other) = other {
                            block_on(other).unwrap();
                        }
                    }
                }
                admitted
            })
        })
        .collect();
    let admitted: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
    let left: Vec<_> = std::mem::take(&mut *parked.lock().unwrap());
    left.into_iter().for_each(|call| block_on(call).unwrap());
    let max = max.load(Ordering::SeqCst);
    assert!(max <= LIMIT, "{max} calls in flight, limit {LIMIT}");
    assert!(admitted >= LIMIT);
    assert_eq!(
        handle.rejections(),
        (THREADS * ROUNDS - admitted) as u64,
        "every call is admitted or rejected"
    );
    assert_quiet(&handle);
}
