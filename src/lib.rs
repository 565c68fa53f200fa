//! Enforce a least-privilege capability profile on OCI identity-domain users that arrive through SAML
//! JIT or SCIM provisioning.
//!
//! Data flows one way: invocation body ([`audit`]) → validated targets ([`names`]) → planned changes
//! ([`profile`]) → signed requests ([`signer`], [`identity_domain`]) → report ([`apply`],
//! [`reconcile`]). [`fdk`] is the Fn platform protocol and knows nothing of identity domains; [`signer`]
//! knows nothing of Fn.
pub mod apply;
pub mod audit;
pub mod batch;
pub mod config;
pub mod control_plane;
pub mod handler;
pub mod identity_domain;
pub mod names;
pub mod plan;
pub mod policy;
pub mod profile;
pub mod rate_limit;
pub mod reconcile;
pub mod retry;
pub mod telemetry;

pub use oci_fdk as fdk;
pub use oci_signer as signer;
