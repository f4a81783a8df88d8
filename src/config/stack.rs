//! The two stacks' settings.

#[cfg(all(feature = "retry", feature = "circuit-breaker"))]
pub use self::client::ClientStackConfig;
#[cfg(feature = "rate-limit")]
pub use self::server::ServerStackConfig;

#[cfg(all(feature = "retry", feature = "circuit-breaker"))]
mod client {
    use crate::classify::ServerErrorsAsFailures;
    use crate::config::duration::human_duration;
    use crate::config::{BulkheadConfig, CircuitBreakerConfig, PropagationConfig, RetryConfig};
    use crate::error::ConfigError;
    use crate::stack::ClientStack;
    use serde::{Deserialize, Serialize};
    use std::time::Duration;

    human_duration!(attempt_timeout: "attempt_timeout");

    /// The settings of a [`ClientStack`], layer by layer, as a config document holds them.
    ///
    /// Each section configures one layer and keeps, for what it leaves out, that layer's
    /// default in the stack (see [`ClientStack`]): the retry layer retries HTTP requests by
    /// cloning them and keeps the stack's budget (see [`ClientStack::new`]) unless `retry.budget` says
    /// otherwise; the breaker counts `5xx` responses as failures
    /// ([`ServerErrorsAsFailures`]); `attempt_timeout` is the stack's per-attempt timeout
    /// (15 s when left out). A `ConfigError` from a section names it:
    /// `retry.budget.ratio`, `bulkhead.max_concurrent`.
    ///
    /// ```
    /// use seawall::config::ClientStackConfig;
    /// use std::time::Duration;
    ///
    /// let config: ClientStackConfig = toml::from_str(r#"
    ///     attempt_timeout = "2s"
    ///
    ///     [retry]
    ///     max_attempts = 2
    ///     budget = { ratio = 0.1 }
    ///
    ///     [circuit_breaker]
    ///     consecutive_failures = 5
    ///     open_duration = "10s"
    ///
    ///     [bulkhead]
    ///     max_concurrent = 50
    /// "#).unwrap();
    /// let stack = config.build().unwrap();
    /// assert_eq!(stack.attempt_timeout(), Duration::from_secs(2));
    /// assert_eq!(stack.bulkhead().capacity(), 50);
    /// ```
    #[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
    #[serde(default, deny_unknown_fields)]
    #[non_exhaustive]
    pub struct ClientStackConfig {
        /// The correlation propagation layer.
        pub correlation: PropagationConfig,
        /// The retry layer.
        pub retry: RetryConfig,
        /// The circuit breaker.
        pub circuit_breaker: CircuitBreakerConfig,
        /// The bulkhead.
        pub bulkhead: BulkheadConfig,
        /// The per-attempt timeout ([`ClientStack::with_attempt_timeout`]).
        #[serde(
            skip_serializing_if = "Option::is_none",
            with = "human::attempt_timeout"
        )]
        pub attempt_timeout: Option<Duration>,
    }

    impl ClientStackConfig {
        /// Builds the stack.
        ///
        /// # Errors
        /// A [`ConfigError`] naming the first invalid field, with its section in front
        /// ([`ConfigError::path`]: `retry.max_attempts`, `attempt_timeout`); `retry.replay_limit`
        /// when it is set (the stack clones requests, it does not replay them).
        pub fn build(&self) -> Result<ClientStack, ConfigError> {
            let propagate = self
                .correlation
                .build()
                .map_err(|e| e.within("correlation"))?;
            let retry = self
                .retry
                .http_builder_with(Some(crate::stack::client_budget()))
                .and_then(|b| b.build())
                .map_err(|e| e.within("retry"))?;
            // A section that names no trip policy gets the stack's (adaptive throttling).
            let mut breaker = self.circuit_breaker.clone();
            if breaker.names_no_policy() {
                breaker.adaptive_throttling = Some(crate::stack::CLIENT_THROTTLE_K);
                breaker
                    .minimum_calls
                    .get_or_insert(crate::stack::CLIENT_THROTTLE_MINIMUM_CALLS);
            }
            let breaker = breaker
                .builder()
                .and_then(|b| b.classifier(ServerErrorsAsFailures).build())
                .map_err(|e| e.within("circuit_breaker"))?;
            let bulkhead = self.bulkhead.build().map_err(|e| e.within("bulkhead"))?;
            let stack = ClientStack::from_layers(propagate, retry, breaker, bulkhead);
            match self.attempt_timeout {
                Some(timeout) => stack.with_attempt_timeout(timeout),
                None => Ok(stack),
            }
        }
    }
}

#[cfg(feature = "rate-limit")]
mod server {
    use crate::config::{BulkheadConfig, CorrelationIdConfig, RateLimitConfig, RateLimitKey};
    use crate::error::ConfigError;
    use crate::stack::{ServerStack, DEFAULT_RATE};
    use serde::{Deserialize, Serialize};

    /// The settings of a [`ServerStack`], layer by layer, as a config document holds them.
    ///
    /// Each section configures one layer and keeps, for what it leaves out, that layer's
    /// default in the stack (see [`ServerStack`]); `rate_limit` keeps the stack's 1,000
    /// requests a second when both `rate` and `per` are left out, and
    /// `rate_limit.key = { header = "x-client-id" }` gives each client its own allowance. A
    /// `ConfigError` from a section names it: `rate_limit.burst`, `bulkhead.max_concurrent`.
    ///
    /// ```
    /// use seawall::config::ServerStackConfig;
    /// use std::time::Duration;
    ///
    /// let config: ServerStackConfig = toml::from_str(r#"
    ///     [correlation]
    ///     header_names = ["x-request-id"]
    ///
    ///     [rate_limit]
    ///     rate = 50
    ///     key = { header = "x-client-id" }
    ///
    ///     [bulkhead]
    ///     max_concurrent = 100
    /// "#).unwrap();
    /// let stack = config.build().unwrap();
    /// assert_eq!(stack.rate_limit().rate(), (50, Duration::from_secs(1)));
    /// assert_eq!(stack.bulkhead().capacity(), 100);
    /// ```
    #[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
    #[serde(default, deny_unknown_fields)]
    #[non_exhaustive]
    pub struct ServerStackConfig {
        /// The correlation id layer.
        pub correlation: CorrelationIdConfig,
        /// The rate limit.
        pub rate_limit: RateLimitConfig,
        /// The bulkhead.
        pub bulkhead: BulkheadConfig,
    }

    impl ServerStackConfig {
        /// Builds the stack. Its rate limit is keyed by [`RateLimitKey`]: by the header
        /// `rate_limit.key` names, or one allowance for all.
        ///
        /// # Errors
        /// A [`ConfigError`] naming the first invalid field, with its section in front
        /// ([`ConfigError::path`]: `rate_limit.rate`, `bulkhead.max_concurrent`).
        pub fn build(&self) -> Result<ServerStack<RateLimitKey>, ConfigError> {
            let correlation = self
                .correlation
                .build()
                .map_err(|e| e.within("correlation"))?;
            let rate_limit = self
                .rate_limit
                .http_builder_with(Some(DEFAULT_RATE))
                .and_then(|b| b.build())
                .map_err(|e| e.within("rate_limit"))?;
            let bulkhead = self.bulkhead.build().map_err(|e| e.within("bulkhead"))?;
            Ok(ServerStack::from_layers(correlation, rate_limit, bulkhead))
        }
    }
}
