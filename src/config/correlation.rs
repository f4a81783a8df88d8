//! The correlation id layers' settings.

use super::set;
use crate::correlation::{
    Builder, CharSet, CorrelationIdLayer, PropagateCorrelationIdLayer, X_CORRELATION_ID,
};
use crate::error::ConfigError;
use http::header::HeaderName;
use serde::{Deserialize, Serialize};

const LAYER: &str = "correlation";

/// The settings of a [`CorrelationIdLayer`] (the server side), as a config document holds
/// them.
///
/// Every field mirrors the [`Builder`] method of the same name; a field left out keeps the
/// builder's default (see [`CorrelationIdLayer`]: `x-correlation-id`, at most 128 bytes of
/// [`CharSet::token`]).
///
/// ```
/// use seawall::config::CorrelationIdConfig;
///
/// let config: CorrelationIdConfig = toml::from_str(r#"
///     header_names = ["x-request-id", "x-correlation-id"]
///     max_len = 64
///     allowed_chars = "0123456789abcdef-"
/// "#).unwrap();
/// let layer = config.build().unwrap();
/// assert_eq!(layer.handle().header_names()[0], "x-request-id");
/// ```
///
/// The id generator is code, not a setting: take [`builder`](Self::builder) and give it a
/// [`make_id`](Builder::make_id).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct CorrelationIdConfig {
    /// The headers the id is read from, in order of preference ([`Builder::header_names`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub header_names: Option<Vec<String>>,
    /// The longest incoming id accepted, in bytes ([`Builder::max_len`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_len: Option<usize>,
    /// Every character an incoming id may hold, such as `"0123456789abcdef-"`
    /// ([`Builder::allowed_chars`], [`CharSet::from_bytes`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allowed_chars: Option<String>,
}

/// The settings of a [`PropagateCorrelationIdLayer`] (the client side):
/// `{ header_name = "x-request-id" }`. Left out, the header is `x-correlation-id`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct PropagationConfig {
    /// The header the id is put under ([`PropagateCorrelationIdLayer::with_header`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub header_name: Option<String>,
}

/// Parses a header name; `x-correlation-id` becomes the constant, which costs nothing to
/// clone per request.
fn header_name(field: &'static str, name: &str) -> Result<HeaderName, ConfigError> {
    let parsed = HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| ConfigError::new(LAYER, field, name, "valid HTTP header names"))?;
    Ok(if parsed == X_CORRELATION_ID {
        X_CORRELATION_ID
    } else {
        parsed
    })
}

impl CorrelationIdConfig {
    /// A [`Builder`] with these settings, to add an id generator before
    /// [`build`](Builder::build).
    ///
    /// # Errors
    /// A [`ConfigError`] naming `header_names` when a name is not a valid header name, or
    /// `allowed_chars` when it is empty or holds anything but visible ASCII.
    pub fn builder(&self) -> Result<Builder, ConfigError> {
        let names = match &self.header_names {
            Some(names) => Some(
                names
                    .iter()
                    .map(|n| header_name("header_names", n))
                    .collect::<Result<Vec<_>, _>>()?,
            ),
            None => None,
        };
        let chars = match &self.allowed_chars {
            Some(chars) => Some(CharSet::from_bytes(chars.as_bytes())?),
            None => None,
        };
        let b = CorrelationIdLayer::builder();
        let b = set(b, names, Builder::header_names);
        let b = set(b, self.max_len, Builder::max_len);
        Ok(set(b, chars, Builder::allowed_chars))
    }

    /// Builds the layer, with the default generator (UUID v4).
    ///
    /// # Errors
    /// A [`ConfigError`] naming the first invalid field: see [`builder`](Self::builder) and
    /// [`Builder::build`] (no name, more than 8, a name twice, `max_len` outside `1..=1024`).
    pub fn build(&self) -> Result<CorrelationIdLayer, ConfigError> {
        self.builder()?.build()
    }
}

impl PropagationConfig {
    /// Builds the layer.
    ///
    /// # Errors
    /// A [`ConfigError`] naming `header_name` when it is not a valid header name.
    pub fn build(&self) -> Result<PropagateCorrelationIdLayer, ConfigError> {
        Ok(match &self.header_name {
            Some(name) => {
                PropagateCorrelationIdLayer::with_header(header_name("header_name", name)?)
            }
            None => PropagateCorrelationIdLayer::new(),
        })
    }
}
