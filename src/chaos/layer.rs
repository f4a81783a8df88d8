use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use tower_layer::Layer;

use super::faults::{Faults, Latency};
use super::handle::ChaosHandle;
use super::service::Chaos;
use super::state::Shared;
use crate::error::ConfigError;

/// A chaos layer for any service: latency, errors, hangs and dropped connections. The default
/// kind of [`ChaosLayer`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Generic;

/// A chaos layer for HTTP services, which can also answer with a status
/// ([`ChaosBuilder::status`]). Built with [`ChaosBuilder::http`].
#[cfg(feature = "http")]
#[derive(Debug, Clone, Copy, Default)]
pub struct Http;

mod sealed {
    pub trait Sealed {}
    impl Sealed for super::Generic {}
    #[cfg(feature = "http")]
    impl Sealed for super::Http {}
}

/// What a chaos layer can inject: [`Generic`] or [`Http`]. Sealed.
pub trait Kind: sealed::Sealed {
    /// Whether the layer can answer with a status.
    const HTTP: bool;
}

impl Kind for Generic {
    const HTTP: bool = false;
}

#[cfg(feature = "http")]
impl Kind for Http {
    const HTTP: bool = true;
}

/// Injects faults into the services it builds: see [`crate::chaos`].
///
/// Built with [`ChaosLayer::builder`].
///
/// # Clone
/// Every clone of a layer value, every service it builds and every clone of those share one
/// switch, one fault mix, one random stream and one set of counters. A second, independent
/// chaos layer is a second layer value.
pub struct ChaosLayer<K = Generic> {
    shared: Arc<Shared>,
    _kind: PhantomData<fn() -> K>,
}

impl<K> Clone for ChaosLayer<K> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
            _kind: PhantomData,
        }
    }
}

impl<K> fmt::Debug for ChaosLayer<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChaosLayer")
            .field("enabled", &self.shared.is_enabled())
            .field("faults", &self.shared.faults())
            .finish()
    }
}

impl ChaosLayer {
    /// A builder with no fault, off, and a random seed.
    pub fn builder() -> ChaosBuilder {
        ChaosBuilder {
            faults: Faults::none(),
            seed: None,
            enabled: false,
            _kind: PhantomData,
        }
    }
}

impl<K> ChaosLayer<K> {
    /// A handle on this layer: switch it on and off, change the fault mix, read the counters.
    pub fn handle(&self) -> ChaosHandle {
        ChaosHandle::new(Arc::clone(&self.shared))
    }
}

impl<S, K> Layer<S> for ChaosLayer<K> {
    type Service = Chaos<S, K>;

    fn layer(&self, inner: S) -> Self::Service {
        Chaos::from_shared(inner, Arc::clone(&self.shared))
    }
}

/// Builds a [`ChaosLayer`]; the fault mix is checked by [`build`](Self::build).
///
/// | setting | default |
/// |---|---|
/// | faults | none ([`Faults::none`]) |
/// | [`enabled`](Self::enabled) | **off**: a chaos layer left in a stack does nothing until switched on |
/// | [`seed`](Self::seed) | random |
pub struct ChaosBuilder<K = Generic> {
    faults: Faults,
    seed: Option<u64>,
    enabled: bool,
    _kind: PhantomData<fn() -> K>,
}

impl<K> fmt::Debug for ChaosBuilder<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChaosBuilder")
            .field("faults", &self.faults)
            .field("seed", &self.seed)
            .field("enabled", &self.enabled)
            .finish()
    }
}

impl<K> Clone for ChaosBuilder<K> {
    fn clone(&self) -> Self {
        Self {
            faults: self.faults,
            seed: self.seed,
            enabled: self.enabled,
            _kind: PhantomData,
        }
    }
}

impl ChaosBuilder<Generic> {
    /// Makes an HTTP layer, whose services take `http::Request`s and can answer with a status
    /// ([`status`](ChaosBuilder::status)); the response body is the body type's `Default`.
    #[cfg(feature = "http")]
    pub fn http(self) -> ChaosBuilder<Http> {
        ChaosBuilder {
            faults: self.faults,
            seed: self.seed,
            enabled: self.enabled,
            _kind: PhantomData,
        }
    }
}

#[cfg(feature = "http")]
impl ChaosBuilder<Http> {
    /// Answers with `status` and an empty body with `probability`
    /// ([`Faults::status`]).
    pub fn status(mut self, probability: f64, status: http::StatusCode) -> Self {
        self.faults = self.faults.status(probability, status);
        self
    }
}

impl<K: Kind> ChaosBuilder<K> {
    /// Replaces the whole fault mix.
    pub fn faults(mut self, faults: Faults) -> Self {
        self.faults = faults;
        self
    }

    /// Delays a call by `latency` with `probability` ([`Faults::latency`]).
    pub fn latency(mut self, probability: f64, latency: Latency) -> Self {
        self.faults = self.faults.latency(probability, latency);
        self
    }

    /// Fails a call with an [`InjectedFault`](super::InjectedFault) with `probability`
    /// ([`Faults::error`]).
    pub fn error(mut self, probability: f64) -> Self {
        self.faults = self.faults.error(probability);
        self
    }

    /// Never answers a call with `probability` ([`Faults::hang`]).
    pub fn hang(mut self, probability: f64) -> Self {
        self.faults = self.faults.hang(probability);
        self
    }

    /// Fails a call as a dropped connection with `probability` ([`Faults::disconnect`]).
    pub fn disconnect(mut self, probability: f64) -> Self {
        self.faults = self.faults.disconnect(probability);
        self
    }

    /// Seeds the random stream, so that a run that makes its calls in the same order draws
    /// the same faults. Default: a random seed.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Whether the layer injects from the start. Default **off**: turn it on with this or
    /// with [`ChaosHandle::enable`].
    pub fn enabled(mut self, enabled: bool) -> Self {
        self.enabled = enabled;
        self
    }

    /// Checks the fault mix and builds the layer.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the field when a probability lies outside `0.0..=1.0` (NaN
    /// included), when the outcome probabilities (error, status, hang, disconnect) add up to
    /// more than 1, when a uniform latency's `low` exceeds its `high`, or when a layer that is
    /// not [`http`](ChaosBuilder::http) is given a status.
    pub fn build(self) -> Result<ChaosLayer<K>, ConfigError> {
        self.faults.validate(K::HTTP)?;
        let seed = self.seed.unwrap_or_else(rand::random);
        Ok(ChaosLayer {
            shared: Arc::new(Shared::new(self.faults, K::HTTP, seed, self.enabled)),
            _kind: PhantomData,
        })
    }
}
