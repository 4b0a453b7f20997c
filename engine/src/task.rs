//! Named tasks that are aborted when their handle is dropped, so nothing outlives its owner.

use std::future::Future;
use std::sync::OnceLock;

use tokio::runtime::Handle;
use tokio::task::JoinHandle;

/// Where jobs' tasks run, when set (see [`set_job_runtime`]).
static JOB_RUNTIME: OnceLock<Handle> = OnceLock::new();

/// Runs every job's tasks on `runtime` from now on. The server gives jobs their own runtime, so
/// that a job busy with a large batch never holds up a client's statement on the same worker
/// threads. Without it, jobs run on the runtime that starts them. Returns false if one was set.
pub fn set_job_runtime(runtime: Handle) -> bool {
    JOB_RUNTIME.set(runtime).is_ok()
}

/// Spawns `fut`, one of a job's tasks, on the jobs' runtime (see [`set_job_runtime`]).
#[allow(clippy::disallowed_methods)]
pub fn spawn_job_task<F>(name: impl Into<String>, fut: F) -> TaskHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handle = match JOB_RUNTIME.get() {
        Some(runtime) => runtime.spawn(fut),
        None => tokio::spawn(fut),
    };
    TaskHandle {
        name: name.into(),
        handle: Some(handle),
    }
}

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
