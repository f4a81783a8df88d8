//! `stripe::Counter`: an owner's plain load and store and sharers' `fetch_add` lose nothing,
//! including when the owner's number passes to a new thread through the registry's lock.

use crate::stripe::Counter;
use crate::sync::Mutex;
use loom::sync::Arc;
use loom::thread;

#[test]
fn a_counter_loses_no_add_of_owner_sharer_or_next_owner() {
    loom::model(|| {
        let counter = Arc::new(Counter::default());
        // The registry's hand-over of a thread number: the old owner gives it back under the
        // lock, the new owner takes it under the lock.
        let number_free = Arc::new(Mutex::new(false));

        let owner = {
            let (counter, number_free) = (Arc::clone(&counter), Arc::clone(&number_free));
            thread::spawn(move || {
                counter.add(true, 1);
                counter.add(true, 1);
                *number_free.lock().unwrap() = true;
            })
        };
        let sharer = {
            let counter = Arc::clone(&counter);
            thread::spawn(move || {
                counter.add(false, 1);
                counter.add(false, 1);
            })
        };
        let next_owner = {
            let (counter, number_free) = (Arc::clone(&counter), Arc::clone(&number_free));
            thread::spawn(move || {
                // Owns the number only once the old owner gave it back; a sharer until then.
                let owner = *number_free.lock().unwrap();
                counter.add(owner, 1);
            })
        };
        owner.join().unwrap();
        sharer.join().unwrap();
        next_owner.join().unwrap();
        assert_eq!(counter.get(), 5);
    });
}
