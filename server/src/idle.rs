//! `idle_in_transaction_session_timeout`: a connection left idle inside a transaction block for
//! longer than the setting is ended, as in Postgres, with a FATAL `25P03`.
//!
//! The wire handlers arm the timer when they hand the connection back to the client inside a
//! block (after ReadyForQuery: the end of a simple query, a Sync) and disarm it when the next
//! message arrives. pgwire owns the socket and is only waiting to read when the timer fires, so
//! the timer writes the error through the watch's second descriptor of the socket and shuts the
//! socket down; pgwire's read then ends and the connection closes.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use parking_lot::Mutex;
use pgwire::error::ErrorInfo;
use pgwire::messages::PgWireBackendMessage;
use rivulet_engine::task::{TaskHandle, spawn_named};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::error::sqlstate;
use crate::interrupt::ClientWatch;

/// Where the timer stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Off,
    Armed(Instant),
    /// The connection was ended; every later message is refused.
    Fired,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    changed: Notify,
}

/// One connection's idle-in-transaction timer; its task stops when the timer is dropped.
pub struct IdleTimer {
    shared: Arc<Shared>,
    _task: TaskHandle<()>,
}

impl IdleTimer {
    /// A timer that ends the connection watched by `watch`.
    pub fn new(watch: Arc<ClientWatch>) -> Self {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::Off),
            changed: Notify::new(),
        });
        let task = spawn_named("idle-in-transaction", run(Arc::clone(&shared), watch));
        Self {
            shared,
            _task: task,
        }
    }

    /// The client is idle from now on; `timeout` is the session's setting if it is in a block.
    pub fn arm(&self, timeout: Option<Duration>) {
        let mut state = self.shared.state.lock();
        if *state != State::Fired {
            *state = match timeout {
                Some(t) => State::Armed(Instant::now() + t),
                None => State::Off,
            };
            self.shared.changed.notify_one();
        }
    }

    /// A message arrived. `false` if the connection was already ended for being idle.
    pub fn disarm(&self) -> bool {
        let mut state = self.shared.state.lock();
        if *state == State::Fired {
            return false;
        }
        *state = State::Off;
        self.shared.changed.notify_one();
        true
    }
}

/// The error the client gets.
pub fn error() -> ErrorInfo {
    ErrorInfo::new(
        "FATAL".into(),
        sqlstate::IDLE_IN_TRANSACTION_SESSION_TIMEOUT.into(),
        "terminating connection due to idle-in-transaction timeout".into(),
    )
}

async fn run(shared: Arc<Shared>, watch: Arc<ClientWatch>) {
    loop {
        let armed = *shared.state.lock();
        match armed {
            State::Fired => return,
            State::Off => shared.changed.notified().await,
            State::Armed(deadline) => {
                tokio::select! {
                    () = tokio::time::sleep_until(deadline) => {
                        let mut state = shared.state.lock();
                        if *state != State::Armed(deadline) {
                            continue;
                        }
                        *state = State::Fired;
                        drop(state);
                        let mut bytes = BytesMut::new();
                        let message = PgWireBackendMessage::ErrorResponse(error().into());
                        if message.encode(&mut bytes).is_ok() {
                            watch.terminate(&bytes);
                        }
                        return;
                    }
                    () = shared.changed.notified() => {}
                }
            }
        }
    }
}
