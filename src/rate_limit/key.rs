//! Key extractors: which allowance a request draws from.

use std::borrow::{Borrow, Cow};
use std::fmt;
use std::hash::Hash;
use std::marker::PhantomData;

/// What a key extractor's keys are.
///
/// The key is looked up in its borrowed form, so a request whose key is already in the table
/// costs no allocation; it is stored as its owned form
/// ([`ToOwned::Owned`]), only when it is new. `[u8]` is looked up as a slice of the request's
/// header and stored as a `Vec<u8>`; a `Copy` key such as an `IpAddr` is both.
pub trait KeyExtractor {
    /// The key, in the form it is looked up.
    type Key: ?Sized + ToOwned<Owned = Self::Owned> + Hash + Eq;
    /// The key, in the form it is stored. It must hash and compare as [`Self::Key`] does (as
    /// every `ToOwned` pair of the standard library does).
    type Owned: Borrow<Self::Key> + Hash + Eq + Send + Sync + 'static;
}

/// Finds the key of a request; `None` sends the request to the default bucket (see
/// [`crate::rate_limit`]).
pub trait Extract<Req>: KeyExtractor {
    /// The key of `req`, borrowed from it where possible.
    fn extract<'r>(&self, req: &'r Req) -> Option<Cow<'r, Self::Key>>;
}

/// One allowance for every request: the extractor of the direct (unkeyed) limiter.
#[derive(Debug, Clone, Copy, Default)]
pub struct Global;

impl KeyExtractor for Global {
    type Key = ();
    type Owned = ();
}

impl<Req> Extract<Req> for Global {
    #[inline]
    fn extract<'r>(&self, _: &'r Req) -> Option<Cow<'r, ()>> {
        None
    }
}

/// A key computed by a closure over the request: see [`key_fn`].
pub struct KeyFn<F, K> {
    f: F,
    _key: PhantomData<fn() -> K>,
}

/// Keys requests by `f(&request)`; `None` sends a request to the default bucket.
///
/// ```
/// use seawall::rate_limit::{key_fn, RateLimitLayer};
/// use std::time::Duration;
///
/// // One allowance per user id; calls without one share the default bucket.
/// struct Call { user: Option<u64> }
/// let layer = RateLimitLayer::builder()
///     .rate(10, Duration::from_secs(1))
///     .key(key_fn(|call: &Call| call.user))
///     .build()
///     .unwrap();
/// # let _ = layer;
/// ```
pub fn key_fn<F, Req, K>(f: F) -> KeyFn<F, K>
where
    F: Fn(&Req) -> Option<K>,
{
    KeyFn {
        f,
        _key: PhantomData,
    }
}

impl<F: Clone, K> Clone for KeyFn<F, K> {
    fn clone(&self) -> Self {
        KeyFn {
            f: self.f.clone(),
            _key: PhantomData,
        }
    }
}

impl<F, K> fmt::Debug for KeyFn<F, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyFn")
            .field("key", &std::any::type_name::<K>())
            .finish_non_exhaustive()
    }
}

impl<F, K> KeyExtractor for KeyFn<F, K>
where
    K: Clone + Hash + Eq + Send + Sync + 'static,
{
    type Key = K;
    type Owned = K;
}

impl<F, K, Req> Extract<Req> for KeyFn<F, K>
where
    F: Fn(&Req) -> Option<K>,
    K: Clone + Hash + Eq + Send + Sync + 'static,
{
    #[inline]
    fn extract<'r>(&self, req: &'r Req) -> Option<Cow<'r, K>> {
        (self.f)(req).map(Cow::Owned)
    }
}

#[cfg(feature = "http")]
pub use self::http_keys::{ExtensionKey, HeaderKey};

#[cfg(feature = "http")]
mod http_keys {
    use super::*;
    use http::header::HeaderName;
    use http::Request;

    /// Keys HTTP requests by the bytes of one header, such as `X-Client-ID`.
    ///
    /// A request without the header, with an empty value, or with a value longer than
    /// [`max_len`](HeaderKey::max_len) (default 128 bytes, so that forged ids cannot make the
    /// key table large in bytes as well as in keys) goes to the default bucket. Lookups borrow
    /// the header's bytes: a known client costs no allocation.
    #[derive(Debug, Clone)]
    pub struct HeaderKey {
        name: HeaderName,
        max_len: usize,
    }

    impl HeaderKey {
        /// Keys requests by header `name`.
        pub fn new(name: HeaderName) -> Self {
            Self { name, max_len: 128 }
        }

        /// Values longer than `max_len` bytes go to the default bucket (default 128).
        pub fn max_len(mut self, max_len: usize) -> Self {
            self.max_len = max_len;
            self
        }
    }

    impl KeyExtractor for HeaderKey {
        type Key = [u8];
        type Owned = Vec<u8>;
    }

    impl<B> Extract<Request<B>> for HeaderKey {
        #[inline]
        fn extract<'r>(&self, req: &'r Request<B>) -> Option<Cow<'r, [u8]>> {
            let v = req.headers().get(&self.name)?.as_bytes();
            (!v.is_empty() && v.len() <= self.max_len).then_some(Cow::Borrowed(v))
        }
    }

    /// Keys HTTP requests by a value the server put in the request's extensions: the peer
    /// address from axum's `ConnectInfo<SocketAddr>`, an authenticated user, a tenant.
    ///
    /// ```
    /// use axum::extract::ConnectInfo;
    /// use seawall::rate_limit::{ExtensionKey, RateLimitLayer};
    /// use std::net::SocketAddr;
    /// use std::time::Duration;
    ///
    /// // One allowance per peer IP address (an IPv6 peer by its /64, see `ip_prefix`).
    /// let layer = RateLimitLayer::builder()
    ///     .rate(5, Duration::from_secs(1))
    ///     .key(ExtensionKey::new(|ConnectInfo(addr): &ConnectInfo<SocketAddr>| {
    ///         seawall::rate_limit::ip_prefix(addr.ip())
    ///     }))
    ///     .build()
    ///     .unwrap();
    /// # let _ = layer;
    /// ```
    pub struct ExtensionKey<T, F, K> {
        f: F,
        _types: PhantomData<fn(&T) -> K>,
    }

    impl<T, F, K> ExtensionKey<T, F, K>
    where
        F: Fn(&T) -> K,
    {
        /// Keys requests by `f` of their extension `T`; requests without one go to the
        /// default bucket.
        pub fn new(f: F) -> Self {
            Self {
                f,
                _types: PhantomData,
            }
        }
    }

    impl<T, F: Clone, K> Clone for ExtensionKey<T, F, K> {
        fn clone(&self) -> Self {
            Self {
                f: self.f.clone(),
                _types: PhantomData,
            }
        }
    }

    impl<T, F, K> fmt::Debug for ExtensionKey<T, F, K> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("ExtensionKey")
                .field("extension", &std::any::type_name::<T>())
                .field("key", &std::any::type_name::<K>())
                .finish_non_exhaustive()
        }
    }

    impl<T, F, K> KeyExtractor for ExtensionKey<T, F, K>
    where
        K: Clone + Hash + Eq + Send + Sync + 'static,
    {
        type Key = K;
        type Owned = K;
    }

    impl<T, F, K, B> Extract<Request<B>> for ExtensionKey<T, F, K>
    where
        T: Send + Sync + 'static,
        F: Fn(&T) -> K,
        K: Clone + Hash + Eq + Send + Sync + 'static,
    {
        #[inline]
        fn extract<'r>(&self, req: &'r Request<B>) -> Option<Cow<'r, K>> {
            req.extensions().get::<T>().map(|t| Cow::Owned((self.f)(t)))
        }
    }
}

/// An IP address as a rate-limit key: IPv4 as is, IPv6 reduced to its /64 prefix (the rest
/// zeroed), since one IPv6 client commonly holds a whole /64 and could otherwise mint a new key
/// per request.
///
/// ```
/// use std::net::IpAddr;
/// use seawall::rate_limit::ip_prefix;
///
/// let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
/// let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
/// assert_eq!(ip_prefix(a), ip_prefix(b));
/// let v4: IpAddr = "192.0.2.7".parse().unwrap();
/// assert_eq!(ip_prefix(v4), v4);
/// ```
pub fn ip_prefix(ip: std::net::IpAddr) -> std::net::IpAddr {
    match ip {
        std::net::IpAddr::V4(_) => ip,
        std::net::IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            std::net::IpAddr::V6(bits.into())
        }
    }
}
