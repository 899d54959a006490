//! Ties a background task to the value that owns it: the task is aborted when
//! its [`TaskGuard`] is dropped, so a task lives exactly as long as the field
//! that holds its guard.

use tokio::task::JoinHandle;

/// Aborts its task when dropped.
#[derive(Debug)]
pub(crate) struct TaskGuard(JoinHandle<()>);

impl TaskGuard {
    /// Spawns `task` on the current runtime, owned by the returned guard.
    pub(crate) fn spawn(task: impl std::future::Future<Output = ()> + Send + 'static) -> Self {
        TaskGuard(tokio::spawn(task))
    }
}

impl Drop for TaskGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}
