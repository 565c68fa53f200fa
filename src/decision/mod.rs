//! Decision: which profile a user gets ([`policy`]), what that profile means for the user's current
//! capabilities, down to the PUT body ([`profile`]), and which of the user's existing credentials it
//! leaves without a capability ([`credentials`]). Pure: no I/O.
pub mod credentials;
pub mod policy;
pub mod profile;
