//! Benchmarks and the regression gate.
