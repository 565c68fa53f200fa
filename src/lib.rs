//! Enforce a least-privilege capability profile on OCI identity-domain users that arrive through SAML
//! JIT or SCIM provisioning.
//!
//! Data flows one way, and the folders follow it: [`intake`] (the invocation body, validated names, a
//! batch grouped by user) → [`decision`] (the policy and the profile) → [`action`] (apply and reconcile,
//! through the OCI [`clients`] and their shared [`transport`] (the `oci-transport` crate), signed by [`signer`]) → [`report`] (the
//! offline plan and the logs). [`fdk`] is the Fn platform protocol and knows nothing of identity domains; [`signer`]
//! knows nothing of Fn.
pub mod action;
pub mod clients;
pub mod config;
pub mod decision;
pub mod handler;
pub mod intake;
pub mod report;

pub use oci_fdk as fdk;
pub use oci_signer as signer;
pub use oci_transport as transport;
