use super::clock::Clock;
use super::handle::RateLimitHandle;
use super::key::{Global, KeyExtractor};
use super::service::RateLimit;
use super::state::{validate, Settings, Shared};
use crate::error::ConfigError;
use crate::events::EventSource;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;
use tower_layer::Layer;

const LAYER: &str = "rate_limit";

/// Default for [`RateLimitBuilder::max_keys`]: about what the 10 MB `limit_req_zone` of
/// nginx's documentation holds (16,000 states per megabyte).
pub const DEFAULT_MAX_KEYS: usize = 160_000;

/// Builds a [`RateLimitLayer`]: see [`RateLimitLayer::builder`].
#[derive(Debug, Clone)]
#[must_use]
pub struct RateLimitBuilder<K = Global> {
    rate: Option<(u32, Duration)>,
    burst: Option<u32>,
    max_wait: Option<Duration>,
    max_keys: usize,
    events: Option<EventSource>,
    key: K,
}

impl RateLimitBuilder<Global> {
    fn new() -> Self {
        Self {
            rate: None,
            burst: None,
            max_wait: None,
            max_keys: DEFAULT_MAX_KEYS,
            events: None,
            key: Global,
        }
    }
}

impl<K> RateLimitBuilder<K> {
    /// `n` calls per `per`: the sustained rate, one call every `per / n` (rounded up to the
    /// nanosecond, so the limit is never exceeded by rounding). Required.
    pub fn rate(mut self, n: u32, per: Duration) -> Self {
        self.rate = Some((n, per));
        self
    }

    /// How many calls may come at once after a quiet spell. Default: `n` of
    /// [`rate`](Self::rate), as governor's `Quota::per_second(n)` and tower's `RateLimit`
    /// (`n` calls per period) allow.
    pub fn burst(mut self, burst: u32) -> Self {
        self.burst = Some(burst);
        self
    }

    /// Wait mode: a call over the limit waits, inside its response future, until it conforms,
    /// if that is at most `max_wait` away; otherwise it is rejected at once (it could not make
    /// it in time, so waiting would only hold it). Its slot is booked when it starts to wait;
    /// a waiting call whose future is dropped leaves its slot spent.
    /// Default: no waiting, reject at once (governor's `check()`).
    pub fn wait_up_to(mut self, max_wait: Duration) -> Self {
        self.max_wait = Some(max_wait);
        self
    }

    /// Most keys held at once (keyed limiters). Default [`DEFAULT_MAX_KEYS`]. When the table is
    /// full, idle keys (whose allowance is whole again) are dropped, which loses nothing; if
    /// none is idle, a new key's requests use the default bucket until room is made.
    pub fn max_keys(mut self, max_keys: usize) -> Self {
        self.max_keys = max_keys;
        self
    }

    /// Gives each key its own allowance, found by `key` ([`HeaderKey`](super::HeaderKey),
    /// [`ExtensionKey`](super::ExtensionKey), [`key_fn`](super::key_fn), or your own
    /// [`Extract`](super::Extract)). Requests without a key share the default bucket.
    pub fn key<K2: KeyExtractor>(self, key: K2) -> RateLimitBuilder<K2> {
        RateLimitBuilder {
            rate: self.rate,
            burst: self.burst,
            max_wait: self.max_wait,
            max_keys: self.max_keys,
            events: self.events,
            key,
        }
    }

    /// Also publish rejections to an [`EventBus`](crate::events::EventBus), as events of
    /// `source` (one stream for every layer; see [`crate::events`]).
    pub fn events(mut self, source: EventSource) -> Self {
        self.events = Some(source);
        self
    }

    /// Checks the configuration and builds the layer.
    ///
    /// # Errors
    /// A [`ConfigError`] when the rate is unset, `n` or `per` or `burst` or `max_keys` is
    /// zero, `wait_up_to` is zero, or `per / n * burst` does not fit in 2^62 ns (146 years).
    pub fn build(self) -> Result<RateLimitLayer<K>, ConfigError>
    where
        K: KeyExtractor,
    {
        let (n, per) = self
            .rate
            .ok_or_else(|| ConfigError::new(LAYER, "rate", "unset", "n >= 1 per period > 0s"))?;
        let burst = self.burst.unwrap_or(n);
        let t = validate(n, per, burst)?;
        crate::error::check::nonzero(LAYER, "max_keys", self.max_keys as u64)?;
        if let Some(w) = self.max_wait {
            crate::error::check::positive(LAYER, "wait_up_to", w)?;
        }
        let settings = Settings {
            n,
            per,
            burst,
            t,
            max_wait: self.max_wait,
            max_keys: self.max_keys,
        };
        let shared = Shared::new(
            settings,
            self.key,
            self.events,
            Clock::new(),
            crate::stripe::stripe_count(),
        );
        tracing::debug!(
            target: "seawall::rate_limit",
            rate = n, per = ?per, burst, max_keys = self.max_keys, max_wait = ?self.max_wait,
            "rate limit built"
        );
        Ok(RateLimitLayer {
            shared: Arc::new(shared),
        })
    }
}

/// A rate limit, as a [`tower::Layer`]: GCRA, lock-free, optionally one allowance per key.
///
/// Built with [`RateLimitLayer::builder`]; see [the module docs](super) for an example.
///
/// # Clone
/// Every service this layer value builds, and every clone of the layer and of those services,
/// draws from the same allowance (one `Arc`). A second, independent limit is a second
/// `build()`.
pub struct RateLimitLayer<K: KeyExtractor = Global> {
    pub(crate) shared: Arc<Shared<K>>,
}

impl RateLimitLayer<Global> {
    /// A builder; [`rate`](RateLimitBuilder::rate) is required.
    pub fn builder() -> RateLimitBuilder<Global> {
        RateLimitBuilder::new()
    }
}

impl<K: KeyExtractor> RateLimitLayer<K> {
    /// A handle on the limit's state, for metrics and live changes.
    pub fn handle(&self) -> RateLimitHandle<K> {
        RateLimitHandle::new(Arc::clone(&self.shared))
    }
}

impl<K: KeyExtractor> Clone for RateLimitLayer<K> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<K: KeyExtractor + fmt::Debug> fmt::Debug for RateLimitLayer<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimitLayer")
            .field("shared", &self.shared)
            .finish()
    }
}

impl<S, K: KeyExtractor> Layer<S> for RateLimitLayer<K> {
    type Service = RateLimit<S, K>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimit::new(inner, self)
    }
}
