//! The id itself, the characters it may hold, and the check incoming ids go through.

use http::HeaderValue;
use std::fmt;
use std::str::FromStr;

use crate::error::ConfigError;

/// The longest incoming id accepted by default, in bytes: room for a UUID (36), a ULID (26) or
/// a W3C `traceparent` (55) with a prefix, and short enough to sit in every log line.
pub const DEFAULT_MAX_LEN: usize = 128;

/// The highest [`max_len`](super::Builder::max_len) a layer accepts: an id longer than this is
/// a payload, not an id.
pub const MAX_LEN_LIMIT: usize = 1024;

/// A request's correlation id: one to 1024 bytes of visible ASCII, valid as an HTTP header
/// value and safe to write raw into a log line.
///
/// An id of up to 46 bytes (a UUID, a ULID, a short prefix and a UUID) is kept inline, so
/// cloning it copies those bytes and touches no counter shared between threads. A longer one
/// shares the bytes of the header value it came from, so cloning it is a reference-count
/// increment. Either way, cloning never allocates.
///
/// Get one from a request's extensions (in axum, `Extension<CorrelationId>`), from
/// [`CorrelationId::current`] anywhere in the task handling the request, or parse one with
/// [`CorrelationId::try_from`], which applies the default rules (see [`CharSet::token`] and
/// [`DEFAULT_MAX_LEN`]).
///
/// ```
/// use seawall::correlation::CorrelationId;
///
/// let id = CorrelationId::try_from("order-7f3a").unwrap();
/// assert_eq!(id.as_str(), "order-7f3a");
/// assert!(CorrelationId::try_from("two words").is_err());
/// assert!(CorrelationId::try_from("line\r\nbreak").is_err());
/// ```
pub struct CorrelationId(Repr);

/// The longest id kept inline: 46 bytes and a length fill 48 bytes, a `HeaderValue`'s 40 and
/// a tag.
const INLINE: usize = 46;

enum Repr {
    /// Visible ASCII in `bytes[..len]`.
    Inline { len: u8, bytes: [u8; INLINE] },
    /// Visible ASCII, any length.
    Shared(HeaderValue),
}

impl CorrelationId {
    /// Wraps a value the caller has already checked to be visible ASCII.
    #[inline]
    pub(crate) fn from_checked(value: HeaderValue) -> Self {
        debug_assert!(is_visible_ascii(value.as_bytes()), "unchecked id {value:?}");
        Self(Repr::Shared(value))
    }

    /// Copies `text`, which the caller has checked to be visible ASCII, when it fits inline.
    #[inline]
    pub(crate) fn inline(text: &[u8]) -> Option<Self> {
        debug_assert!(is_visible_ascii(text), "unchecked id {text:?}");
        let len = u8::try_from(text.len())
            .ok()
            .filter(|&len| usize::from(len) <= INLINE)?;
        let mut bytes = [0; INLINE];
        bytes[..text.len()].copy_from_slice(text);
        Some(Self(Repr::Inline { len, bytes }))
    }

    /// A new random UUID v4, as the default generator [`MakeUuidV4`](super::MakeUuidV4) makes.
    pub fn new_v4() -> Self {
        super::generate::uuid_v4()
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        // Visible ASCII by construction, so this never falls back.
        std::str::from_utf8(self.as_bytes()).unwrap_or_default()
    }

    #[inline]
    fn as_bytes(&self) -> &[u8] {
        match &self.0 {
            Repr::Inline { len, bytes } => &bytes[..usize::from(*len)],
            Repr::Shared(value) => value.as_bytes(),
        }
    }

    /// The id as a header value: a reference-count increment when the id shares the bytes of
    /// the header value it came from (as the current id of a request does), else a copy into
    /// a per-thread buffer, which allocates once per 1 KiB of ids.
    ///
    /// ```
    /// use seawall::correlation::CorrelationId;
    ///
    /// let id = CorrelationId::try_from("order-7f3a").unwrap();
    /// assert_eq!(id.to_header_value(), "order-7f3a");
    /// ```
    #[inline]
    pub fn to_header_value(&self) -> HeaderValue {
        match &self.0 {
            Repr::Shared(value) => value.clone(),
            Repr::Inline { .. } => super::generate::header_value(self.as_bytes()),
        }
    }

    /// Unwraps or makes the header value, as [`to_header_value`](Self::to_header_value) does.
    #[inline]
    pub fn into_header_value(self) -> HeaderValue {
        match self.0 {
            Repr::Shared(value) => value,
            Repr::Inline { .. } => super::generate::header_value(self.as_bytes()),
        }
    }
}

/// Whether every byte of `bytes` is visible ASCII, `!` to `~`, and there is at least one.
pub(crate) fn is_visible_ascii(bytes: &[u8]) -> bool {
    !bytes.is_empty() && bytes.iter().all(|b| (0x21..=0x7e).contains(b))
}

impl Clone for CorrelationId {
    /// Copies an id of up to 46 bytes; shares the bytes of a longer one.
    #[inline]
    fn clone(&self) -> Self {
        match &self.0 {
            Repr::Shared(value) if value.len() > INLINE => Self(Repr::Shared(value.clone())),
            Repr::Shared(value) => {
                Self::inline(value.as_bytes()).unwrap_or_else(|| Self(Repr::Shared(value.clone())))
            }
            Repr::Inline { len, bytes } => Self(Repr::Inline {
                len: *len,
                bytes: *bytes,
            }),
        }
    }
}

impl PartialEq for CorrelationId {
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for CorrelationId {}

impl std::hash::Hash for CorrelationId {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_bytes().hash(state);
    }
}

impl fmt::Display for CorrelationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for CorrelationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("CorrelationId")
            .field(&self.as_str())
            .finish()
    }
}

impl AsRef<str> for CorrelationId {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl PartialEq<str> for CorrelationId {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for CorrelationId {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl From<CorrelationId> for HeaderValue {
    fn from(id: CorrelationId) -> Self {
        id.into_header_value()
    }
}

impl TryFrom<HeaderValue> for CorrelationId {
    type Error = InvalidCorrelationId;

    /// Checks `value` against the default rules, and keeps it.
    fn try_from(value: HeaderValue) -> Result<Self, Self::Error> {
        Policy::DEFAULT.check(value.as_bytes())?;
        Ok(Self::from_checked(value))
    }
}

impl TryFrom<&str> for CorrelationId {
    type Error = InvalidCorrelationId;

    /// Checks `value` against the default rules, then copies it.
    fn try_from(value: &str) -> Result<Self, Self::Error> {
        Policy::DEFAULT.check(value.as_bytes())?;
        match Self::inline(value.as_bytes()) {
            Some(id) => Ok(id),
            None => HeaderValue::from_str(value)
                .map(Self::from_checked)
                .map_err(|_| InvalidCorrelationId::Empty),
        }
    }
}

impl TryFrom<String> for CorrelationId {
    type Error = InvalidCorrelationId;

    /// Checks `value` against the default rules, then copies it when it is short, or keeps
    /// its buffer.
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Policy::DEFAULT.check(value.as_bytes())?;
        match Self::inline(value.as_bytes()) {
            Some(id) => Ok(id),
            None => HeaderValue::try_from(value)
                .map(Self::from_checked)
                .map_err(|_| InvalidCorrelationId::Empty),
        }
    }
}

impl FromStr for CorrelationId {
    type Err = InvalidCorrelationId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::try_from(s)
    }
}

/// Why an incoming id was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidCorrelationId {
    /// The value is empty.
    #[error("empty")]
    Empty,
    /// The value is longer than the limit.
    #[error("too long: {len} bytes, at most {max} allowed")]
    TooLong {
        /// The value's length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The value holds a byte outside the allowed characters.
    #[error("byte {byte:#04x} at {index} is not allowed")]
    Forbidden {
        /// The first byte refused.
        byte: u8,
        /// Its position in the value.
        index: usize,
    },
}

/// A set of ASCII characters an incoming id may be made of; always a subset of visible ASCII
/// (`!` to `~`), so an accepted id can never break a header or a log line.
///
/// ```
/// use seawall::correlation::CharSet;
///
/// let token = CharSet::token();
/// assert!(token.contains(b'-') && token.contains(b'~'));
/// assert!(!token.contains(b' ') && !token.contains(b'"') && !token.contains(b'\n'));
///
/// let ulid_or_uuid = CharSet::from_bytes(b"0123456789abcdefABCDEF-").unwrap();
/// assert!(!ulid_or_uuid.contains(b'g'));
/// assert!(CharSet::from_bytes(b"a b").is_err()); // space is not visible
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CharSet([bool; 256]);

impl CharSet {
    const fn of(bytes: &[u8]) -> Self {
        let mut table = [false; 256];
        let mut i = 0;
        while i < bytes.len() {
            table[bytes[i] as usize] = true;
            i += 1;
        }
        Self(table)
    }

    const fn range(self, low: u8, high: u8) -> Self {
        let mut table = self.0;
        let mut b = low;
        while b <= high {
            table[b as usize] = true;
            b += 1;
        }
        Self(table)
    }

    /// The default: visible ASCII without separators, that is the `tchar` of an HTTP token
    /// (RFC 9110 §5.6.2): letters, digits and ``!#$%&'*+-.^_`|~``. No space, quote, comma,
    /// semicolon, backslash or bracket, so an id can be logged, quoted or put in a list header
    /// as it is.
    pub const fn token() -> Self {
        Self::of(b"!#$%&'*+-.^_`|~")
            .range(b'0', b'9')
            .range(b'a', b'z')
            .range(b'A', b'Z')
    }

    /// ASCII letters and digits only.
    pub const fn alphanumeric() -> Self {
        Self([false; 256])
            .range(b'0', b'9')
            .range(b'a', b'z')
            .range(b'A', b'Z')
    }

    /// Exactly the bytes given.
    ///
    /// # Errors
    /// A [`ConfigError`] when `bytes` is empty or holds anything but visible ASCII (`!` to `~`).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ConfigError> {
        if bytes.is_empty() {
            return Err(ConfigError::new(
                "correlation",
                "allowed_chars",
                "",
                "at least one character",
            ));
        }
        if let Some(&b) = bytes.iter().find(|b| !(0x21..=0x7e).contains(*b)) {
            return Err(ConfigError::new(
                "correlation",
                "allowed_chars",
                std::ascii::escape_default(b).to_string(),
                "visible ASCII, '!' to '~'",
            ));
        }
        Ok(Self::of(bytes))
    }

    /// Whether `byte` is in the set.
    #[inline]
    pub const fn contains(&self, byte: u8) -> bool {
        self.0[byte as usize]
    }
}

impl Default for CharSet {
    /// [`CharSet::token`].
    fn default() -> Self {
        Self::token()
    }
}

impl fmt::Debug for CharSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let chars: String = (0x21u8..=0x7e)
            .filter(|&b| self.contains(b))
            .map(char::from)
            .collect();
        f.debug_tuple("CharSet").field(&chars).finish()
    }
}

/// The rules an incoming id is checked against.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Policy {
    pub(crate) max_len: usize,
    pub(crate) chars: CharSet,
}

impl Policy {
    pub(crate) const DEFAULT: Policy = Policy {
        max_len: DEFAULT_MAX_LEN,
        chars: CharSet::token(),
    };

    #[inline]
    pub(crate) fn check(&self, bytes: &[u8]) -> Result<(), InvalidCorrelationId> {
        if bytes.is_empty() {
            return Err(InvalidCorrelationId::Empty);
        }
        if bytes.len() > self.max_len {
            return Err(InvalidCorrelationId::TooLong {
                len: bytes.len(),
                max: self.max_len,
            });
        }
        // No early return: valid ids (the common case) are read whole anyway, and a branch-free
        // loop is faster.
        let mut ok = true;
        for &b in bytes {
            ok &= self.chars.contains(b);
        }
        if ok {
            return Ok(());
        }
        Err(self.first_forbidden(bytes))
    }

    #[cold]
    fn first_forbidden(&self, bytes: &[u8]) -> InvalidCorrelationId {
        let (index, &byte) = bytes
            .iter()
            .enumerate()
            .find(|(_, b)| !self.chars.contains(**b))
            .unwrap_or((0, &0));
        InvalidCorrelationId::Forbidden { byte, index }
    }
}

/// Writes a refused value for a log line: at most [`Escaped::SHOWN`] bytes, each escaped as
/// `std::ascii::escape_default` does and spaces as `\x20` (so the output is visible ASCII only,
/// with no space or quote that could forge a field), then `...` when the value was cut.
pub(crate) struct Escaped<'a>(pub(crate) &'a [u8]);

impl Escaped<'_> {
    pub(crate) const SHOWN: usize = 32;
}

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = &self.0[..self.0.len().min(Self::SHOWN)];
        for &b in shown {
            // A space could start a forged `key=value` in a logfmt line: escape it too.
            match b {
                b' ' => f.write_str("\\x20")?,
                _ => fmt::Display::fmt(&std::ascii::escape_default(b), f)?,
            }
        }
        if self.0.len() > Self::SHOWN {
            f.write_str("...")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_set_is_rfc9110_tchar() {
        let tchar = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
        for b in 0..=255u8 {
            assert_eq!(CharSet::token().contains(b), tchar(b), "byte {b:#04x}");
        }
    }

    #[test]
    fn check_reports_each_reason() {
        let p = Policy::DEFAULT;
        assert_eq!(p.check(b""), Err(InvalidCorrelationId::Empty));
        assert_eq!(
            p.check(&[b'a'; 129]),
            Err(InvalidCorrelationId::TooLong { len: 129, max: 128 })
        );
        assert!(p.check(&[b'a'; 128]).is_ok());
        assert_eq!(
            p.check(b"ab\r\n"),
            Err(InvalidCorrelationId::Forbidden {
                byte: b'\r',
                index: 2
            })
        );
        assert_eq!(
            p.check("é".as_bytes()),
            Err(InvalidCorrelationId::Forbidden {
                byte: 0xc3,
                index: 0
            })
        );
    }

    #[test]
    fn short_ids_are_inline_long_ones_shared_and_both_compare_by_text() {
        use std::hash::BuildHasher;
        let state = std::collections::hash_map::RandomState::new();
        let text = "3f2b8c1e-9d4a-4b7e-a1c2-5e6f7a8b9c0d";
        let inline = CorrelationId::try_from(text).unwrap();
        let shared = CorrelationId::try_from(HeaderValue::from_static(text)).unwrap();
        assert!(matches!(inline.0, Repr::Inline { .. }));
        assert!(matches!(shared.0, Repr::Shared(_)));
        assert_eq!(inline, shared);
        assert_eq!(state.hash_one(&inline), state.hash_one(&shared));
        // A clone of a short shared id is a copy; both give back the same header value.
        assert!(matches!(shared.clone().0, Repr::Inline { .. }));
        assert_eq!(inline.to_header_value(), text);
        assert_eq!(HeaderValue::from(shared), text);

        let longest = "a".repeat(INLINE);
        assert!(matches!(
            CorrelationId::try_from(longest.as_str()).unwrap().0,
            Repr::Inline { .. }
        ));
        let long = "a".repeat(INLINE + 1);
        let id = CorrelationId::try_from(long.as_str()).unwrap();
        assert!(matches!(id.0, Repr::Shared(_)));
        assert!(matches!(id.clone().0, Repr::Shared(_)));
        assert_eq!(id.clone(), id);
        assert_eq!(id.as_str(), long);
        assert_eq!(id.into_header_value(), long.as_str());
    }

    #[test]
    fn escaped_is_printable_and_truncated() {
        let raw: Vec<u8> = (0..=255u8).collect();
        let shown = Escaped(&raw).to_string();
        assert!(shown.bytes().all(|b| (0x21..0x7f).contains(&b)), "{shown}");
        assert!(shown.starts_with("\\x00\\x01") && shown.ends_with("\\x1f..."));
        assert!(shown.len() <= 32 * 4 + 3);
        assert_eq!(Escaped(b"a\r\nb").to_string(), "a\\r\\nb");
        assert_eq!(
            Escaped(b"x reason=\"ok\"").to_string(),
            "x\\x20reason=\\\"ok\\\""
        );
    }
}
