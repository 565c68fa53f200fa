//! Action: the work that reads and writes users. [`apply`] takes a batch's records to one outcome each;
//! [`reconcile`] pages through a domain's existing users and applies the same decision.
pub mod apply;
pub mod ledger;
pub mod reconcile;
