//! Test doubles and data shared by the integration tests (and, by path, the examples).
pub mod demo;
pub mod fixtures;
pub mod identity_domain_server;
pub mod loopback;
pub mod monitoring_server;
pub mod png;
