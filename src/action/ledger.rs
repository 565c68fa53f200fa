//! What the calls in progress have settled and what they have not, so that a SIGTERM can say so before
//! the process goes, and so that no write is started once the process has been told to stop.
//!
//! Every record's log line is written the moment its outcome is settled (see
//! [`log_record`](crate::action::apply::log_record)); the ledger only has to name the rest. It holds the
//! users being worked on (at most `MAX_CONCURRENCY` a call) and counts, never one entry per record, so it
//! costs nothing on a batch of 39,000 records.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// How far a user's work has gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Reading the user (or waiting for its domain to be resolved).
    Reading,
    /// The write has been sent; its answer has not been read.
    Writing,
}

impl Stage {
    fn as_str(self) -> &'static str {
        match self {
            Stage::Reading => "reading the user; nothing written",
            Stage::Writing => {
                "past the read: the write may have been sent, its answer not yet read"
            }
        }
    }
}

/// The process's calls in progress and whether it has been told to stop.
#[derive(Debug, Default)]
pub struct Ledger {
    stopping: AtomicBool,
    next_call: AtomicU64,
    calls: Mutex<BTreeMap<u64, Arc<CallBook>>>,
}

/// One call's progress: how many records it received and settled, and the users in flight.
#[derive(Debug)]
pub struct CallBook {
    received: usize,
    settled: AtomicUsize,
    /// The first record index of each user in flight → that user's work.
    in_flight: Mutex<BTreeMap<usize, UserInFlight>>,
}

/// A user being worked on: as the records name it, its record indexes, and how far it has gone.
#[derive(Debug)]
struct UserInFlight {
    user: String,
    records: Vec<usize>,
    stage: Stage,
}

impl Ledger {
    /// Whether SIGTERM (or SIGINT) has arrived: no user is started and no write is sent after it.
    pub fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// Records that the process is stopping and logs, for every call in progress, what is settled
    /// (each of those has had its line) and what is not.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        for (call, book) in lock(&self.calls).iter() {
            book.log_unsettled(*call);
        }
    }

    /// Opens the book of a call of `received` records; it is closed when the returned handle drops.
    pub fn open(self: &Arc<Self>, received: usize) -> OpenCall {
        let id = self.next_call.fetch_add(1, Ordering::Relaxed);
        let book = Arc::new(CallBook {
            received,
            settled: AtomicUsize::new(0),
            in_flight: Mutex::new(BTreeMap::new()),
        });
        lock(&self.calls).insert(id, Arc::clone(&book));
        OpenCall {
            ledger: Arc::clone(self),
            id,
            book,
        }
    }
}

impl CallBook {
    fn log_unsettled(&self, call: u64) {
        let in_flight = lock(&self.in_flight);
        let settled = self.settled.load(Ordering::SeqCst);
        let busy: usize = in_flight.values().map(|u| u.records.len()).sum();
        tracing::warn!(
            call,
            received = self.received,
            settled,
            in_flight = busy,
            not_started = self.received.saturating_sub(settled + busy),
            "stopping (SIGTERM): every settled record has its line; the records in flight are listed \
             next; no user is started and no write sent from now on, and what remains ends failed so \
             the platform retries it"
        );
        for u in in_flight.values() {
            for index in &u.records {
                tracing::warn!(
                    call,
                    index,
                    user_id = %u.user,
                    stage = u.stage.as_str(),
                    "record not settled at SIGTERM"
                );
            }
        }
    }
}

/// A call's open book; dropping it closes the book.
#[derive(Debug)]
pub struct OpenCall {
    ledger: Arc<Ledger>,
    id: u64,
    book: Arc<CallBook>,
}

impl OpenCall {
    /// `n` more records have their outcome (and their log line).
    pub fn settled(&self, n: usize) {
        self.book.settled.fetch_add(n, Ordering::SeqCst);
    }

    /// A user's work starts: it is in flight until the returned guard drops.
    pub fn start(&self, user: &str, records: Vec<usize>) -> InFlight<'_> {
        let first = records.first().copied().unwrap_or_default();
        let user = UserInFlight {
            user: user.to_owned(),
            records,
            stage: Stage::Reading,
        };
        lock(&self.book.in_flight).insert(first, user);
        InFlight { call: self, first }
    }

    /// Whether the process is stopping.
    pub fn stopping(&self) -> bool {
        self.ledger.stopping()
    }
}

impl Drop for OpenCall {
    fn drop(&mut self) {
        lock(&self.ledger.calls).remove(&self.id);
    }
}

/// One user's work in flight; dropping it takes the user off the list.
#[derive(Debug)]
pub struct InFlight<'a> {
    call: &'a OpenCall,
    first: usize,
}

impl InFlight<'_> {
    /// The user's work has reached `stage`.
    pub fn stage(&self, stage: Stage) {
        if let Some(user) = lock(&self.call.book.in_flight).get_mut(&self.first) {
            user.stage = stage;
        }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        lock(&self.call.book.in_flight).remove(&self.first);
    }
}

/// A poisoned lock still holds usable bookkeeping: a panic elsewhere must not hide what is unsettled.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
