//! The bulkhead held against a small reference model: a capacity, a set of calls in flight and
//! a FIFO queue. Every operation is applied to both; after each, every live future is polled
//! once, and the bulkhead's figures and the calls the inner service has started must match the
//! model's exactly.
#![cfg(feature = "bulkhead")]

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::task::noop_waker_ref;
use proptest::prelude::*;
use seawall::bulkhead::BulkheadLayer;
use seawall::error::BulkheadFull;
use tokio::sync::oneshot;
use tower::{service_fn, BoxError, Layer, Service};

#[derive(Debug, Clone)]
enum Op {
    Call,
    Complete(usize),
    Drop(usize),
    Resize(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => Just(Op::Call),
        3 => any::<usize>().prop_map(Op::Complete),
        1 => any::<usize>().prop_map(Op::Drop),
        1 => (1usize..=5).prop_map(Op::Resize),
    ]
}

#[derive(Debug, Default)]
struct Model {
    capacity: usize,
    wait: bool,
    max_waiting: Option<usize>,
    in_flight: BTreeSet<u64>,
    queue: VecDeque<u64>,
    rejected: u64,
}

impl Model {
    fn admit(&mut self) {
        while self.in_flight.len() < self.capacity {
            match self.queue.pop_front() {
                Some(id) => {
                    self.in_flight.insert(id);
                }
                None => break,
            }
        }
    }

    /// Returns whether the call was rejected.
    fn call(&mut self, id: u64) -> bool {
        if self.in_flight.len() < self.capacity && self.queue.is_empty() {
            self.in_flight.insert(id);
            return false;
        }
        if !self.wait || self.max_waiting.is_some_and(|m| self.queue.len() >= m) {
            self.rejected += 1;
            return true;
        }
        self.queue.push_back(id);
        false
    }

    fn remove(&mut self, id: u64) {
        self.in_flight.remove(&id);
        self.queue.retain(|&q| q != id);
        self.admit();
    }
}

type Fut = Pin<Box<dyn Future<Output = Result<u64, BoxError>>>>;

fn run(capacity: usize, wait: bool, max_waiting: Option<usize>, ops: Vec<Op>) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(async move {
        let mut builder = BulkheadLayer::builder().max_concurrent(capacity);
        if wait {
            builder = builder.max_wait(Duration::from_secs(3600));
            if let Some(m) = max_waiting {
                builder = builder.max_waiting(m);
            }
        }
        let layer = builder.build().unwrap();
        let handle = layer.handle();
        let started = Arc::new(Mutex::new(BTreeSet::new()));
        let started2 = started.clone();
        let mut svc = layer.layer(service_fn(move |(id, rx): (u64, oneshot::Receiver<()>)| {
            started2.lock().unwrap().insert(id);
            let started = started2.clone();
            async move {
                let _ = rx.await;
                started.lock().unwrap().remove(&id);
                Ok::<_, BoxError>(id)
            }
        }));
        let mut model = Model {
            capacity,
            wait,
            max_waiting: max_waiting.filter(|_| wait),
            ..Model::default()
        };
        let mut live: BTreeMap<u64, (Fut, oneshot::Sender<()>)> = BTreeMap::new();
        let mut next = 0u64;
        let mut cx = Context::from_waker(noop_waker_ref());
        for op in ops {
            match op {
                Op::Call => {
                    let id = next;
                    next += 1;
                    let (tx, rx) = oneshot::channel();
                    let mut fut: Fut = Box::pin(svc.call((id, rx)));
                    let rejected = model.call(id);
                    if rejected {
                        match fut.as_mut().poll(&mut cx) {
                            Poll::Ready(Err(e)) => {
                                assert!(e.downcast_ref::<BulkheadFull>().is_some())
                            }
                            other => panic!("call {id} should be rejected, got {other:?}"),
                        }
                    } else {
                        live.insert(id, (fut, tx));
                    }
                }
                Op::Complete(k) => {
                    if model.in_flight.is_empty() {
                        continue;
                    }
                    let id = *model
                        .in_flight
                        .iter()
                        .nth(k % model.in_flight.len())
                        .unwrap();
                    let (mut fut, tx) = live.remove(&id).unwrap();
                    tx.send(()).unwrap();
                    match fut.as_mut().poll(&mut cx) {
                        Poll::Ready(Ok(got)) => assert_eq!(got, id),
                        other => panic!("call {id} should complete, got {other:?}"),
                    }
                    model.remove(id);
                }
                Op::Drop(k) => {
                    if live.is_empty() {
                        continue;
                    }
                    let id = *live.keys().nth(k % live.len()).unwrap();
                    drop(live.remove(&id));
                    started.lock().unwrap().remove(&id);
                    model.remove(id);
                }
                Op::Resize(n) => {
                    handle.set_max_concurrent(n).unwrap();
                    model.capacity = n;
                    model.admit();
                }
            }
            for (id, (fut, _)) in live.iter_mut() {
                assert!(
                    fut.as_mut().poll(&mut cx).is_pending(),
                    "call {id} ended by itself"
                );
            }
            let m = handle.metrics();
            assert_eq!(m.capacity, model.capacity);
            assert_eq!(m.in_flight, model.in_flight.len(), "{m:?} vs {model:?}");
            assert_eq!(m.waiting, model.queue.len(), "{m:?} vs {model:?}");
            assert_eq!(m.rejected, model.rejected);
            assert_eq!(*started.lock().unwrap(), model.in_flight, "calls started");
        }
    });
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn reject_mode_matches_the_model(capacity in 1usize..=4, ops in prop::collection::vec(op(), 1..60)) {
        run(capacity, false, None, ops);
    }

    #[test]
    fn wait_mode_matches_the_model(
        capacity in 1usize..=4,
        max_waiting in prop::option::of(1usize..=3),
        ops in prop::collection::vec(op(), 1..60),
    ) {
        run(capacity, true, max_waiting, ops);
    }
}
