//! Loom models of the crate's lock-free protocols, one file per protocol. Each checks the
//! invariant its module's docs state, through every interleaving of a few threads.
//!
//! Run them with (bounded as tokio bounds its models, so they finish in CI):
//!
//! ```text
//! RUSTFLAGS="--cfg seawall_loom" LOOM_MAX_PREEMPTIONS=2 \
//!     cargo test --release --lib --all-features --target-dir target/loom loom_models
//! ```

#[cfg(feature = "circuit-breaker")]
mod breaker_state;
#[cfg(feature = "circuit-breaker")]
mod breaker_window;
#[cfg(feature = "bulkhead")]
mod bulkhead;
#[cfg(feature = "rate-limit")]
mod rate_limit;
#[cfg(feature = "retry")]
mod retry_budget;
mod stripe;
