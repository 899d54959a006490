//! The circuit breaker of [`ResilientBackend`](super::ResilientBackend): when
//! to call the server and when to fail at once. It knows nothing of backends
//! or deadlines; it is told each call's outcome.
//!
//! *Closed* (normal) until `failure_threshold` calls in a row fail; then
//! *open* for `cool_down`, refusing everything; then *half-open*, letting a
//! single probe through. The probe's success closes the breaker, its failure
//! opens it for another cool-down.

use crate::error::BackendError;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;
use tokio::time::Instant;

/// The state of a [`ResilientBackend`](super::ResilientBackend)'s circuit breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Operations go to the server.
    Closed,
    /// The server failed repeatedly; operations fail fast until the cool-down ends.
    Open,
    /// The cool-down ended; one probe operation is (or may be) in flight.
    HalfOpen,
}

#[derive(Debug, Clone, Copy)]
enum State {
    Closed,
    Open { until: Instant },
    HalfOpen { probe_in_flight: bool },
}

#[derive(Debug)]
struct Counts {
    state: State,
    consecutive_failures: u32,
}

/// The breaker of one wrapped backend.
#[derive(Debug)]
pub(super) struct Breaker {
    failure_threshold: u32,
    cool_down: Duration,
    /// std Mutex: held for a few comparisons, never across an await.
    counts: Mutex<Counts>,
}

/// The right to make one call; a probe's permit must report its outcome.
pub(super) struct Permit<'a> {
    breaker: &'a Breaker,
    probe: bool,
    done: bool,
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        // A probe whose future was dropped (the caller gave up) never reported;
        // free the half-open slot so that the next operation probes instead.
        if self.probe && !self.done {
            let mut b = self.breaker.lock();
            if let State::HalfOpen { .. } = b.state {
                b.state = State::HalfOpen {
                    probe_in_flight: false,
                };
            }
        }
    }
}

impl Breaker {
    /// A closed breaker.
    pub(super) fn new(failure_threshold: u32, cool_down: Duration) -> Self {
        Breaker {
            failure_threshold,
            cool_down,
            counts: Mutex::new(Counts {
                state: State::Closed,
                consecutive_failures: 0,
            }),
        }
    }

    /// The current state (an open breaker whose cool-down has ended reports
    /// `HalfOpen`: the next operation will probe).
    pub(super) fn state(&self) -> BreakerState {
        match self.lock().state {
            State::Closed => BreakerState::Closed,
            State::Open { until } if Instant::now() < until => BreakerState::Open,
            State::Open { .. } | State::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Counts> {
        // The counts are always consistent (no await or panic while held),
        // so a poisoned lock is safe to keep using.
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A permit for one call, or [`BackendError::CircuitOpen`] when the
    /// breaker refuses it.
    pub(super) fn admit(&self) -> Result<Permit<'_>, BackendError> {
        let mut b = self.lock();
        let probe = match b.state {
            State::Closed => false,
            State::Open { until } if Instant::now() < until => {
                return Err(BackendError::CircuitOpen)
            }
            State::Open { .. }
            | State::HalfOpen {
                probe_in_flight: false,
            } => {
                b.state = State::HalfOpen {
                    probe_in_flight: true,
                };
                true
            }
            State::HalfOpen {
                probe_in_flight: true,
            } => return Err(BackendError::CircuitOpen),
        };
        Ok(Permit {
            breaker: self,
            probe,
            done: false,
        })
    }

    /// A permit the breaker cannot refuse; its outcome still counts.
    pub(super) fn force(&self) -> Permit<'_> {
        Permit {
            breaker: self,
            probe: false,
            done: false,
        }
    }
}

impl Permit<'_> {
    /// Reports the call's outcome: a success closes the breaker, a failure
    /// counts towards opening it. `backend` names it in logs and metrics.
    pub(super) fn record(mut self, failed: bool, name: &'static str) {
        self.done = true;
        let breaker = self.breaker;
        let mut b = breaker.lock();
        if !failed {
            b.consecutive_failures = 0;
            if !matches!(b.state, State::Closed) {
                b.state = State::Closed;
                metrics::gauge!("flash_breaker_open", "backend" => name).set(0.0);
                tracing::warn!(
                    backend = name,
                    "cache circuit breaker closed: backend recovered"
                );
            }
            return;
        }
        metrics::counter!("flash_backend_errors_total", "backend" => name).increment(1);
        b.consecutive_failures = b.consecutive_failures.saturating_add(1);
        let trip = match b.state {
            State::Closed => b.consecutive_failures >= breaker.failure_threshold,
            // A failed probe (or a call admitted before the breaker opened and
            // finishing late) keeps the breaker open for a fresh cool-down.
            State::HalfOpen { .. } => true,
            State::Open { .. } => false,
        };
        if trip {
            // One line per outage: re-opening after a failed probe (every
            // cool-down while the server stays down) is not news.
            let was_closed = matches!(b.state, State::Closed);
            b.state = State::Open {
                until: Instant::now() + breaker.cool_down,
            };
            metrics::gauge!("flash_breaker_open", "backend" => name).set(1.0);
            if was_closed {
                tracing::warn!(
                    backend = name,
                    failures = b.consecutive_failures,
                    cool_down = ?breaker.cool_down,
                    "cache circuit breaker opened"
                );
            } else {
                tracing::debug!(
                    backend = name,
                    "cache circuit breaker probe failed; open again"
                );
            }
        }
    }
}
