//! Report: what the function tells people. The offline [`plan`] and the logs ([`telemetry`]).
pub mod plan;
pub mod telemetry;
