//! `ServiceBuilder` sugar: seawall's layers as methods on [`tower::ServiceBuilder`].

use crate::fallback::FallbackLayer;
use tower::ServiceBuilder;
use tower_layer::Stack;

mod sealed {
    #[allow(unreachable_pub, unused)]
    pub trait Sealed<T> {}
}

impl<L> sealed::Sealed<L> for ServiceBuilder<L> {}

/// Adds seawall's layers to [`tower::ServiceBuilder`] as methods, each behind the feature of
/// its layer.
///
/// Layers added first are outermost, as with every `ServiceBuilder` method: write them in the
/// order a request meets them. See [`crate::stack`] for the order that works and why, or use
/// its ready-made [`ClientStack`](crate::stack::ClientStack) and
/// [`ServerStack`](crate::stack::ServerStack).
///
/// `retry_with` and `rate_limit_with` carry a suffix because `ServiceBuilder` already has
/// inherent `retry` and `rate_limit` methods (tower's own layers), which would shadow ours.
///
/// This trait is sealed: only `ServiceBuilder` implements it.
///
/// # Example
///
/// ```
/// # #[cfg(all(feature = "circuit-breaker", feature = "bulkhead", feature = "retry"))] {
/// use seawall::bulkhead::BulkheadLayer;
/// use seawall::circuit_breaker::CircuitBreakerLayer;
/// use seawall::retry::RetryLayer;
/// use seawall::ServiceBuilderExt;
/// use tower::{service_fn, BoxError, ServiceBuilder, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), BoxError> {
/// let breaker = CircuitBreakerLayer::builder().consecutive_failures(5).build()?;
/// let handle = breaker.handle();
/// let svc = ServiceBuilder::new()
///     .retry_with(RetryLayer::builder().max_attempts(2).build()?) // outermost
///     .circuit_breaker(breaker)
///     .bulkhead(BulkheadLayer::new(10)?)
///     .service(service_fn(|x: u32| async move { Ok::<_, BoxError>(x + 1) }));
///
/// assert_eq!(svc.oneshot(1).await?, 2);
/// assert_eq!(handle.metrics().calls, 1);
/// # Ok(()) }
/// # }
/// ```
pub trait ServiceBuilderExt<L>: sealed::Sealed<L> + Sized {
    /// Adds a circuit breaker: see [`crate::circuit_breaker`].
    #[cfg(feature = "circuit-breaker")]
    fn circuit_breaker<C>(
        self,
        layer: crate::circuit_breaker::CircuitBreakerLayer<C>,
    ) -> ServiceBuilder<Stack<crate::circuit_breaker::CircuitBreakerLayer<C>, L>>;

    /// Adds a bulkhead: see [`crate::bulkhead`].
    #[cfg(feature = "bulkhead")]
    fn bulkhead(
        self,
        layer: crate::bulkhead::BulkheadLayer,
    ) -> ServiceBuilder<Stack<crate::bulkhead::BulkheadLayer, L>>;

    /// Adds retries: see [`crate::retry`].
    ///
    /// Not named `retry`: `ServiceBuilder` has an inherent `retry` (tower's `retry` feature),
    /// and an inherent method always wins over a trait method of the same name.
    #[cfg(feature = "retry")]
    fn retry_with<P>(
        self,
        layer: crate::retry::RetryLayer<P>,
    ) -> ServiceBuilder<Stack<crate::retry::RetryLayer<P>, L>>;

    /// Adds a rate limit: see [`crate::rate_limit`].
    ///
    /// Not named `rate_limit`: `ServiceBuilder` has an inherent `rate_limit` (tower's `limit`
    /// feature), which would win over a trait method of the same name.
    #[cfg(feature = "rate-limit")]
    fn rate_limit_with<K: crate::rate_limit::KeyExtractor>(
        self,
        layer: crate::rate_limit::RateLimitLayer<K>,
    ) -> ServiceBuilder<Stack<crate::rate_limit::RateLimitLayer<K>, L>>;

    /// Adds a server-side correlation id with the defaults (`x-correlation-id`, UUID v4): see
    /// [`crate::correlation`].
    #[cfg(feature = "correlation-id")]
    fn correlation_id(self) -> ServiceBuilder<Stack<crate::correlation::CorrelationIdLayer, L>>;

    /// Adds a server-side correlation id configured by you: see [`crate::correlation`].
    #[cfg(feature = "correlation-id")]
    fn correlation_id_with<M>(
        self,
        layer: crate::correlation::CorrelationIdLayer<M>,
    ) -> ServiceBuilder<Stack<crate::correlation::CorrelationIdLayer<M>, L>>;

    /// Puts the current correlation id on outbound requests: see
    /// [`PropagateCorrelationIdLayer`](crate::correlation::PropagateCorrelationIdLayer).
    #[cfg(feature = "correlation-id")]
    fn propagate_correlation_id(
        self,
    ) -> ServiceBuilder<Stack<crate::correlation::PropagateCorrelationIdLayer, L>>;

    /// Turns seawall's rejections (and other errors) into `503`/`429`/`500` responses: see
    /// [`crate::http`].
    #[cfg(feature = "http")]
    fn http_rejections(self) -> ServiceBuilder<Stack<crate::http::RejectionResponseLayer, L>>;

    /// Answers from `f` when a call fails or is rejected: see [`crate::fallback`].
    fn fallback<F>(self, f: F) -> ServiceBuilder<Stack<FallbackLayer<F>, L>>;
}

impl<L> ServiceBuilderExt<L> for ServiceBuilder<L> {
    #[cfg(feature = "circuit-breaker")]
    fn circuit_breaker<C>(
        self,
        layer: crate::circuit_breaker::CircuitBreakerLayer<C>,
    ) -> ServiceBuilder<Stack<crate::circuit_breaker::CircuitBreakerLayer<C>, L>> {
        self.layer(layer)
    }

    #[cfg(feature = "bulkhead")]
    fn bulkhead(
        self,
        layer: crate::bulkhead::BulkheadLayer,
    ) -> ServiceBuilder<Stack<crate::bulkhead::BulkheadLayer, L>> {
        self.layer(layer)
    }

    #[cfg(feature = "retry")]
    fn retry_with<P>(
        self,
        layer: crate::retry::RetryLayer<P>,
    ) -> ServiceBuilder<Stack<crate::retry::RetryLayer<P>, L>> {
        self.layer(layer)
    }

    #[cfg(feature = "rate-limit")]
    fn rate_limit_with<K: crate::rate_limit::KeyExtractor>(
        self,
        layer: crate::rate_limit::RateLimitLayer<K>,
    ) -> ServiceBuilder<Stack<crate::rate_limit::RateLimitLayer<K>, L>> {
        self.layer(layer)
    }

    #[cfg(feature = "correlation-id")]
    fn correlation_id(self) -> ServiceBuilder<Stack<crate::correlation::CorrelationIdLayer, L>> {
        self.layer(crate::correlation::CorrelationIdLayer::new())
    }

    #[cfg(feature = "correlation-id")]
    fn correlation_id_with<M>(
        self,
        layer: crate::correlation::CorrelationIdLayer<M>,
    ) -> ServiceBuilder<Stack<crate::correlation::CorrelationIdLayer<M>, L>> {
        self.layer(layer)
    }

    #[cfg(feature = "correlation-id")]
    fn propagate_correlation_id(
        self,
    ) -> ServiceBuilder<Stack<crate::correlation::PropagateCorrelationIdLayer, L>> {
        self.layer(crate::correlation::PropagateCorrelationIdLayer::new())
    }

    #[cfg(feature = "http")]
    fn http_rejections(self) -> ServiceBuilder<Stack<crate::http::RejectionResponseLayer, L>> {
        self.layer(crate::http::RejectionResponseLayer::new())
    }

    fn fallback<F>(self, f: F) -> ServiceBuilder<Stack<FallbackLayer<F>, L>> {
        self.layer(FallbackLayer::new(f))
    }
}

#[cfg(test)]
mod tests {
    use super::ServiceBuilderExt;
    use crate::fallback::Failed;
    use tower::{service_fn, BoxError, ServiceBuilder, ServiceExt};

    #[tokio::test]
    async fn fallback_method_answers_from_the_function() {
        let svc = ServiceBuilder::new()
            .fallback(|_: Failed<u32>| Ok(7))
            .service(service_fn(|_: ()| async {
                Err::<u32, BoxError>("down".into())
            }));
        assert_eq!(svc.oneshot(()).await.unwrap(), 7);
    }

    #[cfg(all(
        feature = "correlation-id",
        feature = "rate-limit",
        feature = "bulkhead"
    ))]
    #[tokio::test]
    async fn server_methods_compose_into_an_infallible_http_service() {
        use crate::bulkhead::BulkheadLayer;
        use crate::rate_limit::RateLimitLayer;
        use std::convert::Infallible;
        use std::time::Duration;

        let svc = ServiceBuilder::new()
            .correlation_id()
            .http_rejections()
            .rate_limit_with(
                RateLimitLayer::builder()
                    .rate(1, Duration::from_secs(60))
                    .build()
                    .unwrap(),
            )
            .bulkhead(BulkheadLayer::new(4).unwrap())
            .service(service_fn(|_: http::Request<()>| async {
                Ok::<_, Infallible>(http::Response::new(String::from("ok")))
            }));
        let first = svc.clone().oneshot(http::Request::new(())).await.unwrap();
        assert_eq!(first.status(), 200);
        assert!(first.headers().contains_key("x-correlation-id"));
        let second = svc.oneshot(http::Request::new(())).await.unwrap();
        assert_eq!(second.status(), 429);
        assert!(second.headers().contains_key("x-correlation-id"));
    }
}
