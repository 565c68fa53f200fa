//! The integration tests, one binary: the function behind a real Fn socket and its command line,
//! run against a loopback identity-domain server (`support/`) that checks every request's signature.

// `pub` here marks what the test modules share with each other, not an API.
#![allow(unreachable_pub)]
mod bulk;
mod cli;
mod credentials;
mod demo;
mod enforcement;
mod events;
mod fdk_platform;
mod first_hour;
mod functions_platform;
mod hardening;
mod hostile;
mod idd_server;
mod metrics;
mod platform_harness;
mod policy;
mod real_api;
mod reconcile;
mod reliability;
mod report;
mod support;
mod tenancy;
mod transport;
