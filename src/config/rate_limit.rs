//! The rate limit's settings.

use super::duration::human_duration;
use super::set;
use crate::error::ConfigError;
use crate::rate_limit::{Global, RateLimitBuilder, RateLimitLayer};
use serde::{Deserialize, Serialize};
use std::time::Duration;

human_duration!(per: "per", wait_up_to: "wait_up_to");

const LAYER: &str = "rate_limit";

/// The period of `rate` when `per` is left out.
const PER_SECOND: Duration = Duration::from_secs(1);

/// The settings of a [`RateLimitLayer`], as a config document holds them.
///
/// `rate` calls per `per` (one second when left out) is
/// [`RateLimitBuilder::rate`]; the other fields mirror the builder methods of the same
/// name, and a field left out keeps the builder's default (see [`crate::rate_limit`]: burst =
/// `rate`, reject at once, 160,000 keys). `rate` is required, except in a
/// [`ServerStackConfig`](super::ServerStackConfig), which keeps its default rate when both
/// `rate` and `per` are left out.
///
/// With `key = { header = "x-client-id" }` each value of that header gets its own allowance
/// ([`HeaderKey`](crate::rate_limit::HeaderKey)); build it with
/// [`build_http`](Self::build_http). Other keys (a peer address, a user) are code: take
/// [`builder`](Self::builder) and give it a [`key`](RateLimitBuilder::key).
///
/// ```
/// use std::time::Duration;
/// use seawall::config::RateLimitConfig;
///
/// let config: RateLimitConfig = toml::from_str(r#"
///     rate = 100
///     per = "1m"
///     burst = 20
///     wait_up_to = "250ms"
///     key = { header = "x-client-id" }
/// "#).unwrap();
/// let limit = config.build_http().unwrap();
/// assert_eq!(limit.handle().rate(), (100, Duration::from_secs(60)));
/// assert_eq!(limit.handle().burst(), 20);
/// ```
///
/// The `RateLimit-*` headers on admitted responses are a different layer type: call
/// [`with_headers`](RateLimitLayer::with_headers) on the built layer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct RateLimitConfig {
    /// Calls allowed per `per` ([`RateLimitBuilder::rate`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate: Option<u32>,
    /// The period of `rate`: one second when left out.
    #[serde(skip_serializing_if = "Option::is_none", with = "human::per")]
    pub per: Option<Duration>,
    /// Calls allowed at once after a quiet spell ([`RateLimitBuilder::burst`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
    /// Wait mode: how long a call over the limit may wait ([`RateLimitBuilder::wait_up_to`]).
    #[serde(skip_serializing_if = "Option::is_none", with = "human::wait_up_to")]
    pub wait_up_to: Option<Duration>,
    /// The most keys held at once ([`RateLimitBuilder::max_keys`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_keys: Option<usize>,
    /// One allowance per value of a request header. Only for
    /// [`build_http`](Self::build_http).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<HeaderKeyConfig>,
}

/// A rate limit key taken from a request header: `{ header = "x-client-id", max_len = 64 }`
/// ([`HeaderKey`](crate::rate_limit::HeaderKey)). `header` is needed; `max_len` left out keeps
/// `HeaderKey`'s default (128 bytes).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct HeaderKeyConfig {
    /// The header whose value is the key, such as `x-client-id`.
    pub header: String,
    /// Longer values go to the default bucket (`HeaderKey::max_len`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_len: Option<usize>,
}

impl HeaderKeyConfig {
    /// A key taken from `header`, with the default `max_len`.
    pub fn new(header: impl Into<String>) -> Self {
        Self {
            header: header.into(),
            max_len: None,
        }
    }
}

impl RateLimitConfig {
    /// Applies every setting but the key to `b`; `rate` left out is `default_rate`.
    fn apply<K>(
        &self,
        b: RateLimitBuilder<K>,
        default_rate: Option<(u32, Duration)>,
    ) -> RateLimitBuilder<K> {
        let rate = match (self.rate, self.per, default_rate) {
            (Some(n), per, _) => Some((n, per.unwrap_or(PER_SECOND))),
            (None, None, default) => default,
            // A period without a rate: the builder says `rate` is unset.
            (None, Some(_), _) => None,
        };
        let b = set(b, rate, |b, (n, per)| b.rate(n, per));
        let b = set(b, self.burst, RateLimitBuilder::burst);
        let b = set(b, self.wait_up_to, RateLimitBuilder::wait_up_to);
        set(b, self.max_keys, RateLimitBuilder::max_keys)
    }

    /// A [`RateLimitBuilder`] with these settings and one allowance for all, for any service,
    /// to add a key of your own or an event bus before [`build`](RateLimitBuilder::build).
    ///
    /// # Errors
    /// A [`ConfigError`] naming `key` when it is set (a header key needs HTTP requests: see
    /// [`build_http`](Self::build_http)).
    pub fn builder(&self) -> Result<RateLimitBuilder<Global>, ConfigError> {
        if let Some(key) = &self.key {
            return Err(ConfigError::new(
                LAYER,
                "key",
                &key.header,
                "unset: a header key needs HTTP requests (build_http)",
            ));
        }
        Ok(self.apply(RateLimitLayer::builder(), None))
    }

    /// Builds one allowance for all, for any service: see [`builder`](Self::builder).
    ///
    /// # Errors
    /// A [`ConfigError`] naming the first invalid field (`rate` when it is left out): see
    /// [`builder`](Self::builder) and [`RateLimitBuilder::build`].
    pub fn build(&self) -> Result<RateLimitLayer, ConfigError> {
        self.builder()?.build()
    }
}

#[cfg(feature = "http")]
pub use self::http::RateLimitKey;

#[cfg(feature = "http")]
mod http {
    use super::{RateLimitConfig, LAYER};
    use crate::error::ConfigError;
    use crate::rate_limit::{Extract, HeaderKey, KeyExtractor, RateLimitBuilder, RateLimitLayer};
    use ::http::header::HeaderName;
    use ::http::Request;
    use std::borrow::Cow;
    use std::time::Duration;

    /// The key of a rate limit built from a [`RateLimitConfig`]: the value of a request header
    /// when the config names one, else one allowance for all (every request draws from the
    /// default bucket, as with [`Global`](crate::rate_limit::Global)).
    #[derive(Debug, Clone)]
    pub struct RateLimitKey {
        header: Option<HeaderKey>,
    }

    impl RateLimitKey {
        /// The header the key is taken from, if the config names one.
        pub fn header(&self) -> Option<&HeaderKey> {
            self.header.as_ref()
        }
    }

    impl KeyExtractor for RateLimitKey {
        type Key = [u8];
        type Owned = Vec<u8>;
    }

    impl<B> Extract<Request<B>> for RateLimitKey {
        #[inline]
        fn extract<'r>(&self, req: &'r Request<B>) -> Option<Cow<'r, [u8]>> {
            self.header.as_ref()?.extract(req)
        }
    }

    impl RateLimitConfig {
        /// A [`RateLimitBuilder`] with these settings for HTTP requests, keyed by the header
        /// `key` names (one allowance for all without one), to add an event bus before
        /// [`build`](RateLimitBuilder::build).
        ///
        /// # Errors
        /// A [`ConfigError`] naming `key` when its header is not a valid header name.
        pub fn http_builder(&self) -> Result<RateLimitBuilder<RateLimitKey>, ConfigError> {
            self.http_builder_with(None)
        }

        pub(crate) fn http_builder_with(
            &self,
            default_rate: Option<(u32, Duration)>,
        ) -> Result<RateLimitBuilder<RateLimitKey>, ConfigError> {
            let header = match &self.key {
                Some(key) => {
                    let name = HeaderName::from_bytes(key.header.as_bytes()).map_err(|_| {
                        ConfigError::new(LAYER, "key", &key.header, "a valid HTTP header name")
                    })?;
                    let header = HeaderKey::new(name);
                    Some(match key.max_len {
                        Some(max_len) => header.max_len(max_len),
                        None => header,
                    })
                }
                None => None,
            };
            Ok(self.apply(
                RateLimitLayer::builder().key(RateLimitKey { header }),
                default_rate,
            ))
        }

        /// Builds the limit for HTTP requests: see [`http_builder`](Self::http_builder).
        ///
        /// # Errors
        /// A [`ConfigError`] naming the first invalid field (`rate` when it is left out): see
        /// [`http_builder`](Self::http_builder) and [`RateLimitBuilder::build`].
        pub fn build_http(&self) -> Result<RateLimitLayer<RateLimitKey>, ConfigError> {
            self.http_builder()?.build()
        }
    }
}
