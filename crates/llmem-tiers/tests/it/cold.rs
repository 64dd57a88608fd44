//! The cold tier on a real Lance dataset.
