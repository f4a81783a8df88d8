//! `retry::RetryBudget`: deposits (an atomic add, and a look under `try_lock` when one is due)
//! racing withdrawals (a look under the lock) grant no more retries than the window's reserve
//! and deposits cover, lose no deposit and no withdrawal, and never count a deposit made before
//! an idle period as fresh credit after it.
//!
//! The clock is not part of the model: every call gets an explicit time.

use crate::retry::RetryBudget;
use loom::thread;
use std::time::Duration;
use tokio::time::Instant;

fn budget(ratio: f64, min_per_sec: u32) -> RetryBudget {
    RetryBudget::builder()
        .ratio(ratio)
        .min_per_sec(min_per_sec)
        .ttl(Duration::from_secs(1))
        .build()
        .unwrap()
}

/// Runs `ops` on its own thread: `true` a deposit, `false` a withdrawal, all at `now`.
/// Returns the retries granted.
fn spawn(budget: &RetryBudget, now: Instant, ops: &'static [bool]) -> thread::JoinHandle<u64> {
    let budget = budget.clone();
    thread::spawn(move || {
        let mut granted = 0;
        for &deposit in ops {
            if deposit {
                budget.deposit_with(1, || now);
            } else if budget.try_withdraw_with(|| now) {
                granted += 1;
            }
        }
        granted
    })
}

#[test]
fn concurrent_deposits_and_withdrawals_grant_only_what_the_budget_holds_and_lose_nothing() {
    loom::model(|| {
        // Half a retry per deposit, a reserve of one retry (1 per second, TTL 1 s).
        let budget = budget(0.5, 1);
        let now = Instant::now();
        let a = spawn(&budget, now, &[true, false, true]);
        let b = spawn(&budget, now, &[true, true, false, false]);
        let c = spawn(&budget, now, &[false, true]);
        let granted = a.join().unwrap() + b.join().unwrap() + c.join().unwrap();
        // 5 deposits: a reserve of 1 and floor(0.5 * 5) = 2.
        assert!(granted <= 3, "{granted} retries granted of 3");
        // Every deposit and every grant was counted: what is left is exactly the rest.
        assert_eq!(budget.available_with(|| now), 3 - granted);
    });
}

#[test]
fn a_deposit_made_before_an_idle_period_is_never_fresh_credit_after_it() {
    loom::model(|| {
        // One retry per deposit, no reserve.
        let budget = budget(1.0, 0);
        let before = Instant::now();
        // Three deposits before the idle period: the first two look, the third is left
        // unstamped (a look is due only at the fourth).
        for _ in 0..3 {
            budget.deposit_with(1, || before);
        }
        let after = before + Duration::from_secs(3);
        // After it, one fresh deposit races two withdrawals.
        let depositor = spawn(&budget, after, &[true]);
        let withdrawer = spawn(&budget, after, &[false, false]);
        depositor.join().unwrap();
        let granted = withdrawer.join().unwrap();
        // Only the fresh deposit may be granted (or, if a withdrawal's look credits it before
        // its own look can, counted from before the pause and so expired: never the reverse).
        let left = budget.available_with(|| after);
        assert!(
            granted + left <= 1,
            "{granted} granted and {left} left of one fresh deposit"
        );
    });
}
