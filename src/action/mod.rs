//! Action: the work that reads and writes users. [`apply`] takes a batch's records to one outcome each;
//! [`reconcile`] pages through a domain's existing users and applies the same decision; [`credentials`]
//! reports or revokes the credentials a user's profile leaves lingering; [`ledger`] knows what the calls
//! in progress have settled, for SIGTERM; [`tenancy`] starts one reconcile per identity domain of a
//! compartment tree and hands a reconcile that nears its deadline on to the next invocation; `bulk`
//! reads with SCIM search and writes with SCIM Bulk for batches and reconcile (`BULK=auto`);
//! `domains` learns a domain's OCID and display name from a user's `domainOcid` when the policy
//! needs them on a path that knows the domain only by name; [`settled`] keeps a batch's results as
//! they settle and makes its report.
pub mod apply;
mod bulk;
pub mod credentials;
pub(crate) mod domains;
pub mod ledger;
pub mod reconcile;
pub mod settled;
pub mod tenancy;
