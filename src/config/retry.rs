//! The retry layer's settings.

use super::duration::human_duration;
use super::set;
use crate::classify::ErrorsAsFailures;
use crate::error::ConfigError;
use crate::retry::{
    CloneRequest, Jitter, RetryBudget, RetryBudgetBuilder, RetryLayer, RetryLayerBuilder,
};
use serde::{Deserialize, Serialize};
use std::time::Duration;

#[cfg(feature = "http")]
use crate::retry::http::{HttpPolicy, HttpReplay, HttpRetryable};

human_duration!(
    initial_delay: "initial_delay",
    max_delay: "max_delay",
    max_retry_after: "max_retry_after",
    attempt_timeout: "attempt_timeout",
    deadline: "deadline",
    ttl: "budget.ttl",
);

const LAYER: &str = "retry";

/// The settings of a [`RetryLayer`], as a config document holds them.
///
/// Every field mirrors the [`RetryLayerBuilder`] method of the same name; a field left out
/// keeps the builder's default (see [`RetryLayerBuilder`]: 3 attempts, full jitter from
/// 100 ms up to 20 s, `Retry-After` honoured up to 60 s, no budget).
///
/// What is retried is code, not a setting: build with [`build`](Self::build) for any `Clone`
/// request whose errors are failures, with [`build_http`](Self::build_http) or
/// [`build_http_replay`](Self::build_http_replay) for HTTP, or take a builder to add a
/// classifier, a hook or an event bus.
///
/// ```
/// use seawall::config::RetryConfig;
///
/// let config: RetryConfig = toml::from_str(r#"
///     max_attempts = 4
///     initial_delay = "50ms"
///     max_delay = "2s"
///     jitter = "equal"
///     deadline = "5s"
///     idempotency_key = true
///     budget = { ratio = 0.1, min_per_sec = 5 }
/// "#).unwrap();
/// let retry = config.build_http().unwrap();
/// assert_eq!(retry.handle().max_attempts(), 4);
/// assert_eq!(retry.handle().budget().unwrap().ratio(), 0.1);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct RetryConfig {
    /// The most attempts per call, the first included ([`RetryLayerBuilder::max_attempts`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    /// The base of the exponential backoff ([`RetryLayerBuilder::initial_delay`]).
    #[serde(skip_serializing_if = "Option::is_none", with = "human::initial_delay")]
    pub initial_delay: Option<Duration>,
    /// The backoff's growth factor ([`RetryLayerBuilder::multiplier`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub multiplier: Option<f64>,
    /// The cap on a backoff delay ([`RetryLayerBuilder::max_delay`]).
    #[serde(skip_serializing_if = "Option::is_none", with = "human::max_delay")]
    pub max_delay: Option<Duration>,
    /// How delays are randomised ([`RetryLayerBuilder::jitter`]): `"none"`, `"full"`,
    /// `"equal"` or `"decorrelated"`.
    #[serde(skip_serializing_if = "Option::is_none", with = "jitter")]
    pub jitter: Option<Jitter>,
    /// The cap on a wait the other side asks for ([`RetryLayerBuilder::max_retry_after`]).
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "human::max_retry_after"
    )]
    pub max_retry_after: Option<Duration>,
    /// The time limit of one attempt ([`RetryLayerBuilder::attempt_timeout`]).
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "human::attempt_timeout"
    )]
    pub attempt_timeout: Option<Duration>,
    /// The time limit of the whole call ([`RetryLayerBuilder::deadline`]).
    #[serde(skip_serializing_if = "Option::is_none", with = "human::deadline")]
    pub deadline: Option<Duration>,
    /// A retry budget ([`RetryLayerBuilder::budget`]): `budget = {}` for
    /// [`RetryBudget::default`]. Left out: no budget, except in a
    /// [`ClientStackConfig`](super::ClientStackConfig), which keeps its default budget.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub budget: Option<RetryBudgetConfig>,
    /// The jitter's seed ([`RetryLayerBuilder::seed`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// HTTP: also retry non-idempotent methods that carry an `Idempotency-Key` header
    /// (`retry_with_idempotency_key`). Only for the HTTP builds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<bool>,
    /// HTTP: the most body bytes kept for a replay
    /// ([`replay_limit`](RetryLayerBuilder::replay_limit)). Only for
    /// [`build_http_replay`](Self::build_http_replay).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replay_limit: Option<usize>,
}

/// The settings of a [`RetryBudget`]: `{ ratio = 0.2, min_per_sec = 10, ttl = "10s" }`.
///
/// Every field mirrors the [`RetryBudgetBuilder`] method of the same name; a field left out
/// keeps the builder's default (Finagle's: 20 % of requests, 10 a second, over 10 s).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct RetryBudgetConfig {
    /// Retries allowed per request ([`RetryBudgetBuilder::ratio`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ratio: Option<f64>,
    /// Retries per second allowed whatever the traffic ([`RetryBudgetBuilder::min_per_sec`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_per_sec: Option<u32>,
    /// How long a request counts ([`RetryBudgetBuilder::ttl`]).
    #[serde(skip_serializing_if = "Option::is_none", with = "human::ttl")]
    pub ttl: Option<Duration>,
}

impl RetryBudgetConfig {
    /// Builds the budget.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the first invalid field: see [`RetryBudgetBuilder::build`].
    pub fn build(&self) -> Result<RetryBudget, ConfigError> {
        let b = RetryBudget::builder();
        let b = set(b, self.ratio, RetryBudgetBuilder::ratio);
        let b = set(b, self.min_per_sec, RetryBudgetBuilder::min_per_sec);
        let b = set(b, self.ttl, RetryBudgetBuilder::ttl);
        b.build()
    }
}

impl RetryConfig {
    /// Applies the settings every policy shares to `b`; a budget left out is `default_budget`.
    fn apply<P>(
        &self,
        b: RetryLayerBuilder<P>,
        default_budget: Option<RetryBudget>,
    ) -> Result<RetryLayerBuilder<P>, ConfigError> {
        let b = set(b, self.max_attempts, RetryLayerBuilder::max_attempts);
        let b = set(b, self.initial_delay, RetryLayerBuilder::initial_delay);
        let b = set(b, self.multiplier, RetryLayerBuilder::multiplier);
        let b = set(b, self.max_delay, RetryLayerBuilder::max_delay);
        let b = set(b, self.jitter, RetryLayerBuilder::jitter);
        let b = set(b, self.max_retry_after, RetryLayerBuilder::max_retry_after);
        let b = set(b, self.attempt_timeout, RetryLayerBuilder::attempt_timeout);
        let b = set(b, self.deadline, RetryLayerBuilder::deadline);
        let b = set(b, self.seed, RetryLayerBuilder::seed);
        let budget = match &self.budget {
            Some(budget) => Some(budget.build().map_err(|e| e.within("budget"))?),
            None => default_budget,
        };
        Ok(set(b, budget, RetryLayerBuilder::budget))
    }

    /// Refuses `replay_limit` for a policy that does not replay, rather than ignoring it.
    fn refuse_replay_limit(&self, policy: &str) -> Result<(), ConfigError> {
        match self.replay_limit {
            Some(limit) => Err(ConfigError::new(
                LAYER,
                "replay_limit",
                limit,
                format!("unset: {policy} does not replay bodies (build_http_replay does)"),
            )),
            None => Ok(()),
        }
    }

    /// A [`RetryLayerBuilder`] with these settings, for any `Clone` request (policy
    /// [`CloneRequest`](crate::retry::CloneRequest), errors are failures), to add a classifier,
    /// a hook or an event bus before [`build`](RetryLayerBuilder::build).
    ///
    /// # Errors
    /// A [`ConfigError`] naming `idempotency_key` or `replay_limit`, which only the HTTP
    /// policies have, when set; naming `budget.<field>` for an invalid budget.
    pub fn builder(
        &self,
    ) -> Result<RetryLayerBuilder<CloneRequest<ErrorsAsFailures>>, ConfigError> {
        self.refuse_replay_limit("this policy")?;
        if self.idempotency_key == Some(true) {
            return Err(ConfigError::new(
                LAYER,
                "idempotency_key",
                true,
                "unset: only the HTTP policies (build_http, build_http_replay) read it",
            ));
        }
        self.apply(RetryLayer::builder(), None)
    }

    /// Builds the layer for any `Clone` request: see [`builder`](Self::builder).
    ///
    /// # Errors
    /// A [`ConfigError`] naming the first invalid field: see [`builder`](Self::builder) and
    /// [`RetryLayerBuilder::build`].
    pub fn build(&self) -> Result<RetryLayer<CloneRequest<ErrorsAsFailures>>, ConfigError> {
        self.builder()?.build()
    }

    /// A builder with these settings and the HTTP policy that clones requests
    /// ([`RetryLayerBuilder::http`]).
    ///
    /// # Errors
    /// A [`ConfigError`] naming `replay_limit` when it is set (this policy clones, it does not
    /// replay); naming `budget.<field>` for an invalid budget.
    #[cfg(feature = "http")]
    pub fn http_builder(
        &self,
    ) -> Result<RetryLayerBuilder<HttpPolicy<HttpRetryable>>, ConfigError> {
        self.http_builder_with(None)
    }

    #[cfg(feature = "http")]
    pub(crate) fn http_builder_with(
        &self,
        default_budget: Option<RetryBudget>,
    ) -> Result<RetryLayerBuilder<HttpPolicy<HttpRetryable>>, ConfigError> {
        self.refuse_replay_limit("the HTTP policy that clones requests")?;
        let b = self.apply(RetryLayer::builder().http(), default_budget)?;
        Ok(match self.idempotency_key {
            Some(true) => b.retry_with_idempotency_key(),
            _ => b,
        })
    }

    /// Builds the layer with the HTTP policy that clones requests: see
    /// [`http_builder`](Self::http_builder).
    ///
    /// # Errors
    /// A [`ConfigError`] naming the first invalid field: see
    /// [`http_builder`](Self::http_builder) and [`RetryLayerBuilder::build`].
    #[cfg(feature = "http")]
    pub fn build_http(&self) -> Result<RetryLayer<HttpPolicy<HttpRetryable>>, ConfigError> {
        self.http_builder()?.build()
    }

    /// A builder with these settings and the HTTP policy that replays request bodies
    /// ([`RetryLayerBuilder::http_replay`]), with `replay_limit`.
    ///
    /// # Errors
    /// A [`ConfigError`] naming `budget.<field>` for an invalid budget.
    #[cfg(feature = "http")]
    pub fn http_replay_builder(
        &self,
    ) -> Result<RetryLayerBuilder<HttpReplay<HttpRetryable>>, ConfigError> {
        let b = self.apply(RetryLayer::builder().http_replay(), None)?;
        let b = set(b, self.replay_limit, RetryLayerBuilder::replay_limit);
        Ok(match self.idempotency_key {
            Some(true) => b.retry_with_idempotency_key(),
            _ => b,
        })
    }

    /// Builds the layer with the HTTP policy that replays request bodies: see
    /// [`http_replay_builder`](Self::http_replay_builder).
    ///
    /// # Errors
    /// A [`ConfigError`] naming the first invalid field: see
    /// [`http_replay_builder`](Self::http_replay_builder) and [`RetryLayerBuilder::build`].
    #[cfg(feature = "http")]
    pub fn build_http_replay(&self) -> Result<RetryLayer<HttpReplay<HttpRetryable>>, ConfigError> {
        self.http_replay_builder()?.build()
    }
}

/// `Option<Jitter>` as `"none"`, `"full"`, `"equal"` or `"decorrelated"`.
mod jitter {
    use crate::retry::Jitter;
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serializer};

    const EXPECTED: &str = "\"none\", \"full\", \"equal\" or \"decorrelated\"";

    const NAMES: [(&str, Jitter); 4] = [
        ("none", Jitter::None),
        ("full", Jitter::Full),
        ("equal", Jitter::Equal),
        ("decorrelated", Jitter::Decorrelated),
    ];

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Jitter>, D::Error> {
        let name = String::deserialize(deserializer)?;
        match NAMES.iter().find(|(n, _)| *n == name) {
            Some((_, jitter)) => Ok(Some(*jitter)),
            None => Err(D::Error::custom(format_args!(
                "invalid jitter {name:?} for `jitter`; expected {EXPECTED}"
            ))),
        }
    }

    pub(super) fn serialize<S: Serializer>(
        jitter: &Option<Jitter>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        // A match, not a search of NAMES: a new jitter must be named here to compile.
        let name = match jitter {
            None => return serializer.serialize_none(),
            Some(Jitter::None) => "none",
            Some(Jitter::Full) => "full",
            Some(Jitter::Equal) => "equal",
            Some(Jitter::Decorrelated) => "decorrelated",
        };
        serializer.serialize_str(name)
    }
}
