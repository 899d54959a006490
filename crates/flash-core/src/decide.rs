//! The read decision table: what to do with a value found in the cache, given
//! its class's invalidation mode, its age, its dynamic version and the stale
//! marker. A pure function (no I/O, no clock, no async), so the whole table is
//! tested here, row by row.

use crate::class::Invalidation;
use std::time::Duration;

/// What to do with a value found in the cache (the decision table).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Serve it.
    Serve,
    /// Try the write lock: the winner refreshes, the others serve the value.
    LockRefresh,
    /// Read the database and overwrite.
    Refetch,
}

/// The read decision for a value found in the cache. The rules apply in
/// order; the first that matches decides:
///
/// 1. `allowtime` is set and the value is younger than it: serve.
/// 2. The class's dynamic version moved on: refetch for UNSET, else refresh
///    under the write lock.
/// 3. DYNAMIC: refresh under the lock if the stale marker is there, else serve.
/// 4. OFF with `allowtime` passed: refresh under the lock.
/// 5. No `allowtime`: serve.
/// 6. UNSET with `allowtime` passed: refetch.
pub fn decide(
    invalidation: Invalidation,
    allowtime: Option<Duration>,
    age: Duration,
    version_changed: bool,
    stale_marker: bool,
) -> Action {
    // 1. allowtime set and the value younger than it.
    if allowtime.is_some_and(|a| age < a) {
        return Action::Serve;
    }
    // 2. the class's dynamic version moved on.
    if version_changed {
        return match invalidation {
            Invalidation::Off | Invalidation::Dynamic => Action::LockRefresh,
            Invalidation::Unset => Action::Refetch,
        };
    }
    // 3. DYNAMIC: the stale marker decides.
    if invalidation == Invalidation::Dynamic {
        return if stale_marker {
            Action::LockRefresh
        } else {
            Action::Serve
        };
    }
    // 4. OFF with allowtime passed.
    if allowtime.is_some() && invalidation == Invalidation::Off {
        return Action::LockRefresh;
    }
    // 5. no allowtime.
    if allowtime.is_none() {
        return Action::Serve;
    }
    // 6. UNSET with allowtime passed.
    Action::Refetch
}

#[cfg(test)]
mod tests {
    use super::*;
    use Action::*;
    use Invalidation::*;

    const S: Duration = Duration::from_secs(1);
    const A: Option<Duration> = Some(Duration::from_secs(10));

    #[test]
    fn row1_young_value_within_allowtime_is_served_whatever_else() {
        for inv in [Off, Unset, Dynamic] {
            assert_eq!(decide(inv, A, S, true, true), Serve);
        }
    }
    #[test]
    fn row2_version_change() {
        assert_eq!(decide(Off, None, S, true, false), LockRefresh);
        assert_eq!(decide(Dynamic, None, S, true, false), LockRefresh);
        assert_eq!(decide(Unset, None, S, true, false), Refetch);
        assert_eq!(decide(Unset, A, 20 * S, true, false), Refetch);
    }
    #[test]
    fn row3_dynamic_marker() {
        assert_eq!(decide(Dynamic, None, S, false, false), Serve);
        assert_eq!(decide(Dynamic, None, S, false, true), LockRefresh);
        assert_eq!(decide(Dynamic, A, 20 * S, false, true), LockRefresh);
    }
    #[test]
    fn row4_off_with_allowtime_passed() {
        assert_eq!(decide(Off, A, 20 * S, false, false), LockRefresh);
    }
    #[test]
    fn row5_no_allowtime_serves() {
        assert_eq!(decide(Off, None, S, false, false), Serve);
        assert_eq!(decide(Unset, None, S, false, false), Serve);
    }
    #[test]
    fn row6_unset_allowtime_passed_refetches() {
        assert_eq!(decide(Unset, A, 20 * S, false, false), Refetch);
    }
}
