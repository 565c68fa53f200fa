//! Test doubles shared by the integration tests (and, by path, the benchmark).
pub mod identity_domain_server;
