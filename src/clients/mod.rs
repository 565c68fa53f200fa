//! Clients of OCI services, each knowing one API: the identity domain's REST API ([`identity_domain`],
//! with its SCIM search and Bulk in [`scim_bulk`]), the IAM control plane ([`control_plane`]: domains
//! and compartments), OCI Functions ([`functions`]: this function's own detached invocations) and
//! Monitoring's metric ingestion ([`monitoring`]). Signing, limits and the meaning of an answer come from
//! the shared transport ([`crate::transport`], the `oci-transport` crate).
pub mod control_plane;
pub mod functions;
pub mod identity_domain;
pub mod monitoring;
pub mod scim_bulk;
