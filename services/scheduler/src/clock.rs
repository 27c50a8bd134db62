//! Time as a dependency: the real clock in production, a hand-driven one in tests.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use tokio::sync::watch;

/// A source of "now" and a way to wait for a later "now".
pub trait Clock: Send + Sync + 'static {
    /// The current instant.
    fn now(&self) -> DateTime<Utc>;
    /// Resolves once `now() >= at`.
    fn sleep_until(&self, at: DateTime<Utc>) -> Pin<Box<dyn Future<Output = ()> + Send + '_>>;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }

    fn sleep_until(&self, at: DateTime<Utc>) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(async move {
            // Sleep on the monotonic clock, then re-check the wall clock (it may have stepped).
            loop {
                let left = at - Utc::now();
                match left.to_std() {
                    Ok(d) if !d.is_zero() => tokio::time::sleep(d).await,
                    _ => return,
                }
            }
        })
    }
}

/// The system clock running `speed` times faster from `anchor` on (for tests and demos that
/// need hundreds of slots in seconds). Processes given the same anchor and speed agree on the
/// time, so several schedulers can race over the same slots.
#[derive(Debug, Clone, Copy)]
pub struct WarpClock {
    anchor: DateTime<Utc>,
    speed: f64,
}

impl WarpClock {
    /// Virtual time equals real time at `anchor` and runs `speed` times faster (speed ≥ 1).
    pub fn new(anchor: DateTime<Utc>, speed: f64) -> WarpClock {
        WarpClock {
            anchor,
            speed: if speed.is_finite() {
                speed.max(1.0)
            } else {
                1.0
            },
        }
    }
}

impl Clock for WarpClock {
    fn now(&self) -> DateTime<Utc> {
        let real = (Utc::now() - self.anchor).num_microseconds().unwrap_or(0) as f64;
        self.anchor + chrono::Duration::microseconds((real * self.speed) as i64)
    }

    fn sleep_until(&self, at: DateTime<Utc>) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(async move {
            loop {
                let left = (at - self.now()).num_microseconds().unwrap_or(i64::MAX);
                if left <= 0 {
                    return;
                }
                let real = (left as f64 / self.speed).ceil() as u64;
                tokio::time::sleep(std::time::Duration::from_micros(real.max(1))).await;
            }
        })
    }
}

/// A clock that only moves when a test moves it.
#[derive(Debug, Clone)]
pub struct TestClock {
    now: Arc<Mutex<DateTime<Utc>>>,
    tick: watch::Sender<DateTime<Utc>>,
}

impl TestClock {
    /// A clock standing at `start`.
    pub fn new(start: DateTime<Utc>) -> TestClock {
        let (tick, _) = watch::channel(start);
        TestClock {
            now: Arc::new(Mutex::new(start)),
            tick,
        }
    }

    /// Moves the clock to `to` (never backwards) and wakes sleepers that are due.
    pub fn set(&self, to: DateTime<Utc>) {
        let now = {
            let mut now = self.now.lock().unwrap_or_else(|p| p.into_inner());
            if to > *now {
                *now = to;
            }
            *now
        };
        self.tick.send_replace(now);
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: chrono::Duration) {
        self.set(self.now() + by);
    }
}

impl Clock for TestClock {
    fn now(&self) -> DateTime<Utc> {
        *self.now.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn sleep_until(&self, at: DateTime<Utc>) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        let mut rx = self.tick.subscribe();
        Box::pin(async move {
            // The sender lives in `self`, so `wait_for` only ends when the time has come.
            let _ = rx.wait_for(|now| *now >= at).await;
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn test_clock_wakes_sleepers_only_when_moved_past_their_instant() {
        let start: DateTime<Utc> = "2026-01-01T00:00:00Z".parse().unwrap();
        let clock = TestClock::new(start);
        let c2 = clock.clone();
        let waiter = tokio::spawn(async move {
            c2.sleep_until(start + chrono::Duration::seconds(10)).await;
            c2.now()
        });
        clock.advance(chrono::Duration::seconds(5));
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        clock.advance(chrono::Duration::seconds(5));
        let woke_at = tokio::time::timeout(Duration::from_secs(5), waiter).await;
        assert_eq!(
            woke_at.ok().and_then(|r| r.ok()),
            Some(start + chrono::Duration::seconds(10))
        );
        clock.set(start);
        assert_eq!(
            clock.now(),
            start + chrono::Duration::seconds(10),
            "never backwards"
        );
    }
}
