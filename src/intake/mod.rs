//! Intake: where a record enters. The invocation body's shapes ([`audit`]), the validated names a
//! record may carry ([`names`]), and a batch grouped by the user it names ([`batch`]). Nothing here
//! sends a request or decides a profile.
pub mod audit;
pub mod batch;
pub mod names;
