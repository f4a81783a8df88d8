//! correlation: under construction.
