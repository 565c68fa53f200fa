//! Decision: which profile a user gets ([`policy`]) and what that profile means for the user's current
//! capabilities, down to the PUT body ([`profile`]). Pure: no I/O.
pub mod policy;
pub mod profile;
