//! A batch's results as they settle. Each result is logged the moment it is pushed, counted, and kept
//! only as its JSON text (about 150 bytes for a small record, against some 400 as a struct with its
//! strings), so a 6 MiB batch of 39,000 tiny records keeps its report in a few MiB. The answer is
//! assembled from those texts at the end, cut to [`REPORT_MAX_BYTES`] when it would pass it.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::ser::SerializeSeq;
use serde::{Deserialize, Serialize, Serializer};
use serde_json::value::RawValue;

use crate::action::apply::{log_record, NotListed, Outcome, RecordResult, Report};
use crate::action::ledger::OpenCall;
use crate::decision::credentials::{add_counts, Counts};
use crate::report::metrics::{domain_dimension, OTHER_DOMAIN};

/// Above this many ignored records the report summarises them instead of listing each.
pub const IGNORED_LISTED_MAX: usize = 100;
/// The largest report answered: the platform's limit is 6 MB, and the counts and the summary need
/// room besides the listed records.
pub const REPORT_MAX_BYTES: usize = 5 * 1024 * 1024;
/// Room kept for everything but the listed records when a report is cut down.
const REPORT_SUMMARY_ROOM: usize = 256 * 1024;
/// Distinct reasons a summary counts one by one; the rest share one line per outcome.
const SUMMARY_REASONS_MAX: usize = 500;
/// Result texts are appended to blocks of this size: no block is ever copied to grow (a doubling
/// vector would hold twice the text for a moment).
const BLOCK_BYTES: usize = 1024 * 1024;
/// Distinct `(outcome, domain)` pairs counted for metrics; later domains count as `other`.
const DOMAIN_KEYS_MAX: usize = 256;

/// Records by outcome and domain (the metrics' dimensions), for every record of the batch.
pub type RecordsByDomain = BTreeMap<(&'static str, String), u64>;

/// The listed results of a report, each kept as its JSON text; serialises as a JSON array of them.
#[derive(Debug, Clone, Default)]
pub struct Listing {
    blocks: Vec<Vec<u8>>,
    entries: Vec<Entry>,
}

/// Where one result's text is, and what the report needs to know of it without parsing it.
#[derive(Debug, Clone, Copy)]
struct Entry {
    index: u32,
    outcome: Outcome,
    block: u32,
    start: u32,
    len: u32,
}

/// What a listed result says, read back from its text (the CLI's table, tests).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Listed {
    /// The record's 0-based position in the batch.
    pub index: usize,
    /// How the record ended (`applied`, …).
    pub outcome: String,
    /// The domain as the record named it.
    pub domain: Option<String>,
    /// The user id or OCID as the record named it.
    pub user_id: Option<String>,
    /// The user's name from the record.
    pub user_name: Option<String>,
    /// What decided the user's profile.
    pub policy: Vec<String>,
    /// Attribute → [before, after].
    pub changed: BTreeMap<String, [Option<bool>; 2]>,
    /// Lingering credentials by type.
    pub lingering: BTreeMap<String, usize>,
    /// Revoked credentials by type.
    pub revoked: BTreeMap<String, usize>,
    /// Why it ended so.
    pub reason: Option<String>,
    /// Identity-domain request ids.
    pub request_ids: Vec<String>,
}

impl Listing {
    /// How many results are listed.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when no result is listed.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn text(&self, e: &Entry) -> &str {
        let block = &self.blocks[e.block as usize];
        let bytes = &block[e.start as usize..(e.start + e.len) as usize];
        // Written by serde_json, so always UTF-8; an empty text would only ever mean a bug.
        std::str::from_utf8(bytes).unwrap_or_default()
    }

    /// Each listed result's JSON text, in report order.
    pub fn texts(&self) -> impl Iterator<Item = &str> + '_ {
        self.entries.iter().map(|e| self.text(e))
    }

    /// Each listed result read back, in report order.
    pub fn results(&self) -> Vec<Listed> {
        self.texts()
            .map(|t| serde_json::from_str(t).unwrap_or_default())
            .collect()
    }

    fn push(&mut self, index: usize, outcome: Outcome, text: &[u8]) {
        let fits = self
            .blocks
            .last()
            .is_some_and(|b| b.capacity() - b.len() >= text.len());
        if !fits {
            self.blocks
                .push(Vec::with_capacity(BLOCK_BYTES.max(text.len())));
        }
        let block = self.blocks.len() - 1;
        let buffer = &mut self.blocks[block];
        let start = buffer.len();
        buffer.extend_from_slice(text);
        self.entries.push(Entry {
            index: u32::try_from(index).unwrap_or(u32::MAX),
            outcome,
            block: block as u32,
            start: start as u32,
            len: text.len() as u32,
        });
    }
}

impl Serialize for Listing {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(self.entries.len()))?;
        for text in self.texts() {
            let raw: &RawValue = serde_json::from_str(text).map_err(serde::ser::Error::custom)?;
            seq.serialize_element(raw)?;
        }
        seq.end()
    }
}

/// The results of a batch collected one by one, then turned into its [`Report`].
#[derive(Debug, Default)]
pub(crate) struct ResultStore {
    listing: Listing,
    counts: [usize; 5],
    lingering: Counts,
    revoked: Counts,
    ignored_reasons: BTreeMap<String, usize>,
    by_domain: RecordsByDomain,
    scratch: Vec<u8>,
}

fn slot(outcome: Outcome) -> usize {
    match outcome {
        Outcome::Applied => 0,
        Outcome::Unchanged => 1,
        Outcome::Ignored => 2,
        Outcome::Rejected => 3,
        Outcome::Failed => 4,
    }
}

impl ResultStore {
    /// Counts `r` and keeps its text (an ignored record's only while few enough are to be listed).
    pub(crate) fn push(&mut self, r: &RecordResult) {
        self.counts[slot(r.user.outcome)] += 1;
        add_counts(&mut self.lingering, &r.user.lingering);
        add_counts(&mut self.revoked, &r.user.revoked);
        self.count_domain(r);
        if r.user.outcome == Outcome::Ignored {
            let reason = r.user.reason.clone().unwrap_or_default();
            *self.ignored_reasons.entry(reason).or_insert(0) += 1;
            if self.counts[slot(Outcome::Ignored)] > IGNORED_LISTED_MAX {
                return;
            }
        }
        self.scratch.clear();
        if serde_json::to_writer(&mut self.scratch, r).is_err() {
            // Plain structs of strings and numbers cannot fail to serialise; the count still holds.
            return;
        }
        self.listing.push(r.index, r.user.outcome, &self.scratch);
    }

    fn count_domain(&mut self, r: &RecordResult) {
        let mut key = (
            r.user.outcome.as_str(),
            domain_dimension(r.domain.as_deref()),
        );
        if self.by_domain.len() >= DOMAIN_KEYS_MAX && !self.by_domain.contains_key(&key) {
            key.1 = OTHER_DOMAIN.to_owned();
        }
        *self.by_domain.entry(key).or_insert(0) += 1;
    }

    /// The report: every record counted, listed in record order unless too many are ignored (those
    /// are summarised) or the whole would pass [`REPORT_MAX_BYTES`] (see [`Report`]).
    pub(crate) fn into_report(self, dry_run: bool) -> Report {
        self.into_report_within(dry_run, REPORT_MAX_BYTES)
    }

    fn into_report_within(mut self, dry_run: bool, limit: usize) -> Report {
        self.scratch = Vec::new();
        let ignored = self.counts[slot(Outcome::Ignored)];
        let ignored_summary = (ignored > IGNORED_LISTED_MAX).then(|| {
            self.listing
                .entries
                .retain(|e| e.outcome != Outcome::Ignored);
            std::mem::take(&mut self.ignored_reasons)
        });
        self.listing.entries.sort_by_key(|e| e.index);
        let not_listed = fit_within(&mut self.listing, limit);
        let [applied, unchanged, ignored, rejected, failed] = self.counts;
        Report {
            received: self.counts.iter().sum(),
            applied,
            unchanged,
            ignored,
            rejected,
            failed,
            dry_run,
            lingering: self.lingering,
            revoked: self.revoked,
            results: self.listing,
            ignored_summary,
            not_listed,
            error: None,
            results_logged_per_record: false,
            records_by_domain: self.by_domain,
        }
    }
}

/// Keeps the listed texts under `limit`: when they would pass it, the failed and rejected records are
/// listed first, as many records as fit are listed, and the rest are counted by outcome and reason.
fn fit_within(listing: &mut Listing, limit: usize) -> Option<NotListed> {
    let total: usize = listing.entries.iter().map(|e| e.len as usize + 1).sum();
    if total + REPORT_SUMMARY_ROOM <= limit {
        return None;
    }
    let rank = |o: Outcome| match o {
        Outcome::Failed => 0,
        Outcome::Rejected => 1,
        _ => 2,
    };
    let mut entries = std::mem::take(&mut listing.entries);
    entries.sort_by_key(|e| (rank(e.outcome), e.index));
    let budget = limit.saturating_sub(REPORT_SUMMARY_ROOM);
    let mut used = 0;
    let mut not_listed = NotListed::default();
    for e in entries {
        // Each listed text costs its length and a comma.
        let cost = e.len as usize + 1;
        if used + cost <= budget && not_listed.count == 0 {
            used += cost;
            listing.entries.push(e);
            continue;
        }
        not_listed.count += 1;
        let reason = reason_of(listing.text(&e));
        let mut key = format!("{}: {reason}", e.outcome.as_str());
        let known = not_listed.by_outcome_and_reason.contains_key(&key);
        if !known && not_listed.by_outcome_and_reason.len() >= SUMMARY_REASONS_MAX {
            key = format!("{}: (other reasons)", e.outcome.as_str());
        }
        *not_listed.by_outcome_and_reason.entry(key).or_insert(0) += 1;
    }
    Some(not_listed)
}

/// The first 200 characters of a result text's `reason` (empty when it has none).
fn reason_of(text: &str) -> String {
    #[derive(Deserialize)]
    struct Reason {
        #[serde(default)]
        reason: Option<String>,
    }
    let reason = serde_json::from_str::<Reason>(text)
        .ok()
        .and_then(|r| r.reason)
        .unwrap_or_default();
    reason.chars().take(200).collect()
}

/// A batch's results as they settle: each is logged at once, counted in the call's ledger and
/// stored. Shared by the tasks that settle records concurrently (the Bulk path's domains).
#[derive(Debug)]
pub(crate) struct SettledResults<'a> {
    call: &'a OpenCall,
    store: Mutex<ResultStore>,
}

impl<'a> SettledResults<'a> {
    pub(crate) fn new(call: &'a OpenCall) -> Self {
        SettledResults {
            call,
            store: Mutex::new(ResultStore::default()),
        }
    }

    /// Logs `result` now, counts it as settled, and keeps it for the report.
    pub(crate) fn push(&self, result: RecordResult) {
        log_record(&result);
        self.call.settled(1);
        self.store
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(&result);
    }

    pub(crate) fn into_report(self, dry_run: bool) -> Report {
        self.store
            .into_inner()
            .unwrap_or_else(|p| p.into_inner())
            .into_report(dry_run)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store_of(results: impl IntoIterator<Item = RecordResult>) -> ResultStore {
        let mut store = ResultStore::default();
        results.into_iter().for_each(|r| store.push(&r));
        store
    }

    fn result(index: usize, outcome: Outcome, reason: &str) -> RecordResult {
        let mut r = RecordResult::new(index, outcome);
        r.user.reason = Some(reason.to_owned());
        r.user.user_id = Some(format!("{index:032x}"));
        r
    }

    #[test]
    fn a_report_past_five_mebibytes_lists_failures_first_and_summarises_the_rest() {
        let results: Vec<RecordResult> = (0..60_000)
            .map(|i| {
                let outcome = match i % 3 {
                    0 => Outcome::Unchanged,
                    1 => Outcome::Rejected,
                    _ if i % 1000 == 2 => Outcome::Failed,
                    _ => Outcome::Applied,
                };
                result(i, outcome, &format!("{} {}", "x".repeat(100), i % 7))
            })
            .collect();
        let failed = results
            .iter()
            .filter(|r| r.user.outcome == Outcome::Failed)
            .count();
        let report = store_of(results).into_report(false);
        let size = serde_json::to_vec(&report).unwrap().len();
        assert!(size < REPORT_MAX_BYTES, "{size}");
        assert_eq!(report.received, 60_000);
        let not_listed = report.not_listed.as_ref().expect("summarised");
        assert_eq!(report.results.len() + not_listed.count, 60_000);
        assert_eq!(
            not_listed.by_outcome_and_reason.values().sum::<usize>(),
            not_listed.count
        );
        let listed = report.results.results();
        assert!(listed[..failed].iter().all(|r| r.outcome == "failed"));
        assert!(listed[..failed].windows(2).all(|w| w[0].index < w[1].index));
        assert!(listed[failed..]
            .iter()
            .take(10)
            .all(|r| r.outcome == "rejected"));
        assert!(not_listed
            .by_outcome_and_reason
            .keys()
            .all(|k| !k.starts_with("failed")));
    }

    #[test]
    fn a_small_report_lists_every_record_in_order_as_its_own_json() {
        let report = store_of([
            result(2, Outcome::Applied, "b"),
            result(0, Outcome::Rejected, "a"),
            result(1, Outcome::Unchanged, "c"),
        ])
        .into_report(true);
        let answer: serde_json::Value = serde_json::to_value(&report).unwrap();
        let indexes: Vec<_> = answer["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["index"].as_u64().unwrap())
            .collect();
        assert_eq!(indexes, [0, 1, 2]);
        assert_eq!(answer["results"][0]["reason"], "a");
        assert_eq!(
            (report.applied, report.rejected, report.unchanged),
            (1, 1, 1)
        );
        assert!(report.not_listed.is_none());
    }

    #[test]
    fn many_ignored_records_are_summarised_not_kept() {
        let mut store = store_of((0..1000).map(|i| result(i, Outcome::Ignored, "not selected")));
        store.push(&result(1000, Outcome::Applied, "x"));
        assert_eq!(store.listing.len(), IGNORED_LISTED_MAX + 1, "texts kept");
        let report = store.into_report(false);
        assert_eq!(report.results.len(), 1);
        assert_eq!(report.ignored, 1000);
        assert_eq!(report.ignored_summary.unwrap()["not selected"], 1000);
    }

    #[test]
    fn metrics_domains_are_bounded() {
        let store = store_of((0..1000).map(|i| {
            let mut r = result(i, Outcome::Rejected, "x");
            r.domain = Some(format!("idcs-{i:032x}"));
            r
        }));
        assert_eq!(store.by_domain.len(), DOMAIN_KEYS_MAX + 1);
        assert_eq!(store.by_domain.values().sum::<u64>(), 1000);
    }
}
