//! Durations in human form: `"250ms"`, `"2s"`, `"1m 30s"`.
//!
//! The grammar is Go's `time.ParseDuration` with room for spaces: one or more terms, each a
//! number (digits, optionally a decimal point and more digits) and a unit (`ns`, `us` or `µs`,
//! `ms`, `s`, `m`, `h`, `d`), terms summed. A space may stand between two terms and between a
//! number and its unit, never inside a number: `"25 0ms"` is refused, not read as 250 ms. The
//! string `"0"` is zero. Nothing else: no sign, no exponent, no bare number (is `250` seconds
//! or milliseconds?), no unit spelled another way. A value finer than a nanosecond or longer
//! than `Duration::MAX` is refused.
//!
//! Written back, a duration is its terms from hours down to nanoseconds, zero terms left out:
//! `"1m 30s"`, `"1s 500ms"`, `"250ms"`, and `"0s"`. It reads back to the same value.

use serde::de::{self, Visitor};
use serde::{Deserializer, Serializer};
use std::fmt::{self, Write as _};
use std::time::Duration;

const NANOS_PER_SEC: u128 = 1_000_000_000;

/// The units read, with their length in nanoseconds.
const UNITS: [(&str, u128); 9] = [
    ("ns", 1),
    ("us", 1_000),
    ("µs", 1_000),
    ("μs", 1_000),
    ("ms", 1_000_000),
    ("s", NANOS_PER_SEC),
    ("m", 60 * NANOS_PER_SEC),
    ("h", 3_600 * NANOS_PER_SEC),
    ("d", 86_400 * NANOS_PER_SEC),
];

/// The units written, largest first.
const WRITTEN: [(&str, u128); 6] = [
    ("h", 3_600 * NANOS_PER_SEC),
    ("m", 60 * NANOS_PER_SEC),
    ("s", NANOS_PER_SEC),
    ("ms", 1_000_000),
    ("us", 1_000),
    ("ns", 1),
];

/// What the error messages say is expected.
const EXPECTED: &str =
    "a number and a unit (ns, us, ms, s, m, h, d), such as \"250ms\", \"2s\" or \"1m 30s\"";

/// Reads a duration in human form (see the [module docs](self)); `Err` says why not.
pub(crate) fn parse(text: &str) -> Result<Duration, String> {
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err("it is empty".into());
    }
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    let too_long = || "it is longer than the longest duration".to_string();
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(format!("a number was expected at {rest:?}"));
        }
        let (whole, after) = rest.split_at(digits);
        let (fraction, after) = match after.strip_prefix('.') {
            Some(after) => {
                let digits = after.bytes().take_while(u8::is_ascii_digit).count();
                if digits == 0 {
                    return Err(format!("digits were expected after \"{whole}.\""));
                }
                after.split_at(digits)
            }
            None => ("", after),
        };
        let after = after.trim_start();
        let unit_len: usize = after
            .chars()
            .take_while(|c| c.is_alphabetic())
            .map(char::len_utf8)
            .sum();
        let (unit, after) = after.split_at(unit_len);
        let number = if fraction.is_empty() {
            whole.to_string()
        } else {
            format!("{whole}.{fraction}")
        };
        if unit.is_empty() {
            return Err(format!("{number} has no unit"));
        }
        let Some(&(_, scale)) = UNITS.iter().find(|(name, _)| *name == unit) else {
            return Err(format!("{unit:?} is not a unit"));
        };
        let whole: u128 = whole.parse().map_err(|_| too_long())?;
        let mut nanos = whole.checked_mul(scale).ok_or_else(too_long)?;
        let fraction = fraction.trim_end_matches('0');
        if !fraction.is_empty() {
            // Nanoseconds in `0.fraction` of the unit; the unit is at most a day (< 2^47 ns),
            // so 19 digits (< 2^64) times it cannot overflow.
            let too_fine = || format!("{number}{unit} is finer than a nanosecond");
            if fraction.len() > 19 {
                return Err(too_fine());
            }
            let numerator: u128 = fraction.parse().map_err(|_| too_fine())?;
            let denominator = 10u128.pow(fraction.len() as u32);
            let part = numerator * scale;
            if part % denominator != 0 {
                return Err(too_fine());
            }
            nanos = nanos.checked_add(part / denominator).ok_or_else(too_long)?;
        }
        total = total.checked_add(nanos).ok_or_else(too_long)?;
        rest = after.trim_start();
    }
    let secs = u64::try_from(total / NANOS_PER_SEC).map_err(|_| too_long())?;
    Ok(Duration::new(secs, (total % NANOS_PER_SEC) as u32))
}

/// Writes a duration in human form: `"1m 30s"`, `"250ms"`, `"0s"`.
pub(crate) fn format(duration: Duration) -> String {
    if duration.is_zero() {
        return "0s".into();
    }
    let mut rest = duration.as_nanos();
    let mut out = String::new();
    for (unit, scale) in WRITTEN {
        let n = rest / scale;
        rest %= scale;
        if n > 0 {
            if !out.is_empty() {
                out.push(' ');
            }
            let _ = write!(out, "{n}{unit}");
        }
    }
    out
}

/// A config field that holds a duration: `Duration`, or `Option<Duration>` when it may be
/// left out.
pub(crate) trait DurationField: Sized {
    fn from_duration(duration: Duration) -> Self;
    fn duration(&self) -> Option<Duration>;
}

impl DurationField for Duration {
    fn from_duration(duration: Duration) -> Self {
        duration
    }
    fn duration(&self) -> Option<Duration> {
        Some(*self)
    }
}

impl DurationField for Option<Duration> {
    fn from_duration(duration: Duration) -> Self {
        Some(duration)
    }
    fn duration(&self) -> Option<Duration> {
        *self
    }
}

/// Reads the duration of `field` from a string in human form; the error names the field, the
/// value and what was expected.
pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
    deserializer: D,
    field: &'static str,
) -> Result<Duration, D::Error> {
    deserializer.deserialize_str(DurationVisitor { field })
}

/// Writes a duration in human form (`None` as the format's none).
pub(crate) fn serialize<S: Serializer>(
    duration: Option<Duration>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match duration {
        Some(d) => serializer.serialize_str(&format(d)),
        None => serializer.serialize_none(),
    }
}

struct DurationVisitor {
    field: &'static str,
}

impl Visitor<'_> for DurationVisitor {
    type Value = Duration;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a duration for `{}`: {EXPECTED}", self.field)
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<Duration, E> {
        parse(value).map_err(|why| {
            E::custom(format_args!(
                "invalid duration {value:?} for `{}`: {why}; expected {EXPECTED}",
                self.field
            ))
        })
    }
}

/// Makes, in a module `human` of the caller, one serde `with` module per duration field, whose
/// errors name the field: `human_duration!(max_wait: "max_wait")`, then
/// `#[serde(with = "human::max_wait")]` on a `Duration` or `Option<Duration>` field.
macro_rules! human_duration {
    ($($module:ident: $field:literal),* $(,)?) => {
        mod human {
            $(
                pub(super) mod $module {
                    use $crate::config::duration::DurationField;

                    pub(crate) fn deserialize<'de, D, T>(deserializer: D) -> Result<T, D::Error>
                    where
                        D: serde::Deserializer<'de>,
                        T: DurationField,
                    {
                        $crate::config::duration::deserialize(deserializer, $field)
                            .map(T::from_duration)
                    }

                    pub(crate) fn serialize<S, T>(value: &T, serializer: S) -> Result<S::Ok, S::Error>
                    where
                        S: serde::Serializer,
                        T: DurationField,
                    {
                        $crate::config::duration::serialize(value.duration(), serializer)
                    }
                }
            )*
        }
    };
}

pub(crate) use human_duration;

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn reads_the_human_forms() {
        for (text, want) in [
            ("250ms", ms(250)),
            ("2s", ms(2_000)),
            ("1m 30s", ms(90_000)),
            ("1m30s", ms(90_000)),
            ("1s 500ms", ms(1_500)),
            ("2m", ms(120_000)),
            ("1.5s", ms(1_500)),
            ("0.25s", ms(250)),
            ("1h", ms(3_600_000)),
            ("1d", ms(86_400_000)),
            ("250 ms", ms(250)),
            ("  2s  ", ms(2_000)),
            ("0", Duration::ZERO),
            ("0s", Duration::ZERO),
            ("10us", Duration::from_micros(10)),
            ("10µs", Duration::from_micros(10)),
            ("7ns", Duration::from_nanos(7)),
            ("1.000000001s", Duration::new(1, 1)),
            ("1.50000000000000000000000000000s", ms(1_500)),
        ] {
            assert_eq!(parse(text), Ok(want), "{text:?}");
        }
    }

    #[test]
    fn refuses_everything_else() {
        for text in [
            "",
            "   ",
            "250",
            "25 0ms",
            "ms",
            "1x",
            "1 s s",
            "1S",
            "1sec",
            "-1s",
            "+1s",
            "1e3ms",
            "1.s",
            ".5s",
            "1..5s",
            "1s,2s",
            "1s 2",
            "1.5ns",
            "0.0000000001s",
            "99999999999999999999999999999999999999999s",
            "18446744073709551616s",
            "213503982334602d",
            // The whole part fits in a u128 of nanoseconds, the fraction pushes it over.
            "340282366920938463463374607431.9s",
            "340282366920938463463374607431768211.5us",
            "3938453320844195178974243.9d",
            "∞",
            "1秒",
        ] {
            assert!(
                parse(text).is_err(),
                "{text:?} was read as {:?}",
                parse(text)
            );
        }
    }

    #[test]
    fn the_longest_duration_reads_and_one_more_nanosecond_does_not() {
        let max = format(Duration::MAX);
        assert_eq!(parse(&max), Ok(Duration::MAX));
        assert!(parse(&format!("{max} 1ns")).is_err());
    }

    mod fuzz {
        use super::*;
        use proptest::prelude::*;

        /// One term: digits, maybe a fraction, a unit (or a stray word), spaces around.
        fn term() -> impl Strategy<Value = (String, Option<String>, String, bool)> {
            (
                "[0-9]{1,40}",
                prop::option::of("[0-9]{1,25}"),
                prop_oneof![
                    "(ns|us|µs|μs|ms|s|m|h|d)",
                    "[a-zA-Zµ秒]{1,3}",
                    Just(String::new()),
                ],
                any::<bool>(),
            )
        }

        /// What a sequence of terms reads as, worked out on its own: nanoseconds as a u128,
        /// refused when inexact, unknown, or longer than `Duration::MAX`.
        fn model(terms: &[(String, Option<String>, String, bool)]) -> Option<Duration> {
            if let [(whole, None, unit, _)] = terms {
                if whole == "0" && unit.is_empty() {
                    return Some(Duration::ZERO);
                }
            }
            let mut total: u128 = 0;
            for (whole, fraction, unit, _) in terms {
                let scale = UNITS.iter().find(|(n, _)| n == unit)?.1;
                let mut nanos = whole.parse::<u128>().ok()?.checked_mul(scale)?;
                if let Some(f) = fraction {
                    let f = f.trim_end_matches('0');
                    // More than 19 significant digits is never a whole number of nanoseconds
                    // of a unit of at most a day (2^16 * 3^3 * 5^11 ns).
                    if f.len() > 19 {
                        return None;
                    }
                    let num = f.parse::<u128>().unwrap_or(0) * scale;
                    let den = 10u128.pow(f.len() as u32);
                    if num % den != 0 {
                        return None;
                    }
                    nanos = nanos.checked_add(num / den)?;
                }
                total = total.checked_add(nanos)?;
            }
            let secs = u64::try_from(total / NANOS_PER_SEC).ok()?;
            Some(Duration::new(secs, (total % NANOS_PER_SEC) as u32))
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(10_000))]

            /// Well-formed and nearly well-formed terms read exactly as the model says, and
            /// what is read is written back to the same value.
            #[test]
            fn terms_read_as_the_model_says(terms in prop::collection::vec(term(), 1..4)) {
                let text: String = terms
                    .iter()
                    .map(|(w, f, u, space)| {
                        let f = f.as_ref().map(|f| format!(".{f}")).unwrap_or_default();
                        let sp = if *space { " " } else { "" };
                        format!("{w}{f}{sp}{u} ")
                    })
                    .collect();
                let got = parse(&text);
                prop_assert_eq!(got.clone().ok(), model(&terms), "{:?}", text);
                if let Ok(d) = got {
                    prop_assert_eq!(parse(&format(d)), Ok(d));
                }
            }

            /// Any text: an answer, never a panic, and an accepted one writes back to itself.
            #[test]
            fn any_text_reads_or_is_refused(text in "(?s).{0,40}") {
                if let Ok(d) = parse(&text) {
                    prop_assert_eq!(parse(&format(d)), Ok(d));
                }
            }

            /// Any duration is written in a form that reads back to it.
            #[test]
            fn any_duration_writes_and_reads_back(secs in any::<u64>(), nanos in 0u32..1_000_000_000) {
                let d = Duration::new(secs, nanos);
                prop_assert_eq!(parse(&format(d)), Ok(d));
            }
        }
    }

    #[test]
    fn writes_terms_from_hours_down_and_reads_them_back() {
        for (d, text) in [
            (Duration::ZERO, "0s"),
            (ms(250), "250ms"),
            (ms(1_500), "1s 500ms"),
            (ms(90_000), "1m 30s"),
            (Duration::from_secs(86_400 + 1), "24h 1s"),
            (Duration::new(1, 1), "1s 1ns"),
        ] {
            assert_eq!(format(d), text);
            assert_eq!(parse(text), Ok(d));
        }
    }
}
