//! Transport: what every signed OCI call shares, whatever the service. The classifier that says what an
//! answer means ([`retry`]) and the adaptive request-rate limiter ([`rate_limit`]).
pub mod rate_limit;
pub mod retry;
