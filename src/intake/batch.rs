//! A batch's records grouped by the user they name, so each user is read, decided and written once
//! (the function and `plan` both group this way).

use std::collections::HashMap;
use std::hash::Hash;

use crate::config::{DomainPolicy, EventTypes};
use crate::intake::audit::{Records, Target, Triage};

/// All records that name one user, in batch order.
#[derive(Debug, Clone)]
pub struct UserRecords<K> {
    /// What identifies the user: the function uses the domain URL and the user's id or OCID,
    /// `plan` (which resolves nothing) the domain route.
    pub user: K,
    /// `(index in the batch, target)`; the first acts, later ones are duplicates of it.
    pub records: Vec<(usize, Target)>,
}

impl<K> UserRecords<K> {
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

/// Triages each record as the iterator is walked, freeing each record's text as it goes: the acting
/// ones are yielded with their index; every other record (ignored or rejected) goes to `settled` as it
/// is met. Nothing is collected, so a caller that groups the records as they come never holds a
/// batch's texts and targets at once.
pub fn acting_iter<'a>(
    records: Records,
    events: &'a EventTypes,
    domains: &'a DomainPolicy,
    mut settled: impl FnMut(usize, Triage) + 'a,
) -> impl Iterator<Item = (usize, Target)> + 'a {
    records
        .into_triage(events, domains)
        .enumerate()
        .filter_map(move |(index, triaged)| match triaged {
            Triage::Act(target) => Some((index, target)),
            other => {
                settled(index, other);
                None
            }
        })
}

/// Triages each record: the acting ones are returned with their index; every other record
/// (ignored or rejected) goes to `settled` as it is met, so a batch of 100,000 ignored records is
/// never held twice.
pub fn acting_records(
    records: &Records,
    events: &EventTypes,
    domains: &DomainPolicy,
    mut settled: impl FnMut(usize, Triage),
) -> Vec<(usize, Target)> {
    let mut acting = Vec::new();
    for (index, triaged) in records.triage(events, domains).enumerate() {
        match triaged {
            Triage::Act(target) => acting.push((index, target)),
            other => settled(index, other),
        }
    }
    acting
}

/// Groups `(user, index, target)` by user, users in order of first appearance.
pub fn group_by_user<K: Eq + Hash + Clone>(
    acting: impl IntoIterator<Item = (K, usize, Target)>,
) -> Vec<UserRecords<K>> {
    let mut users: Vec<UserRecords<K>> = Vec::new();
    let mut slot_of: HashMap<K, usize> = HashMap::new();
    for (user, index, target) in acting {
        let slot = *slot_of.entry(user.clone()).or_insert_with(|| {
            // Most users are named once: room for one record, not the four a first push reserves
            // (39,000 users × 3 unused targets was 29 MiB of a 6 MiB batch's peak).
            users.push(UserRecords {
                user,
                records: Vec::with_capacity(1),
            });
            users.len() - 1
        });
        users[slot].records.push((index, target));
    }
    users
}
