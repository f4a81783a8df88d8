//! circuit_breaker: under construction.
