//! Enforce a least-privilege capability profile on OCI identity-domain users.
pub mod audit;
pub mod config;
pub mod fdk;
pub mod names;
pub mod profile;
