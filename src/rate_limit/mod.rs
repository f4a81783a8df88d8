//! rate_limit: under construction.
