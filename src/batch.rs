//! A batch's records grouped by the user they name, so each user is read, decided and written once
//! (the function and `plan` both group this way).

use std::collections::HashMap;

use crate::audit::{Records, Target, Triage};
use crate::config::{DomainPolicy, EventTypes};
use crate::names::{DomainUrl, UserId};

/// All records that name one user (same domain URL and user id), in batch order.
#[derive(Debug, Clone)]
pub struct UserRecords {
    pub domain_url: DomainUrl,
    pub user_id: UserId,
    /// `(index in the batch, target)`; the first acts, later ones are duplicates of it.
    pub records: Vec<(usize, Target)>,
}

impl UserRecords {
    /// Every domain value the records gave for this user, first seen first, without repeats.
    pub fn domain_values(&self) -> Vec<String> {
        let mut values: Vec<String> = Vec::new();
        for v in self.records.iter().flat_map(|(_, t)| &t.domain_values) {
            if !values.contains(v) {
                values.push(v.clone());
            }
        }
        values
    }
}

/// Triages each record and groups the acting ones by user, users in order of first appearance.
/// Every record that does not act (ignored or rejected) goes to `settled` with its index as it is
/// met, so a batch of 100,000 ignored records is never held twice.
pub fn group_by_user(
    records: &Records,
    events: &EventTypes,
    domains: &DomainPolicy,
    mut settled: impl FnMut(usize, Triage),
) -> Vec<UserRecords> {
    let mut users: Vec<UserRecords> = Vec::new();
    let mut slot_of: HashMap<(String, String), usize> = HashMap::new();
    for (index, triaged) in records.triage(events, domains).enumerate() {
        match triaged {
            Triage::Act(target) => {
                let key = (
                    target.domain_url.as_str().to_owned(),
                    target.user_id.as_str().to_owned(),
                );
                let slot = *slot_of.entry(key).or_insert_with(|| {
                    users.push(UserRecords {
                        domain_url: target.domain_url.clone(),
                        user_id: target.user_id.clone(),
                        records: Vec::new(),
                    });
                    users.len() - 1
                });
                users[slot].records.push((index, target));
            }
            other => settled(index, other),
        }
    }
    users
}
