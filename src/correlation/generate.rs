//! Making new ids: the generator trait and the default UUID v4 generator.

use bytes::BytesMut;
use http::{HeaderValue, Request};
use rand::rngs::ThreadRng;
use rand::{Rng, TryRngCore};
use std::cell::RefCell;

use super::CorrelationId;

/// Makes a new correlation id for a request that came without a valid one.
///
/// The default is [`MakeUuidV4`]. A generator builds its ids with
/// [`CorrelationId::try_from`] (default rules: token characters, at most 128 bytes) or
/// [`CorrelationId::new_v4`]. Generated ids are not checked against the layer's own rules for
/// incoming ids: they are yours.
///
/// # Example: a prefix and a counter
///
/// ```
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use std::sync::Arc;
/// use http::Request;
/// use seawall::correlation::{CorrelationId, CorrelationIdLayer, MakeCorrelationId};
///
/// #[derive(Clone, Default)]
/// struct Counter(Arc<AtomicU64>);
///
/// impl MakeCorrelationId for Counter {
///     fn make_correlation_id<B>(&mut self, _request: &Request<B>) -> CorrelationId {
///         let n = self.0.fetch_add(1, Ordering::Relaxed);
///         CorrelationId::try_from(format!("checkout-{n}")).expect("a token")
///     }
/// }
///
/// let layer = CorrelationIdLayer::builder().make_id(Counter::default()).build().unwrap();
/// ```
///
/// A ULID or UUID v7 generator from the crate of your choice plugs in the same way.
pub trait MakeCorrelationId {
    /// A new id for `request`.
    fn make_correlation_id<B>(&mut self, request: &Request<B>) -> CorrelationId;
}

/// The default generator: random (version 4) UUIDs in their usual text form,
/// `xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx`, lowercase.
///
/// # Which randomness, and why it is enough
///
/// The 122 random bits come from `rand`'s thread-local generator (`rand::rng()`): ChaCha12, a
/// cryptographically secure generator, seeded from the operating system once per thread and
/// reseeded from it every 64 KiB of output. Ids can therefore be neither predicted from the ids
/// a client has seen nor made to collide, which is what an id that ends up in logs, support
/// tickets and other services' requests needs. They are not secrets and grant nothing: do not
/// use them as tokens.
///
/// # Cost
///
/// No lock, no system call and no allocation per id (tower-http's `MakeRequestUuid` makes one
/// `getrandom` call per id): a few hundred instructions for 16 random bytes and the text, which
/// the id keeps inline.
#[derive(Debug, Clone, Copy, Default)]
pub struct MakeUuidV4;

impl MakeCorrelationId for MakeUuidV4 {
    #[inline]
    fn make_correlation_id<B>(&mut self, _request: &Request<B>) -> CorrelationId {
        uuid_v4()
    }
}

const UUID_LEN: usize = 36;
/// The per-thread buffer header values are cut from.
const CHUNK: usize = 1024;

thread_local! {
    static RNG: RefCell<ThreadRng> = RefCell::new(rand::rng());
    static BUF: RefCell<BytesMut> = RefCell::new(BytesMut::new());
}

pub(crate) fn uuid_v4() -> CorrelationId {
    let random = RNG
        .try_with(|rng| rng.borrow_mut().random::<u128>().to_le_bytes())
        .unwrap_or_else(|_| {
            // This thread's locals are being torn down: ask the OS directly.
            let mut random = [0u8; 16];
            let _ = rand::rngs::OsRng.try_fill_bytes(&mut random);
            random
        });
    let text = format_uuid_v4(random);
    CorrelationId::inline(&text).expect("a UUID fits inline")
}

/// `text` (visible ASCII, checked by the caller) as a header value, carved out of a per-thread
/// buffer: a reference-count increment on the buffer, no allocation of its own. The buffer is
/// reused once every value cut from it has been dropped; a value kept for a long time keeps
/// its buffer alive, 1 KiB at most.
pub(crate) fn header_value(text: &[u8]) -> HeaderValue {
    let value = if text.len() <= CHUNK {
        BUF.try_with(|buf| {
            let mut buf = buf.borrow_mut();
            if buf.capacity() < text.len() {
                // Reclaims the buffer when every value cut from it is gone, else starts anew.
                buf.reserve(CHUNK);
            }
            buf.extend_from_slice(text);
            HeaderValue::from_maybe_shared(buf.split().freeze())
        })
        .ok()
    } else {
        None
    };
    value
        .unwrap_or_else(|| HeaderValue::from_bytes(text))
        .expect("a correlation id is a valid header value")
}

/// `bytes` as a version 4, variant 1 UUID in hyphenated lowercase text.
pub(crate) fn format_uuid_v4(mut bytes: [u8; 16]) -> [u8; UUID_LEN] {
    /// Where each byte's two hex digits go.
    const AT: [usize; 16] = [0, 2, 4, 6, 9, 11, 14, 16, 19, 21, 24, 26, 28, 30, 32, 34];
    /// Each byte's two hex digits.
    const HEX: [[u8; 2]; 256] = {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut table = [[0u8; 2]; 256];
        let mut b = 0;
        while b < 256 {
            table[b] = [DIGITS[b >> 4], DIGITS[b & 0x0f]];
            b += 1;
        }
        table
    };
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let mut out = [b'-'; UUID_LEN];
    for (b, at) in bytes.iter().zip(AT) {
        let [high, low] = HEX[usize::from(*b)];
        out[at] = high;
        out[at + 1] = low;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn formats_like_the_rfc_9562_example() {
        // RFC 9562 appendix A.2's UUIDv4 example: 919108f7-52d1-4320-9bac-f847db4148a8.
        let bytes = [
            0x91, 0x91, 0x08, 0xf7, 0x52, 0xd1, 0x43, 0x20, 0x9b, 0xac, 0xf8, 0x47, 0xdb, 0x41,
            0x48, 0xa8,
        ];
        assert_eq!(
            &format_uuid_v4(bytes),
            b"919108f7-52d1-4320-9bac-f847db4148a8"
        );
    }

    #[test]
    fn sets_version_and_variant_bits() {
        let text = format_uuid_v4([0xff; 16]);
        assert_eq!(&text, b"ffffffff-ffff-4fff-bfff-ffffffffffff");
        let text = format_uuid_v4([0; 16]);
        assert_eq!(&text, b"00000000-0000-4000-8000-000000000000");
    }

    #[test]
    fn ids_are_distinct_uuids() {
        let mut seen = HashSet::new();
        for _ in 0..10_000 {
            let id = uuid_v4();
            assert_eq!(id.as_str().len(), UUID_LEN);
            assert!(seen.insert(id.as_str().to_owned()), "duplicate id");
        }
    }

    #[test]
    fn header_values_stay_intact_across_buffer_refills() {
        // Several chunks' worth, some kept alive (a new chunk) and some dropped (the chunk is
        // reused): no value may change under its holder.
        let mut kept = Vec::new();
        for i in 0..1000 {
            let id = uuid_v4();
            let value = header_value(id.as_str().as_bytes());
            assert_eq!(value, id.as_str());
            if i % 7 == 0 {
                kept.push((id, value));
            }
        }
        let long = "x".repeat(CHUNK + 1);
        assert_eq!(header_value(long.as_bytes()), long.as_str());
        for (id, value) in &kept {
            assert_eq!(value, id.as_str());
        }
    }
}
