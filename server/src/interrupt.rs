//! Stopping a running statement: a cancel request, `statement_timeout`, or its client gone.
//!
//! The wire layer never drops a statement half-way: it fires the statement's [`Interrupt`], and
//! the statement stops at the next point where stopping is safe (DataFusion's execution, waiting
//! for FLUSH), which [`Interrupt::run`] marks. A commit is therefore never cut in half, and the
//! statement fails like any other: inside a block, the block is aborted, as in Postgres.
//!
//! Timeouts are Postgres' settings with Postgres' syntax (`'1s'`, `1500`, `'2min'`; a bare number
//! is milliseconds, 0 is off): `statement_timeout` bounds each statement from its start, and
//! `idle_in_transaction_session_timeout` ends a connection left idle inside a block.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::error::{SqlError, sqlstate};

/// Why a statement was stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// A cancel request with the connection's key.
    Cancel,
    /// `statement_timeout` passed.
    Timeout,
    /// The client closed its connection.
    ClientGone,
}

impl Reason {
    /// The error the statement fails with.
    pub fn error(self) -> SqlError {
        match self {
            Reason::Cancel => SqlError::new(
                sqlstate::QUERY_CANCELED,
                "canceling statement due to user request",
            ),
            Reason::Timeout => SqlError::new(
                sqlstate::QUERY_CANCELED,
                "canceling statement due to statement timeout",
            ),
            Reason::ClientGone => {
                SqlError::new(sqlstate::CONNECTION_FAILURE, "connection to client lost")
            }
        }
    }
}

/// The stop signal of the statements of one client message (a simple query's statements share
/// it), and the running statement's deadline.
#[derive(Debug, Clone, Default)]
pub struct Interrupt {
    token: CancellationToken,
    reason: Arc<Mutex<Option<Reason>>>,
    deadline: Option<Instant>,
}

impl Interrupt {
    /// A signal nothing has fired yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Stops the statements that share this signal; the first reason given is the one reported.
    pub fn fire(&self, reason: Reason) {
        self.reason.lock().get_or_insert(reason);
        self.token.cancel();
    }

    /// The same signal, with a statement's deadline (`None`: no timeout).
    pub fn with_deadline(&self, timeout: Option<Duration>) -> Self {
        Self {
            token: self.token.clone(),
            reason: Arc::clone(&self.reason),
            deadline: timeout.map(|t| Instant::now() + t),
        }
    }

    /// Runs `work`, a part of a statement that may be abandoned, until it ends or the statement
    /// is stopped.
    pub async fn run<T>(
        &self,
        work: impl Future<Output = Result<T, SqlError>>,
    ) -> Result<T, SqlError> {
        if self.token.is_cancelled() {
            return Err(self.error());
        }
        let deadline = async {
            match self.deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            _ = self.token.cancelled() => Err(self.error()),
            _ = deadline => Err(Reason::Timeout.error()),
            result = work => result,
        }
    }

    fn error(&self) -> SqlError {
        self.reason.lock().unwrap_or(Reason::Cancel).error()
    }
}

/// Watches a client's socket, through a second descriptor of it, for the client closing its end,
/// as Postgres' `client_connection_check_interval` does (`POLLRDHUP`): a query whose client is gone
/// is stopped at once instead of running to its end.
#[derive(Debug)]
pub struct ClientWatch {
    socket: Option<tokio::net::TcpStream>,
    /// The same socket again, for [`Self::terminate`].
    raw: Option<std::net::TcpStream>,
}

impl ClientWatch {
    /// Watches `socket`'s peer (never reads from it).
    pub fn new(socket: &tokio::net::TcpStream) -> Self {
        use std::os::fd::AsFd;
        let raw = socket
            .as_fd()
            .try_clone_to_owned()
            .ok()
            .map(std::net::TcpStream::from);
        let socket = raw
            .as_ref()
            .and_then(|s| s.try_clone().ok())
            .and_then(|s| tokio::net::TcpStream::from_std(s).ok());
        Self { socket, raw }
    }

    /// Sends `message` (an encoded FATAL error) and shuts the connection down, while the
    /// connection's task is waiting for the client: its read then ends.
    pub fn terminate(&self, message: &[u8]) {
        use std::io::Write;
        if let Some(raw) = &self.raw {
            // Non-blocking like the socket it shares; an idle connection's buffer has room.
            let _ = (&*raw).write_all(message);
            let _ = raw.shutdown(std::net::Shutdown::Both);
        }
    }

    /// Resolves once the client has closed its end of the connection (or the socket failed).
    pub async fn closed(&self) {
        use tokio::io::Interest;
        let Some(socket) = &self.socket else {
            return std::future::pending().await;
        };
        loop {
            match socket.ready(Interest::READABLE).await {
                Err(_) => return,
                Ok(ready) if ready.is_read_closed() => return,
                // The client sent more messages (pipelining): forget this readiness and wait for
                // the next event, which its hang-up would be.
                Ok(_) => {
                    let _ = socket.try_io(Interest::READABLE, || {
                        Err::<(), _>(std::io::ErrorKind::WouldBlock.into())
                    });
                }
            }
        }
    }
}

/// Parses a timeout setting as Postgres does: a number of milliseconds, or a number with one of
/// the units `us`, `ms`, `s`, `min`, `h`, `d`. `None` if it is not one, or negative.
pub fn parse_timeout(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let ms_per_unit = match unit.trim() {
        "" | "ms" => 1.0,
        "us" => 0.001,
        "s" => 1_000.0,
        "min" => 60_000.0,
        "h" => 3_600_000.0,
        "d" => 86_400_000.0,
        _ => return None,
    };
    let ms = (number * ms_per_unit).round();
    // Postgres' limit for these settings: INT_MAX milliseconds.
    if !(0.0..=f64::from(i32::MAX)).contains(&ms) {
        return None;
    }
    Some(Duration::from_millis(ms as u64))
}

/// A timeout as `SHOW` prints it: in the largest unit that divides it (`1500ms`, `2min`), `0` for off.
pub fn format_timeout(timeout: Duration) -> String {
    let ms = timeout.as_millis();
    if ms == 0 {
        return "0".into();
    }
    for (unit, size) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("min", 60_000),
        ("s", 1_000),
    ] {
        if ms.is_multiple_of(size) {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

/// A timeout setting's value, `None` when it is off (0) or unreadable.
pub fn timeout_setting(value: Option<&String>) -> Option<Duration> {
    value
        .and_then(|v| parse_timeout(v))
        .filter(|d| !d.is_zero())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_read_and_print_as_in_postgres() {
        let ms = |t: &str| parse_timeout(t).map(|d| d.as_millis());
        assert_eq!(ms("1s"), Some(1000));
        assert_eq!(ms("1500"), Some(1500));
        assert_eq!(ms(" 2 min "), Some(120_000));
        assert_eq!(ms("1.5s"), Some(1500));
        assert_eq!(ms("0"), Some(0));
        assert_eq!(ms("-1"), None);
        assert_eq!(ms("1 fortnight"), None);
        assert_eq!(ms("abc"), None);
        assert_eq!(format_timeout(Duration::from_millis(1000)), "1s");
        assert_eq!(format_timeout(Duration::from_millis(1500)), "1500ms");
        assert_eq!(format_timeout(Duration::from_millis(120_000)), "2min");
        assert_eq!(format_timeout(Duration::ZERO), "0");
    }
}
