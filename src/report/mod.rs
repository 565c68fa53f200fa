//! Report: what the function tells people. The offline [`plan`], the logs ([`telemetry`]) and the
//! progress of long command-line work ([`progress`]).
pub mod plan;
pub mod progress;
pub mod telemetry;
