//! A client-side request-rate limiter that finds the server's limit by itself.
//!
//! OCI services answer 429 once a caller is over its request rate (a Free identity domain allows
//! about 150 requests a minute to its user APIs, paid tiers more), and nothing tells the client the
//! figure in advance.
//! So the limiter learns it, much as the AWS SDKs' "adaptive" retry mode and TCP CUBIC do:
//!
//! * Requests are spaced evenly at the current rate (no bursts), across every task that shares the
//!   limiter. `MAX_REQUESTS_PER_SECOND` is the ceiling: the rate never goes above it. With no ceiling
//!   (`0`/`off`) the limiter is off altogether: nothing is spaced and 429s are only retried.
//! * A 429 cuts the rate to 70 % of what was being sent when it happened: the rate in force, or the
//!   pace of the requests sent in the last second if that was lower. Only a request let through
//!   after the latest cut can cause another cut, so the answers still in flight from before it
//!   (which were sent too fast and may well be 429s too) do not cut again and again.
//! * Every other answer lets the rate grow back along a cubic curve over time since the cut: quickly
//!   at first, flattening out as it nears the rate where the 429 came (reached after
//!   [`RECOVERY`]), then probing upwards, faster the longer no 429 arrives. The curve is scaled to
//!   that rate, so a 2.5/s domain and a 100/s one take the same time to recover. Growth is also held
//!   to twice what is actually being sent, so a quiet spell does not bank a rate the server never
//!   confirmed.
//! * Once the rate is back at the ceiling the episode is over and the limiter returns to its
//!   starting state. The rate never falls below [`MIN_RATE`], so a storm of 429s that have nothing to
//!   do with our rate slows a batch down but does not stop it.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

/// Share of the sending rate kept after a 429 (CUBIC's and the AWS SDKs' β).
const BACKOFF: f64 = 0.7;
/// Time to grow back to the rate at which the last 429 came (CUBIC's K, here fixed).
pub const RECOVERY: Duration = Duration::from_secs(5);
/// The rate never drops below this: a request a second still makes progress.
pub const MIN_RATE: f64 = 1.0;
/// Spacing is this much slower than the rate, so up to a tenth of a second of timing jitter between
/// client and server (a new connection, a busy core) never puts one request too many into a
/// one-second window.
const SPACING_MARGIN: f64 = 1.1;
/// The window over which the sending rate is measured.
const MEASURE_WINDOW: Duration = Duration::from_secs(1);
/// At most this many send times are remembered (bounds memory at very high rates).
const MEASURE_CAP: usize = 4096;

/// The call deadline would pass before the limiter allows the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PastDeadline;

/// Proof that a request was allowed, handed back with its answer.
#[derive(Debug, Clone, Copy)]
pub struct Grant {
    /// When its slot was booked, at the rate then in force.
    booked: Instant,
}

/// The limiter; share one (behind the client's `Arc`) between all tasks that talk to the same
/// service.
#[derive(Debug)]
pub struct RateLimiter {
    /// For logs: the host and rate group it paces.
    label: String,
    ceiling: Option<f64>,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// Requests per second allowed now; `None` (no ceiling) lets everything through.
    rate: Option<f64>,
    /// The earliest time the next request may go.
    next_slot: Instant,
    /// Since the last 429, if the limiter has not recovered yet: when it came and the rate then.
    episode: Option<Episode>,
    /// Send times within the last [`MEASURE_WINDOW`].
    recent: VecDeque<Instant>,
}

#[derive(Debug, Clone, Copy)]
struct Episode {
    cut_at: Instant,
    rate_at_cut: f64,
}

impl RateLimiter {
    /// `ceiling` is `MAX_REQUESTS_PER_SECOND`; `None` (or anything not a positive number) turns the
    /// limiter off.
    pub fn new(ceiling: Option<f64>) -> Self {
        Self::named(ceiling, String::new())
    }

    /// As [`new`](Self::new), with a label (host and rate group) for its log lines.
    pub fn named(ceiling: Option<f64>, label: String) -> Self {
        let ceiling = ceiling.filter(|c| c.is_finite() && *c > 0.0);
        RateLimiter {
            label,
            ceiling,
            state: Mutex::new(State {
                rate: ceiling,
                next_slot: Instant::now(),
                episode: None,
                recent: VecDeque::new(),
            }),
        }
    }

    /// Waits for this request's turn. Fails at once, without waiting, when the turn would come at
    /// or after `deadline`.
    pub async fn acquire(&self, deadline: Instant) -> Result<Grant, PastDeadline> {
        let booked = Instant::now();
        let slot = self.reserve(booked, deadline)?;
        tokio::time::sleep_until(slot).await;
        Ok(Grant { booked })
    }

    /// Feeds back the answer to a granted request: `throttled` for a 429.
    pub fn record(&self, grant: Grant, throttled: bool) {
        let now = Instant::now();
        if throttled {
            self.on_throttle(now, grant.booked);
        } else {
            self.on_success(now);
        }
    }

    /// The rate allowed now, in requests per second; `None` when unlimited.
    pub fn current_rate(&self) -> Option<f64> {
        self.lock().rate
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is a few numbers, each update complete before the lock is released.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Books the next slot at or after `now`.
    fn reserve(&self, now: Instant, deadline: Instant) -> Result<Instant, PastDeadline> {
        if now >= deadline {
            return Err(PastDeadline);
        }
        let mut state = self.lock();
        let Some(rate) = state.rate else {
            // Off: nothing to space, nothing to measure.
            return Ok(now);
        };
        let slot = state.next_slot.max(now);
        if slot >= deadline {
            return Err(PastDeadline);
        }
        state.next_slot = slot + Duration::from_secs_f64(SPACING_MARGIN / rate);
        state.note_sent(slot);
        Ok(slot)
    }

    fn on_throttle(&self, now: Instant, booked: Instant) {
        let mut state = self.lock();
        let Some(rate) = state.rate else {
            return;
        };
        if state.episode.is_some_and(|e| booked < e.cut_at) {
            // Let through at the old rate; that rate has already been cut for.
            return;
        }
        let sending = state
            .measured_rate(now)
            .map_or(rate, |measured| rate.min(measured))
            .max(MIN_RATE);
        let rate = (sending * BACKOFF).max(MIN_RATE);
        state.rate = Some(rate);
        state.episode = Some(Episode {
            cut_at: now,
            rate_at_cut: sending,
        });
        // The slots already booked at the old spacing stay; later ones use the new spacing.
        tracing::info!(
            limiter = %self.label,
            rate_per_second = rate,
            "answered 429: sending rate lowered"
        );
    }

    fn on_success(&self, now: Instant) {
        let mut state = self.lock();
        let Some(episode) = state.episode else {
            return;
        };
        let since = now.saturating_duration_since(episode.cut_at).as_secs_f64();
        let target = recovery_curve(episode.rate_at_cut, since);
        let held = 2.0 * state.measured_rate(now).unwrap_or(MIN_RATE).max(MIN_RATE);
        // Never lower on a success: the curve only rises from the cut, the hold only stops the rise.
        let current = state.rate.unwrap_or(MIN_RATE);
        let mut rate = target.min(held).max(current);
        let ceiling = self.ceiling.unwrap_or(f64::INFINITY);
        rate = rate.min(ceiling);
        if rate >= ceiling {
            state.episode = None;
            state.rate = self.ceiling;
        } else {
            state.rate = Some(rate);
        }
    }
}

impl State {
    fn note_sent(&mut self, at: Instant) {
        if self.recent.len() == MEASURE_CAP {
            self.recent.pop_front();
        }
        self.recent.push_back(at);
    }

    /// The rate of the requests sent in the last [`MEASURE_WINDOW`], per second; `None` when the
    /// sends cover no time to measure over.
    fn measured_rate(&mut self, now: Instant) -> Option<f64> {
        while self
            .recent
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= MEASURE_WINDOW)
        {
            self.recent.pop_front();
        }
        // Booked slots still in the future count too: they are being sent at this rate. Over the
        // span the sends actually cover, so a burst after a quiet spell shows at its own pace.
        let n = self.recent.len();
        let (first, last) = (self.recent.front()?, self.recent.back()?);
        let span = last.saturating_duration_since(*first).as_secs_f64();
        (n >= 2 && span >= 0.001).then(|| (n - 1) as f64 / span)
    }
}

/// The allowed rate `since` seconds after a 429 that came at `rate_at_cut`: `BACKOFF × rate_at_cut`
/// at once, `rate_at_cut` again after [`RECOVERY`], cubic in between and beyond.
fn recovery_curve(rate_at_cut: f64, since: f64) -> f64 {
    let k = RECOVERY.as_secs_f64();
    let scale = rate_at_cut * (1.0 - BACKOFF) / k.powi(3);
    rate_at_cut + scale * (since - k).powi(3)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    /// Books `n` slots, all asked for at `start`; returns the last slot.
    fn send(limiter: &RateLimiter, start: Instant, n: usize) -> Instant {
        let far = start + Duration::from_secs(3600);
        let mut last = start;
        for _ in 0..n {
            last = limiter.reserve(start, far).unwrap();
        }
        last
    }

    /// Replaces the measurement with `n` sends spread evenly over the second before `at`.
    fn sent_before(limiter: &RateLimiter, at: Instant, n: u32) {
        let mut state = limiter.lock();
        state.recent.clear();
        for i in (0..n).rev() {
            state.note_sent(at - secs(f64::from(i) / f64::from(n)));
        }
    }

    fn rate(limiter: &RateLimiter) -> f64 {
        limiter.current_rate().unwrap()
    }

    #[test]
    fn the_curve_starts_at_the_cut_and_regains_the_old_rate_after_recovery() {
        let k = RECOVERY.as_secs_f64();
        assert!((recovery_curve(10.0, 0.0) - 7.0).abs() < 1e-9);
        assert!((recovery_curve(10.0, k) - 10.0).abs() < 1e-9);
        // Flat near the old rate, faster beyond it; scale-free.
        assert!(recovery_curve(10.0, 0.8 * k) < 10.0 && recovery_curve(10.0, 0.8 * k) > 9.9);
        assert!(recovery_curve(10.0, 2.0 * k) > 12.9);
        assert!(
            (recovery_curve(2.5, 2.0 * k) / 2.5 - recovery_curve(100.0, 2.0 * k) / 100.0).abs()
                < 1e-9
        );
    }

    #[test]
    fn a_ceiling_spaces_requests_evenly() {
        let limiter = RateLimiter::new(Some(50.0));
        let t0 = Instant::now();
        let last = send(&limiter, t0, 11);
        // Ten gaps of 1.1 / 50 s.
        let spent = last.duration_since(t0).as_secs_f64();
        assert!((spent - 0.22).abs() < 1e-6, "{spent}");
        assert_eq!(limiter.current_rate(), Some(50.0));
    }

    #[test]
    fn without_a_ceiling_the_limiter_is_off() {
        for off in [
            None,
            Some(0.0),
            Some(-1.0),
            Some(f64::NAN),
            Some(f64::INFINITY),
        ] {
            let limiter = RateLimiter::new(off);
            let t0 = Instant::now();
            assert_eq!(send(&limiter, t0, 100), t0, "{off:?}");
            limiter.on_throttle(t0, t0);
            limiter.on_success(t0);
            assert_eq!(limiter.current_rate(), None, "{off:?}");
        }
    }

    #[test]
    fn a_slot_at_or_past_the_deadline_is_refused_without_booking_it() {
        let limiter = RateLimiter::new(Some(1.0));
        let t0 = Instant::now();
        assert_eq!(limiter.reserve(t0, t0 + secs(10.0)), Ok(t0));
        // The next slot is 1.1 s away.
        assert_eq!(limiter.reserve(t0, t0 + secs(1.0)), Err(PastDeadline));
        assert_eq!(limiter.reserve(t0, t0 + secs(2.0)), Ok(t0 + secs(1.1)));
        let off = RateLimiter::new(None);
        assert_eq!(off.reserve(t0, t0), Err(PastDeadline));
    }

    #[test]
    fn a_429_cuts_to_seventy_percent_of_the_rate_in_force() {
        let limiter = RateLimiter::new(Some(20.0));
        let t0 = Instant::now();
        // Slots asked for at once: nothing measurable yet, the rate in force counts.
        limiter.reserve(t0, t0 + secs(1.0)).unwrap();
        limiter.on_throttle(t0 + secs(0.01), t0);
        assert!((rate(&limiter) - 14.0).abs() < 1e-9);
    }

    #[test]
    fn a_429_cuts_from_what_was_sent_when_that_was_less() {
        let limiter = RateLimiter::new(Some(100.0));
        let t0 = Instant::now();
        sent_before(&limiter, t0, 10);
        limiter.on_throttle(t0, t0);
        let rate = rate(&limiter);
        // Ten sends 0.1 s apart: 10/s.
        assert!((rate - 7.0).abs() < 1e-6, "{rate}");
    }

    #[test]
    fn answers_to_requests_let_through_before_the_cut_do_not_cut_again() {
        let limiter = RateLimiter::new(Some(20.0));
        let t0 = Instant::now();
        sent_before(&limiter, t0, 40);
        limiter.on_throttle(t0, t0 - secs(0.1));
        assert!((rate(&limiter) - 14.0).abs() < 1e-9);
        // More 429s for requests booked before the cut: no change.
        for _ in 0..3 {
            limiter.on_throttle(t0 + secs(0.05), t0 - secs(0.01));
        }
        assert!((rate(&limiter) - 14.0).abs() < 1e-9);
        // A 429 for a request booked after the cut cuts again.
        limiter.on_throttle(t0 + secs(0.2), t0 + secs(0.1));
        assert!((rate(&limiter) - 9.8).abs() < 1e-9);
    }

    #[test]
    fn repeated_429s_never_go_below_the_floor() {
        let limiter = RateLimiter::new(Some(20.0));
        let mut t = Instant::now();
        for _ in 0..50 {
            t += secs(1.0);
            limiter.on_throttle(t, t);
        }
        assert_eq!(limiter.current_rate(), Some(MIN_RATE));
    }

    #[test]
    fn the_rate_recovers_gradually_up_to_the_ceiling_and_no_further() {
        let limiter = RateLimiter::new(Some(20.0));
        let t0 = Instant::now();
        sent_before(&limiter, t0, 40);
        limiter.on_throttle(t0, t0);
        assert!((rate(&limiter) - 14.0).abs() < 1e-9);
        let mut last = 14.0;
        let mut t = t0;
        let mut steps = 0;
        while limiter.current_rate() != Some(20.0) {
            t += secs(0.25);
            // Busy: 40 sent in the last second.
            sent_before(&limiter, t, 40);
            limiter.on_success(t);
            let rate = rate(&limiter);
            assert!(
                rate >= last - 1e-9,
                "never lower on success: {rate} < {last}"
            );
            assert!(rate <= 20.0);
            last = rate;
            steps += 1;
            assert!(steps < 1000, "recovers");
        }
        // Regaining the rate of the cut takes the recovery time, give or take a step.
        let took = t.duration_since(t0).as_secs_f64();
        assert!((took - RECOVERY.as_secs_f64()).abs() <= 0.3, "{took}");
        // The episode is over: a 429 now is a fresh cut from the ceiling.
        assert!(limiter.lock().episode.is_none());
    }

    #[test]
    fn growth_is_held_to_twice_what_is_sent() {
        let limiter = RateLimiter::new(Some(100.0));
        let t0 = Instant::now();
        sent_before(&limiter, t0, 10);
        limiter.on_throttle(t0, t0);
        assert!((rate(&limiter) - 7.0).abs() < 1e-6);
        // Long quiet: the curve is far above 10/s by now, but only 3 requests went out in the last
        // second, so the rate may rise to 6/s at most... and never falls under what it was.
        let later = t0 + secs(30.0);
        sent_before(&limiter, later, 3);
        limiter.on_success(later);
        assert!((rate(&limiter) - 7.0).abs() < 1e-6);
        // Busy again: now it may grow.
        sent_before(&limiter, later, 40);
        limiter.on_success(later);
        assert!(rate(&limiter) > 50.0);
    }

    #[tokio::test]
    async fn acquire_waits_for_the_slot_and_respects_the_deadline() {
        let limiter = RateLimiter::new(Some(50.0));
        let start = Instant::now();
        let far = start + Duration::from_secs(10);
        for _ in 0..6 {
            limiter.acquire(far).await.unwrap();
        }
        assert!(start.elapsed() >= Duration::from_millis(100));
        assert_eq!(
            limiter.acquire(Instant::now()).await.unwrap_err(),
            PastDeadline
        );
    }
}
