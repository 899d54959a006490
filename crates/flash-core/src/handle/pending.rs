//! Fills running in the background, counted so that a caller (a test, a
//! bench, a shutdown) can wait until every one has landed or given up.

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use tokio::sync::Notify;

/// The background fills of one handle. Cloning shares the count.
#[derive(Clone, Default)]
pub(super) struct Pending(Arc<Inner>);

#[derive(Default)]
struct Inner {
    running: AtomicUsize,
    idle: Notify,
}

/// One running fill; dropping it (done, failed or cancelled) ends it.
pub(super) struct Running(Arc<Inner>);

impl Drop for Running {
    fn drop(&mut self) {
        if self.0.running.fetch_sub(1, SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

impl Pending {
    /// Counts a fill as running until the returned guard is dropped.
    pub(super) fn start(&self) -> Running {
        self.0.running.fetch_add(1, SeqCst);
        Running(self.0.clone())
    }

    /// Returns once no fill is running (at once when none is).
    pub(super) async fn settled(&self) {
        loop {
            let idle = self.0.idle.notified();
            tokio::pin!(idle);
            // Registered before the check, so a fill that ends in between
            // still wakes this waiter.
            idle.as_mut().enable();
            if self.0.running.load(SeqCst) == 0 {
                return;
            }
            idle.await;
        }
    }
}
