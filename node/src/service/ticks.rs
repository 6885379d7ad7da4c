//! The clock of the node's periodic tasks (pulse, leader balancing, cross-shard recovery).

use std::time::Duration;

use tokio::sync::watch;
use tokio::time::{Instant, Interval, MissedTickBehavior};

/// Ticks every `interval`, the first one interval after the start (a late tick is delayed,
/// never bunched), until `stop` changes or its sender is dropped.
#[derive(Debug)]
pub struct Ticks {
    ticker: Interval,
    stop: watch::Receiver<bool>,
}

impl Ticks {
    /// Ticks every `interval` (above zero) until `stop` changes.
    #[must_use]
    pub fn new(interval: Duration, stop: watch::Receiver<bool>) -> Self {
        let mut ticker = tokio::time::interval_at(Instant::now() + interval, interval);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Self { ticker, stop }
    }

    /// Waits for the next tick: `true`, or `false` once the task must stop.
    pub async fn next(&mut self) -> bool {
        tokio::select! {
            _ = self.ticker.tick() => true,
            _ = self.stop.changed() => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn ticks_until_stopped() {
        let interval = Duration::from_millis(20);
        let (stop, stopped) = watch::channel(false);
        let mut ticks = Ticks::new(interval, stopped);
        let start = Instant::now();
        assert!(ticks.next().await);
        assert!(start.elapsed() >= interval, "the first tick comes after one interval");
        assert!(ticks.next().await);
        assert!(start.elapsed() >= 2 * interval);
        stop.send(true).unwrap();
        assert!(!ticks.next().await, "a stop ends the ticks");
    }
}
