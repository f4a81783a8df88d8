//! SplitMix64 (Steele, Lea and Flood, "Fast splittable pseudorandom number generators",
//! 2014): the lock-free, seedable random streams of the breaker's throttle, retry's jitter
//! seeds and chaos's faults are each one atomic counter advanced by [`GAMMA`] and passed
//! through [`mix`].

/// The golden-ratio increment of the stream.
pub(crate) const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// The output function: a counter value to a well-mixed 64-bit number.
pub(crate) fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
