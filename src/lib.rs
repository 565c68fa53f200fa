//! Enforce a least-privilege capability profile on OCI identity-domain users.
pub mod fdk;
pub mod signer;
