//! Bounds on one download, of a file or an image blob or manifest alike: an overall
//! deadline per artifact (retries and backoff included) and a minimum transfer rate over a
//! window, like curl's `--max-time` and `--speed-limit`/`--speed-time`.
//!
//! A [`Guard`] watches one artifact: every await of the transfer goes through
//! [`Guard::wait`], every chunk through [`Guard::received`], every backoff through
//! [`Guard::sleep`]. A missed deadline is final; a window below the minimum rate is a
//! transient failure the engine retries (resuming with `Range`) until the deadline.

use std::future::Future;
use std::time::Duration;
use tokio::time::Instant;

/// Default `--timeout`: 30 minutes for one artifact.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// Default `--min-rate`: 1 KiB/s ...
pub const DEFAULT_MIN_RATE: u64 = 1024;
/// ... averaged over `--min-rate-time`, 30 seconds.
pub const DEFAULT_RATE_TIME: Duration = Duration::from_secs(30);

/// Limits of one artifact's download.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Overall deadline for one artifact, retries and backoff included.
    pub timeout: Duration,
    /// Minimum average bytes per second over each `rate_time` window; 0 turns it off.
    pub min_rate: u64,
    pub rate_time: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            timeout: DEFAULT_TIMEOUT,
            min_rate: DEFAULT_MIN_RATE,
            rate_time: DEFAULT_RATE_TIME,
        }
    }
}

/// Which limit a transfer hit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitHit {
    #[error("not finished within the {} s deadline (--timeout)", .0.as_secs_f64())]
    Deadline(Duration),
    #[error("too slow: {got} bytes in the last {} s, below the minimum of {min_rate} bytes/s (--min-rate, --min-rate-time)", .over.as_secs_f64())]
    TooSlow { got: u64, min_rate: u64, over: Duration },
}

impl LimitHit {
    /// A missed deadline ends the artifact; a slow window may be retried.
    pub fn is_final(&self) -> bool {
        matches!(self, LimitHit::Deadline(_))
    }
}

/// Watches one artifact's download against its [`Limits`].
#[derive(Debug)]
pub struct Guard {
    limits: Limits,
    deadline: Instant,
    window_start: Instant,
    window_bytes: u64,
}

impl Guard {
    /// Starts the clock for one artifact.
    pub fn start(limits: Limits) -> Guard {
        let now = Instant::now();
        Guard {
            limits,
            deadline: now + limits.timeout,
            window_start: now,
            window_bytes: 0,
        }
    }

    /// A new attempt (connection): the rate window starts again; the deadline does not.
    pub fn restart_window(&mut self) {
        self.window_start = Instant::now();
        self.window_bytes = 0;
    }

    /// Awaits `fut`, failing when the deadline passes or a rate window closes too slow.
    pub async fn wait<F: Future>(&mut self, fut: F) -> Result<F::Output, LimitHit> {
        tokio::pin!(fut);
        loop {
            match tokio::time::timeout_at(self.next_check(), &mut fut).await {
                Ok(v) => return Ok(v),
                Err(_) => self.check(Instant::now())?,
            }
        }
    }

    /// Counts `n` bytes received; fails if a rate window closed below the minimum.
    pub fn received(&mut self, n: u64) -> Result<(), LimitHit> {
        self.window_bytes = self.window_bytes.saturating_add(n);
        self.check(Instant::now())
    }

    /// Sleeps `d` (a retry's backoff), failing at once if the deadline comes first.
    pub async fn sleep(&self, d: Duration) -> Result<(), LimitHit> {
        if Instant::now() + d >= self.deadline {
            return Err(LimitHit::Deadline(self.limits.timeout));
        }
        tokio::time::sleep(d).await;
        Ok(())
    }

    fn rate_on(&self) -> bool {
        self.limits.min_rate > 0 && !self.limits.rate_time.is_zero()
    }

    fn next_check(&self) -> Instant {
        if self.rate_on() {
            self.deadline.min(self.window_start + self.limits.rate_time)
        } else {
            self.deadline
        }
    }

    fn check(&mut self, now: Instant) -> Result<(), LimitHit> {
        if now >= self.deadline {
            return Err(LimitHit::Deadline(self.limits.timeout));
        }
        if !self.rate_on() || now < self.window_start + self.limits.rate_time {
            return Ok(());
        }
        let need = u128::from(self.limits.min_rate) * self.limits.rate_time.as_millis() / 1000;
        if u128::from(self.window_bytes) < need {
            return Err(LimitHit::TooSlow {
                got: self.window_bytes,
                min_rate: self.limits.min_rate,
                over: self.limits.rate_time,
            });
        }
        self.window_start = now;
        self.window_bytes = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(timeout_ms: u64, min_rate: u64, window_ms: u64) -> Limits {
        Limits {
            timeout: Duration::from_millis(timeout_ms),
            min_rate,
            rate_time: Duration::from_millis(window_ms),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_transfer_fails_at_the_end_of_the_window() {
        let mut g = Guard::start(limits(60_000, 100, 1_000));
        let start = Instant::now();
        let hit = g.wait(std::future::pending::<()>()).await.unwrap_err();
        assert_eq!(
            hit,
            LimitHit::TooSlow {
                got: 0,
                min_rate: 100,
                over: Duration::from_secs(1)
            }
        );
        assert_eq!(start.elapsed(), Duration::from_secs(1));
        assert!(!hit.is_final());
    }

    #[tokio::test(start_paused = true)]
    async fn a_steady_transfer_passes_windows_and_then_meets_the_deadline() {
        let mut g = Guard::start(limits(3_500, 100, 1_000));
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_millis(500)).await;
            g.received(60).unwrap();
            tokio::time::sleep(Duration::from_millis(500)).await;
            g.received(60).unwrap();
        }
        let hit = g.wait(std::future::pending::<()>()).await.unwrap_err();
        assert_eq!(hit, LimitHit::Deadline(Duration::from_millis(3_500)));
        assert!(hit.is_final());
    }

    #[tokio::test(start_paused = true)]
    async fn a_drip_fails_when_its_window_closes() {
        let mut g = Guard::start(limits(60_000, 100, 1_000));
        tokio::time::sleep(Duration::from_millis(600)).await;
        g.received(10).unwrap();
        tokio::time::sleep(Duration::from_millis(600)).await;
        let hit = g.received(10).unwrap_err();
        assert!(matches!(hit, LimitHit::TooSlow { got: 20, .. }), "{hit}");
        assert!(hit.to_string().contains("20 bytes in the last 1 s"), "{hit}");
    }

    #[tokio::test(start_paused = true)]
    async fn zero_min_rate_turns_the_rate_check_off_and_backoff_respects_the_deadline() {
        let mut g = Guard::start(limits(2_000, 0, 1_000));
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        g.received(0).unwrap();
        let hit = g.sleep(Duration::from_secs(1)).await.unwrap_err();
        assert_eq!(hit, LimitHit::Deadline(Duration::from_secs(2)));
        assert!(hit.to_string().contains("2 s deadline (--timeout)"), "{hit}");
    }
}
