//! bulkhead: under construction.
