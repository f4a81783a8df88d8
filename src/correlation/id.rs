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
/// It wraps an [`http::HeaderValue`], which is backed by `Bytes`, so cloning it is a reference
/// count increment (or nothing at all for static values) and never copies the text.
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
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct CorrelationId(HeaderValue);

impl CorrelationId {
    /// Wraps a value the caller has already checked to be visible ASCII.
    pub(crate) fn from_checked(value: HeaderValue) -> Self {
        debug_assert!(
            !value.is_empty() && value.as_bytes().iter().all(|b| (0x21..=0x7e).contains(b)),
            "unchecked correlation id {value:?}"
        );
        Self(value)
    }

    /// A new random UUID v4, as the default generator [`MakeUuidV4`](super::MakeUuidV4) makes.
    pub fn new_v4() -> Self {
        super::generate::uuid_v4()
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        // Visible ASCII by construction, so this never falls back.
        self.0.to_str().unwrap_or_default()
    }

    /// The id as a header value.
    pub fn header_value(&self) -> &HeaderValue {
        &self.0
    }

    /// Unwraps the header value.
    pub fn into_header_value(self) -> HeaderValue {
        self.0
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
        id.0
    }
}

impl TryFrom<HeaderValue> for CorrelationId {
    type Error = InvalidCorrelationId;

    /// Checks `value` against the default rules.
    fn try_from(value: HeaderValue) -> Result<Self, Self::Error> {
        Policy::DEFAULT.check(value.as_bytes())?;
        Ok(Self(value))
    }
}

impl TryFrom<&str> for CorrelationId {
    type Error = InvalidCorrelationId;

    /// Checks `value` against the default rules, then copies it.
    fn try_from(value: &str) -> Result<Self, Self::Error> {
        Policy::DEFAULT.check(value.as_bytes())?;
        let value = HeaderValue::from_str(value).map_err(|_| InvalidCorrelationId::Empty)?;
        Ok(Self(value))
    }
}

impl TryFrom<String> for CorrelationId {
    type Error = InvalidCorrelationId;

    /// Checks `value` against the default rules, and keeps its buffer.
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Policy::DEFAULT.check(value.as_bytes())?;
        let value = HeaderValue::try_from(value).map_err(|_| InvalidCorrelationId::Empty)?;
        Ok(Self(value))
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
