//! # samplers
//!
//! Noise schedules and solvers (in progress; see the samplers issue).
