//! `Retry-After` read from hostile bytes and written from any duration: never a panic, and
//! the output always means what the input said.
#![cfg(feature = "http")]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::HeaderValue;
use proptest::prelude::*;
use seawall::error::MAX_DELAY;
use seawall::http::{format_retry_after, parse_retry_after};

/// Inputs: arbitrary bytes, numbers of seconds (with spaces, signs, too many digits), HTTP
/// dates from any time, and dates with one byte changed.
fn input() -> impl Strategy<Value = Vec<u8>> {
    let date = (0u64..=253_402_300_799).prop_map(|secs| {
        httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(secs)).into_bytes()
    });
    prop_oneof![
        2 => prop::collection::vec(any::<u8>(), 0..40),
        2 => "[ \t]{0,2}[-+]?[0-9]{0,30}[ \t]{0,2}".prop_map(String::into_bytes),
        2 => date.clone(),
        1 => (date, any::<prop::sample::Index>(), any::<u8>()).prop_map(|(mut d, at, b)| {
            let i = at.index(d.len());
            d[i] = b;
            d
        }),
    ]
}

fn duration() -> impl Strategy<Value = Duration> {
    prop_oneof![
        Just(Duration::MAX),
        Just(Duration::new(u64::MAX, 1)),
        Just(MAX_DELAY),
        (0u64..200_000, 0u32..1_000_000_000).prop_map(|(s, n)| Duration::new(s, n)),
        (any::<u64>(), 0u32..1_000_000_000).prop_map(|(s, n)| Duration::new(s, n)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(10_000))]

    #[test]
    fn any_retry_after_value_reads_as_seconds_a_date_or_nothing(
        bytes in input(),
        now in 0u64..=253_402_300_799,
    ) {
        let Ok(value) = HeaderValue::from_bytes(&bytes) else {
            return Ok(());
        };
        let now = UNIX_EPOCH + Duration::from_secs(now);
        let got = parse_retry_after(&value, now);
        let text = value.to_str().ok().map(str::trim).filter(|t| !t.is_empty());
        let expected = text.and_then(|t| {
            if t.bytes().all(|b| b.is_ascii_digit()) {
                // Delay-seconds; more than a u64 holds saturates.
                Some(Duration::from_secs(t.parse().unwrap_or(u64::MAX)))
            } else {
                let when: SystemTime = httpdate::parse_http_date(t).ok()?;
                Some(when.duration_since(now).unwrap_or(Duration::ZERO))
            }
        });
        prop_assert_eq!(got, expected, "{:?}", value);
    }

    #[test]
    fn any_duration_is_written_as_whole_seconds_rounded_up_at_most_a_day(d in duration()) {
        let value = format_retry_after(d);
        let text = value.to_str().unwrap();
        prop_assert!(!text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()), "{}", text);
        let secs: u64 = text.parse().unwrap();
        let capped = d.min(MAX_DELAY);
        let rounded_up = capped.as_secs() + u64::from(capped.subsec_nanos() > 0);
        prop_assert_eq!(secs, rounded_up);
        prop_assert!(secs <= MAX_DELAY.as_secs());
        // It reads back as what it says.
        prop_assert_eq!(
            parse_retry_after(&value, UNIX_EPOCH),
            Some(Duration::from_secs(secs))
        );
    }
}
