//! Metrics: pure collectors (`collect`) and the sampler around them.

pub mod collect;
