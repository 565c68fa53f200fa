//! Report: what the function tells people. The offline [`plan`], the logs ([`telemetry`]), the
//! posture report of a domain ([`posture`], drawn as a page by [`html`]) and the progress of long
//! command-line work ([`progress`]).
pub mod html;
pub mod metrics;
pub mod plan;
pub mod posture;
pub mod progress;
pub mod telemetry;
