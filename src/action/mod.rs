//! Action: the work that reads and writes users. [`apply`] takes a batch's records to one outcome each;
//! [`reconcile`] pages through a domain's existing users and applies the same decision; `bulk` reads
//! with SCIM search and writes with SCIM Bulk for both (`BULK=auto`).
pub mod apply;
mod bulk;
pub mod reconcile;
