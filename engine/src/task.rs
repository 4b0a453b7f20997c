//! Named tasks that are aborted when their handle is dropped, so nothing outlives its owner.

use std::future::Future;

use tokio::task::JoinHandle;

/// A spawned task; dropping the handle aborts the task unless it was detached.
#[derive(Debug)]
pub struct TaskHandle<T> {
    name: String,
    handle: Option<JoinHandle<T>>,
}

impl<T> TaskHandle<T> {
    /// The name given at spawn time.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Waits for the task; `None` if it panicked or was aborted.
    pub async fn join(mut self) -> Option<T> {
        match self.handle.take() {
            Some(handle) => handle.await.ok(),
            None => None,
        }
    }

    /// Lets the task run on after this handle is gone (for tasks that end by themselves, such as
    /// one client connection).
    pub fn detach(mut self) {
        self.handle.take();
    }
}

impl<T> Drop for TaskHandle<T> {
    fn drop(&mut self) {
        if let Some(handle) = &self.handle {
            handle.abort();
        }
    }
}

/// Spawns `fut` on the current runtime under `name`.
#[allow(clippy::disallowed_methods)]
pub fn spawn_named<F>(name: impl Into<String>, fut: F) -> TaskHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    TaskHandle {
        name: name.into(),
        handle: Some(tokio::spawn(fut)),
    }
}
