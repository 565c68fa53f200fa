//! A client-side request-rate limiter that finds the server's limit by itself.
//!
//! Identity domains answer 429 once a tenancy's tier is over its request rate (a Free domain allows
//! about 150 requests a minute, paid tiers more), and nothing tells the client the figure in advance.
//! So the limiter learns it, much as the AWS SDKs' "adaptive" retry mode and TCP CUBIC do:
//!
//! * Requests are spaced evenly at the current rate (no bursts), across every task that shares the
//!   limiter. `MAX_REQUESTS_PER_SECOND` is the ceiling: the rate never goes above it. Without a
//!   ceiling the limiter lets everything through until the first 429.
//! * A 429 cuts the rate to 70 % of what was being sent when it happened: the rate in force, or,
//!   if lower or if nothing was in force, the pace of the requests sent in the last second. Only a
//!   request sent after the latest cut can cause another cut, so the answers still in flight from
//!   before it (which were sent too fast and may well be 429s too) do not cut again and again.
//! * Every other answer lets the rate grow back along a cubic curve over time since the cut: quickly
//!   at first, flattening out as it nears the rate where the 429 came (reached after
//!   [`RECOVERY`]), then probing upwards, faster the longer no 429 arrives. The curve is scaled to
//!   that rate, so a 2.5/s domain and a 100/s one take the same time to recover. Growth is also held
//!   to twice what is actually being sent, so a quiet spell does not bank a rate the server never
//!   confirmed.
//! * Once the rate is back at the ceiling (or, with no ceiling, at twice the rate of the cut) the
//!   episode is over and the limiter returns to its starting state.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

/// Share of the sending rate kept after a 429 (CUBIC's and the AWS SDKs' β).
const BACKOFF: f64 = 0.7;
/// Time to grow back to the rate at which the last 429 came (CUBIC's K, here fixed).
pub const RECOVERY: Duration = Duration::from_secs(5);
/// The rate never drops below this: a request every two seconds still makes progress.
pub const MIN_RATE: f64 = 0.5;
/// Spacing is this much slower than the rate, so timing jitter between client and server never puts
/// one request too many into a one-second window.
const SPACING_MARGIN: f64 = 1.05;
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
    sent: Instant,
}

/// The limiter; share one (behind the client's `Arc`) between all tasks that talk to the same
/// service.
#[derive(Debug)]
pub struct RateLimiter {
    ceiling: Option<f64>,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// Requests per second allowed now; `None` lets everything through.
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
    /// `ceiling` is `MAX_REQUESTS_PER_SECOND`; `None` (or anything not a positive number) means no
    /// fixed cap, only what 429s teach.
    pub fn new(ceiling: Option<f64>) -> Self {
        let ceiling = ceiling.filter(|c| c.is_finite() && *c > 0.0);
        RateLimiter {
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
        let slot = self.reserve(Instant::now(), deadline)?;
        tokio::time::sleep_until(slot).await;
        Ok(Grant { sent: slot })
    }

    /// Feeds back the answer to a granted request: `throttled` for a 429.
    pub fn record(&self, grant: Grant, throttled: bool) {
        let now = Instant::now();
        if throttled {
            self.on_throttle(now, grant.sent);
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
        let mut state = self.lock();
        let slot = match state.rate {
            None => now,
            Some(_) => state.next_slot.max(now),
        };
        if slot >= deadline {
            return Err(PastDeadline);
        }
        if let Some(rate) = state.rate {
            state.next_slot = slot + Duration::from_secs_f64(SPACING_MARGIN / rate);
        }
        state.note_sent(slot);
        Ok(slot)
    }

    fn on_throttle(&self, now: Instant, sent: Instant) {
        let mut state = self.lock();
        if state.episode.is_some_and(|e| sent < e.cut_at) {
            // Sent at the old rate; that rate has already been cut for.
            return;
        }
        let measured = state.measured_rate(now);
        let sending = match state.rate {
            Some(rate) => rate.min(measured.max(MIN_RATE)),
            None => measured,
        }
        .max(MIN_RATE);
        let rate = (sending * BACKOFF).max(MIN_RATE);
        state.rate = Some(rate);
        state.episode = Some(Episode {
            cut_at: now,
            rate_at_cut: sending,
        });
        // The slots already booked at the old spacing stay; later ones use the new spacing.
        tracing::info!(
            rate_per_second = rate,
            "identity domain answered 429: sending rate lowered"
        );
    }

    fn on_success(&self, now: Instant) {
        let mut state = self.lock();
        let Some(episode) = state.episode else {
            return;
        };
        let since = now.saturating_duration_since(episode.cut_at).as_secs_f64();
        let target = recovery_curve(episode.rate_at_cut, since);
        let held = 2.0 * state.measured_rate(now).max(MIN_RATE);
        // Never lower on a success: the curve only rises from the cut, the hold only stops the rise.
        let current = state.rate.unwrap_or(MIN_RATE);
        let mut rate = target.min(held).max(current);
        let recovered = match self.ceiling {
            Some(ceiling) => {
                rate = rate.min(ceiling);
                rate >= ceiling
            }
            None => rate >= 2.0 * episode.rate_at_cut,
        };
        if recovered {
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

    /// The rate of the requests sent in the last [`MEASURE_WINDOW`], per second.
    fn measured_rate(&mut self, now: Instant) -> f64 {
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
        if let (Some(first), Some(last)) = (self.recent.front(), self.recent.back()) {
            let span = last.saturating_duration_since(*first).as_secs_f64();
            if n >= 2 && span >= 0.001 {
                return (n - 1) as f64 / span;
            }
        }
        n as f64 / MEASURE_WINDOW.as_secs_f64()
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

    /// Sends `n` requests starting at `start`, as the limiter spaces them; returns the last slot.
    fn send(limiter: &RateLimiter, start: Instant, n: usize) -> Instant {
        let far = start + Duration::from_secs(3600);
        let mut last = start;
        for _ in 0..n {
            last = limiter.reserve(start, far).unwrap();
        }
        last
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
        // Ten gaps of 1.05 / 50 s.
        let spent = last.duration_since(t0).as_secs_f64();
        assert!((spent - 0.21).abs() < 1e-6, "{spent}");
        assert_eq!(limiter.current_rate(), Some(50.0));
    }

    #[test]
    fn no_ceiling_lets_everything_through_until_a_429() {
        let limiter = RateLimiter::new(None);
        let t0 = Instant::now();
        assert_eq!(send(&limiter, t0, 100), t0);
        assert_eq!(limiter.current_rate(), None);
        for bad in [Some(0.0), Some(-1.0), Some(f64::NAN), Some(f64::INFINITY)] {
            assert_eq!(RateLimiter::new(bad).current_rate(), None, "{bad:?}");
        }
    }

    #[test]
    fn a_slot_at_or_past_the_deadline_is_refused_without_booking_it() {
        let limiter = RateLimiter::new(Some(1.0));
        let t0 = Instant::now();
        assert_eq!(limiter.reserve(t0, t0 + secs(10.0)), Ok(t0));
        // The next slot is 1.05 s away.
        assert_eq!(limiter.reserve(t0, t0 + secs(1.0)), Err(PastDeadline));
        assert_eq!(limiter.reserve(t0, t0 + secs(2.0)), Ok(t0 + secs(1.05)));
        let unlimited = RateLimiter::new(None);
        assert_eq!(unlimited.reserve(t0, t0), Err(PastDeadline));
    }

    #[test]
    fn a_429_cuts_to_seventy_percent_of_the_measured_rate_when_unlimited() {
        let limiter = RateLimiter::new(None);
        let t0 = Instant::now();
        send(&limiter, t0, 40);
        limiter.on_throttle(t0 + secs(0.1), t0);
        let rate = limiter.current_rate().unwrap();
        assert!((rate - 28.0).abs() < 1e-9, "{rate}");
    }

    #[test]
    fn answers_to_requests_sent_before_the_cut_do_not_cut_again() {
        let limiter = RateLimiter::new(Some(20.0));
        let t0 = Instant::now();
        // 21 sent over the last second: 20 per second.
        for i in 0..21 {
            limiter.lock().note_sent(t0 + secs(0.05 * f64::from(i)));
        }
        let cut = t0 + secs(1.0);
        limiter.on_throttle(cut, t0);
        assert!((limiter.current_rate().unwrap() - 14.0).abs() < 1e-9);
        // Three more 429s for requests that went out before the cut: no change.
        for _ in 0..3 {
            limiter.on_throttle(cut + secs(0.05), t0 + secs(0.9));
        }
        assert!((limiter.current_rate().unwrap() - 14.0).abs() < 1e-9);
        // A 429 for a request sent after the cut cuts again.
        limiter.on_throttle(cut + secs(0.2), cut + secs(0.1));
        let rate = limiter.current_rate().unwrap();
        assert!(rate < 14.0 * BACKOFF + 1e-9, "{rate}");
    }

    #[test]
    fn a_burst_is_measured_at_its_own_pace() {
        let limiter = RateLimiter::new(None);
        let t0 = Instant::now();
        // 11 requests 5 ms apart (200 per second), after a long quiet spell.
        for i in 0..11 {
            limiter.lock().note_sent(t0 + secs(0.005 * f64::from(i)));
        }
        limiter.on_throttle(t0 + secs(0.06), t0 + secs(0.05));
        let rate = limiter.current_rate().unwrap();
        assert!((rate - 140.0).abs() < 1e-6, "{rate}");
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
        // Busy: 20 sent within the last second at each step.
        let busy = |at: Instant| {
            limiter.lock().recent.clear();
            for i in 0..20 {
                limiter.lock().note_sent(at - secs(0.04 * f64::from(i)));
            }
        };
        busy(t0);
        limiter.on_throttle(t0, t0);
        assert_eq!(limiter.current_rate(), Some(14.0));
        let mut last = 14.0;
        let mut t = t0;
        let mut steps = 0;
        while limiter.current_rate() != Some(20.0) {
            t += secs(0.25);
            busy(t);
            limiter.on_success(t);
            let rate = limiter.current_rate().unwrap();
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
        assert!(took >= RECOVERY.as_secs_f64() - 0.3, "{took}");
        assert!(took <= RECOVERY.as_secs_f64() + 0.3, "{took}");
        // The episode is over: a 429 now is a fresh cut from the ceiling.
        assert!(limiter.lock().episode.is_none());
    }

    #[test]
    fn growth_is_held_to_twice_what_is_sent() {
        let limiter = RateLimiter::new(None);
        let t0 = Instant::now();
        send(&limiter, t0, 10);
        limiter.on_throttle(t0, t0);
        assert_eq!(limiter.current_rate(), Some(7.0));
        // Long quiet: the curve would be far above 10/s, but only 1 request went out in the last
        // second, so the rate may not rise above 2/s... and never falls under what it was.
        let later = t0 + secs(30.0);
        limiter.lock().recent.clear();
        limiter.lock().note_sent(later);
        limiter.on_success(later);
        let rate = limiter.current_rate().unwrap();
        assert!((rate - 7.0).abs() < 1e-9, "{rate}");
    }

    #[test]
    fn without_a_ceiling_recovery_ends_in_unlimited_again() {
        let limiter = RateLimiter::new(None);
        let t0 = Instant::now();
        send(&limiter, t0, 10);
        limiter.on_throttle(t0, t0);
        let later = t0 + RECOVERY * 4;
        for i in 0..40 {
            limiter.lock().note_sent(later - secs(0.02 * f64::from(i)));
        }
        limiter.on_success(later);
        assert_eq!(limiter.current_rate(), None);
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
