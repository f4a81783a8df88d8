use crate::error::MAX_DELAY;
use http::{HeaderMap, HeaderValue};
use std::time::{Duration, SystemTime};

/// Parses a `Retry-After` value: delay-seconds (`"120"`) or an HTTP-date
/// (`"Wed, 21 Oct 2015 07:28:00 GMT"`), relative to `now`.
///
/// Hostile input never panics:
/// - an empty, negative, fractional or otherwise malformed value is `None`;
/// - a number of seconds too large for a `u64` saturates to `u64::MAX` seconds, so the caller's
///   cap applies (a caller must always cap what it waits; the retry layer does);
/// - a date in the past is `Some(Duration::ZERO)`.
///
/// ```
/// use std::time::{Duration, SystemTime, UNIX_EPOCH};
/// use http::HeaderValue;
/// use seawall::http::parse_retry_after;
///
/// let now = UNIX_EPOCH + Duration::from_secs(1_445_412_480); // 2015-10-21 07:28:00 UTC
/// assert_eq!(parse_retry_after(&HeaderValue::from_static("120"), now), Some(Duration::from_secs(120)));
/// assert_eq!(
///     parse_retry_after(&HeaderValue::from_static("Wed, 21 Oct 2015 07:29:00 GMT"), now),
///     Some(Duration::from_secs(60)),
/// );
/// assert_eq!(parse_retry_after(&HeaderValue::from_static("soon"), now), None);
/// assert_eq!(parse_retry_after(&HeaderValue::from_static("-5"), now), None);
/// ```
pub fn parse_retry_after(value: &HeaderValue, now: SystemTime) -> Option<Duration> {
    let s = value.to_str().ok()?.trim();
    if s.is_empty() {
        return None;
    }
    if s.bytes().all(|b| b.is_ascii_digit()) {
        // All digits: delay-seconds. Too many digits for a u64 saturates.
        let secs = s.parse::<u64>().unwrap_or(u64::MAX);
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(s).ok()?;
    Some(when.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Reads the first `Retry-After` header of `headers`, relative to the system clock now.
///
/// See [`parse_retry_after`] for what malformed values give.
pub fn retry_after_from_headers(headers: &HeaderMap) -> Option<Duration> {
    parse_retry_after(headers.get(http::header::RETRY_AFTER)?, SystemTime::now())
}

/// Writes `delay` as a `Retry-After` value in whole seconds, rounded up (`1.2s` becomes `"2"`),
/// and at most a day ([`MAX_DELAY`], `"86400"`): a longer delay (a rate limit of a few calls a
/// week, say) is written as a day, after which the client is told again. No delay overflows:
/// `Duration::MAX` is `"86400"`, never a wrapped `"0"`.
///
/// ```
/// use std::time::Duration;
/// use seawall::http::format_retry_after;
///
/// assert_eq!(format_retry_after(Duration::from_millis(1200)), "2");
/// assert_eq!(format_retry_after(Duration::ZERO), "0");
/// assert_eq!(format_retry_after(Duration::MAX), "86400");
/// ```
pub fn format_retry_after(delay: Duration) -> HeaderValue {
    let delay = delay.min(MAX_DELAY);
    let secs = delay.as_secs() + u64::from(delay.subsec_nanos() > 0);
    HeaderValue::from(secs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_445_412_480)
    }

    #[test]
    fn huge_seconds_saturate_instead_of_failing() {
        let v = HeaderValue::from_static("99999999999999999999999999");
        assert_eq!(
            parse_retry_after(&v, now()),
            Some(Duration::from_secs(u64::MAX))
        );
    }

    #[test]
    fn past_dates_mean_now() {
        let v = HeaderValue::from_static("Wed, 21 Oct 2015 07:00:00 GMT");
        assert_eq!(parse_retry_after(&v, now()), Some(Duration::ZERO));
    }

    #[test]
    fn malformed_values_are_none() {
        for s in [
            "",
            " ",
            "1.5",
            "+3",
            "0x10",
            "tomorrow",
            "Wed, 99 Oct 2015 07:00:00 GMT",
        ] {
            let v = HeaderValue::from_str(s).unwrap();
            assert_eq!(parse_retry_after(&v, now()), None, "{s:?}");
        }
        let opaque = HeaderValue::from_bytes(b"\xff12").unwrap();
        assert_eq!(parse_retry_after(&opaque, now()), None);
    }

    #[test]
    fn surrounding_whitespace_is_allowed() {
        let v = HeaderValue::from_static(" 7 ");
        assert_eq!(parse_retry_after(&v, now()), Some(Duration::from_secs(7)));
    }

    #[test]
    fn format_rounds_up() {
        assert_eq!(format_retry_after(Duration::from_nanos(1)), "1");
        assert_eq!(format_retry_after(Duration::from_secs(30)), "30");
        assert_eq!(format_retry_after(Duration::new(86_399, 1)), "86400");
    }

    #[test]
    fn format_saturates_at_a_day() {
        for d in [
            MAX_DELAY + Duration::from_nanos(1),
            Duration::from_secs(u64::MAX),
            Duration::new(u64::MAX, 1),
            Duration::MAX,
        ] {
            assert_eq!(format_retry_after(d), "86400", "{d:?}");
        }
    }
}
