//! The bulkhead's settings.

use super::duration::human_duration;
use super::set;
use crate::bulkhead::{BulkheadBuilder, BulkheadLayer};
use crate::error::ConfigError;
use serde::{Deserialize, Serialize};
use std::time::Duration;

human_duration!(max_wait: "max_wait", retry_after: "retry_after");

/// The settings of a [`BulkheadLayer`], as a config document holds them.
///
/// Every field mirrors the [`BulkheadBuilder`] method of the same name; a field left out keeps
/// the builder's default (see [`BulkheadBuilder`]: 25 in flight, reject at once).
///
/// ```
/// use seawall::config::BulkheadConfig;
///
/// let config: BulkheadConfig = toml::from_str(r#"
///     max_concurrent = 10
///     max_wait = "50ms"
///     max_waiting = 100
/// "#).unwrap();
/// assert_eq!(config.build().unwrap().handle().capacity(), 10);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct BulkheadConfig {
    /// Calls in flight at once ([`BulkheadBuilder::max_concurrent`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_concurrent: Option<usize>,
    /// How long a call may wait for a permit ([`BulkheadBuilder::max_wait`]).
    #[serde(skip_serializing_if = "Option::is_none", with = "human::max_wait")]
    pub max_wait: Option<Duration>,
    /// The most calls waiting at once ([`BulkheadBuilder::max_waiting`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_waiting: Option<usize>,
    /// The `retry_after` hint on rejections ([`BulkheadBuilder::retry_after`]).
    #[serde(skip_serializing_if = "Option::is_none", with = "human::retry_after")]
    pub retry_after: Option<Duration>,
}

impl BulkheadConfig {
    /// A [`BulkheadBuilder`] with these settings, to add an event bus before
    /// [`build`](BulkheadBuilder::build).
    pub fn builder(&self) -> BulkheadBuilder {
        let b = BulkheadLayer::builder();
        let b = set(b, self.max_concurrent, BulkheadBuilder::max_concurrent);
        let b = set(b, self.max_wait, BulkheadBuilder::max_wait);
        let b = set(b, self.max_waiting, BulkheadBuilder::max_waiting);
        set(b, self.retry_after, BulkheadBuilder::retry_after)
    }

    /// Builds the bulkhead.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the first invalid field: see [`BulkheadBuilder::build`].
    pub fn build(&self) -> Result<BulkheadLayer, ConfigError> {
        self.builder().build()
    }
}
