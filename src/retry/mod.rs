//! retry: under construction.
