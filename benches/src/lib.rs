//! Shared helpers for the criterion suites (see the benchmark issue).
