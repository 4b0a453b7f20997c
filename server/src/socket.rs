//! One client socket's message loop: pgwire's `process_socket`, plus a check pgwire lacks.
//!
//! pgwire decodes the strings of frontend messages lossily, so invalid UTF-8 in a query would
//! silently become U+FFFD. Postgres refuses it instead (`22021`, "invalid byte sequence for
//! encoding "UTF8": 0xff") and the connection stays usable. So the socket is read through
//! [`Checked`], which frames the byte stream itself and holds back a message whose strings are not
//! UTF-8 (a query, a statement or portal name); the loop answers it with the error in its place in
//! the stream (after the messages before it, before those after it), as pgwire answers any error:
//! ReadyForQuery after a simple query, discard-until-Sync in the extended protocol. Framing that
//! makes no sense (a length out of range) is handed to pgwire untouched, which refuses it as before.
//! The same framing checks that a message holds the fields it announces, where pgwire's decoder
//! would panic on a short one (Parse, Bind, Execute, Describe, Close, and SCRAM's
//! SASLInitialResponse, which ends the connection as in Postgres): `08P01`.
//! TLS is not offered (SSLRequest and GSSENCRequest are refused), as with pgwire's loop before.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use futures::{SinkExt, StreamExt};
use parking_lot::Mutex;
use pgwire::api::{
    ClientInfo, DefaultClient, ErrorHandler, PgWireConnectionState, PgWireServerHandlers,
};
use pgwire::messages::response::{GssEncResponse, SslResponse};
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage, SslNegotiationMetaMessage};
use pgwire::tokio::server::{PgWireMessageServerCodec, process_error, process_message};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio_util::codec::Framed;

use crate::error::{SqlError, sqlstate};
use crate::wire::Connection;

/// How long a client has to finish startup (pgwire's limit).
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

/// Postgres' limit on a startup packet.
const MAX_STARTUP_PACKET: usize = 10_000;

/// pgwire's limit on any other message.
const MAX_MESSAGE: usize = 1 << 30;

/// Serves one client socket with `handlers` until either side closes it.
pub async fn serve(tcp: TcpStream, handlers: Arc<Connection>) -> io::Result<()> {
    let addr = tcp.peer_addr()?;
    let refused = Arc::new(Refused::default());
    let stream = Checked::new(tcp, Arc::clone(&refused), handlers.uses_scram());
    let mut socket = Framed::new(
        stream,
        PgWireMessageServerCodec::new(DefaultClient::new(addr, false)),
    );
    socket.set_state(PgWireConnectionState::AwaitingSslRequest);
    let startup = handlers.startup_handler();
    let simple = handlers.simple_query_handler();
    let extended_handler = handlers.extended_query_handler();
    let copy = handlers.copy_handler();
    let cancel = handlers.cancel_handler();
    let errors = handlers.error_handler();
    let deadline = tokio::time::sleep(STARTUP_TIMEOUT);
    tokio::pin!(deadline);
    loop {
        let starting = matches!(
            socket.state(),
            PgWireConnectionState::AwaitingSslRequest
                | PgWireConnectionState::AwaitingStartup
                | PgWireConnectionState::AuthenticationInProgress
        );
        let message = tokio::select! {
            biased;
            () = refused.notify.notified() => {
                let Some(error) = refused.error.lock().take() else { continue };
                // After an extended-protocol error, Postgres discards messages until Sync.
                if error.fatal {
                    // As Postgres, which ends a connection whose authentication is malformed.
                    process_error(&mut socket, error.error.into(), false).await?;
                    return Ok(());
                }
                if !matches!(socket.state(), PgWireConnectionState::AwaitingSync) {
                    let extended = error.extended;
                    handlers.fail_block().await;
                    process_error(&mut socket, error.error.into(), extended).await?;
                }
                continue;
            }
            _ = &mut deadline, if starting => return Ok(()),
            message = socket.next() => message,
        };
        let message = match message {
            Some(Ok(m)) => m,
            _ => return Ok(()),
        };
        let message = match message {
            PgWireFrontendMessage::SslNegotiation(negotiation) => {
                match negotiation {
                    SslNegotiationMetaMessage::PostgresSsl(_) => {
                        socket
                            .send(PgWireBackendMessage::SslResponse(SslResponse::Refuse))
                            .await?;
                    }
                    SslNegotiationMetaMessage::PostgresGss(_) => {
                        socket
                            .send(PgWireBackendMessage::GssEncResponse(GssEncResponse::Refuse))
                            .await?;
                    }
                    // Not a negotiation: the startup (or cancel) packet comes next.
                    _ => socket.set_state(PgWireConnectionState::AwaitingStartup),
                }
                continue;
            }
            // The client is leaving; some (asyncpg) wait for the server to close the socket.
            PgWireFrontendMessage::Terminate(_) => return Ok(()),
            other => other,
        };
        let extended = match socket.state() {
            PgWireConnectionState::CopyInProgress(extended) => extended,
            _ => message.is_extended_query(),
        };
        if let Err(mut e) = process_message(
            message,
            &mut socket,
            Arc::clone(&startup),
            Arc::clone(&simple),
            Arc::clone(&extended_handler),
            Arc::clone(&copy),
            Arc::clone(&cancel),
        )
        .await
        {
            errors.on_error(&socket, &mut e);
            process_error(&mut socket, e, extended).await?;
        }
    }
}

/// A message [`Checked`] held back, with the error that answers it.
#[derive(Debug)]
struct RefusedMessage {
    error: SqlError,
    /// Whether it was an extended-protocol message.
    extended: bool,
    /// The connection ends after the error (a malformed authentication message).
    fatal: bool,
}

/// The slot through which [`Checked`] hands a refused message to the loop.
#[derive(Debug, Default)]
struct Refused {
    error: Mutex<Option<RefusedMessage>>,
    notify: Notify,
}

/// Where the framing stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Untyped packets: SSLRequest, GSSENCRequest, then the startup or cancel packet.
    Startup,
    /// Typed messages.
    Typed,
    /// Framing gave up (nonsense lengths, a cancel packet): bytes pass through to pgwire.
    Raw,
}

/// The client's socket, read a whole message at a time so that each can be checked before
/// pgwire sees it.
struct Checked {
    inner: TcpStream,
    /// Bytes read from the socket, not yet handed on.
    buffer: BytesMut,
    /// How many leading bytes of `buffer` are checked and ready to hand on.
    ready: usize,
    phase: Phase,
    refused: Arc<Refused>,
    eof: bool,
    /// SCRAM's first password message (SASLInitialResponse) has not come yet.
    sasl_initial: bool,
}

impl Checked {
    /// `scram`: clients authenticate with SCRAM, whose first password message is checked.
    fn new(inner: TcpStream, refused: Arc<Refused>, scram: bool) -> Self {
        Self {
            inner,
            buffer: BytesMut::with_capacity(8192),
            ready: 0,
            phase: Phase::Startup,
            refused,
            eof: false,
            sasl_initial: scram,
        }
    }

    /// Checks the complete messages after the ready bytes, until one is incomplete or refused.
    fn check(&mut self) {
        loop {
            if self.phase == Phase::Raw {
                self.ready = self.buffer.len();
                return;
            }
            let rest = &self.buffer[self.ready..];
            let Some(frame) = self.frame(rest) else {
                return;
            };
            let Some(end) = frame else {
                // Not a frame we can make sense of: pgwire decides.
                self.phase = Phase::Raw;
                continue;
            };
            let message = &rest[..end];
            if self.phase == Phase::Startup {
                match message
                    .get(4..8)
                    .map(|c| i32::from_be_bytes([c[0], c[1], c[2], c[3]]))
                {
                    // SSLRequest and GSSENCRequest: another untyped packet follows.
                    Some(80_877_103) | Some(80_877_104) => {}
                    Some(80_877_102) | None => self.phase = Phase::Raw,
                    Some(_) => self.phase = Phase::Typed,
                }
                self.ready += end;
                continue;
            }
            let tag = message.first().copied().unwrap_or_default();
            let sasl = tag == b'p' && std::mem::take(&mut self.sasl_initial);
            let invalid = if sasl {
                invalid_sasl_initial(message)
            } else {
                invalid_strings(message)
            };
            if let Some(error) = invalid {
                if self.ready > 0 {
                    // The messages before it go first; this one is refused once they are read.
                    self.sasl_initial |= sasl;
                    return;
                }
                self.buffer.advance(end);
                let extended = message_is_extended(tag);
                *self.refused.error.lock() = Some(RefusedMessage {
                    error,
                    extended,
                    fatal: sasl,
                });
                self.refused.notify.notify_one();
                return;
            }
            self.ready += end;
        }
    }

    /// The length of the message at the start of `rest`: `None` if incomplete, `Some(None)` if
    /// its length is out of range.
    fn frame(&self, rest: &[u8]) -> Option<Option<usize>> {
        let (offset, limit) = match self.phase {
            Phase::Startup => (0, MAX_STARTUP_PACKET),
            _ => (1, MAX_MESSAGE),
        };
        let len = rest.get(offset..offset + 4)?;
        let len = i32::from_be_bytes([len[0], len[1], len[2], len[3]]);
        let min = if offset == 0 { 8 } else { 4 };
        let Ok(len) = usize::try_from(len) else {
            return Some(None);
        };
        if len < min || len > limit {
            return Some(None);
        }
        let end = offset + len;
        if rest.len() < end {
            return None;
        }
        Some(Some(end))
    }

    /// Whether a refused message is waiting for the loop.
    fn refusing(&self) -> bool {
        self.refused.error.lock().is_some()
    }
}

/// Extended-protocol messages (whose errors are followed by discard-until-Sync).
fn message_is_extended(tag: u8) -> bool {
    matches!(tag, b'P' | b'B' | b'D' | b'C' | b'E' | b'H' | b'S')
}

/// `22021` if a string field of `message` (tag, length, body) is not UTF-8.
fn invalid_strings(message: &[u8]) -> Option<SqlError> {
    let body = message.get(5..)?;
    // The strings each message starts with: a query; a statement's name and text; a portal's
    // and a statement's names; a kind byte and a name; a portal name.
    let (skip, strings) = match message.first()? {
        b'Q' => (0, 1),
        b'P' | b'B' => (0, 2),
        b'D' | b'C' => (1, 1),
        b'E' => (0, 1),
        _ => return None,
    };
    let Some(mut rest) = body.get(skip..) else {
        return Some(insufficient_data());
    };
    for _ in 0..strings {
        let Some(nul) = rest.iter().position(|b| *b == 0) else {
            return Some(insufficient_data());
        };
        if let Err(e) = std::str::from_utf8(&rest[..nul]) {
            return Some(invalid_byte_sequence(&rest[e.valid_up_to()..nul]));
        }
        rest = &rest[nul + 1..];
    }
    // What follows the strings must be there: pgwire's decoder panics on a message shorter than
    // its fields (Postgres answers 08P01).
    let enough = match message.first() {
        Some(b'B') => return invalid_text_parameters(rest),
        // Parse: the parameter type count (pgwire reads it unsigned), then that many type OIDs.
        Some(b'P') => {
            let n = rest
                .get(..2)
                .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])));
            n.is_some_and(|n| rest.len() >= 2 + 4 * n)
        }
        // Execute: the row limit.
        Some(b'E') => rest.len() >= 4,
        _ => true,
    };
    (!enough).then(insufficient_data)
}

/// `08P01` if `message`, the answer to SCRAM's first challenge, is not a SASLInitialResponse: a
/// mechanism name, then a length and that many bytes (-1: none). pgwire's decoder panics on one
/// shorter than it says.
fn invalid_sasl_initial(message: &[u8]) -> Option<SqlError> {
    let malformed = || {
        Some(SqlError::new(
            sqlstate::PROTOCOL_VIOLATION,
            "malformed SASL message",
        ))
    };
    let body = message.get(5..)?;
    let Some(nul) = body.iter().position(|b| *b == 0) else {
        return malformed();
    };
    let rest = &body[nul + 1..];
    let Some(len) = rest.get(..4).and_then(|b| b.try_into().ok()) else {
        return malformed();
    };
    match i32::from_be_bytes(len) {
        -1 => None,
        n => match usize::try_from(n) {
            Ok(n) if rest.len() - 4 >= n => None,
            _ => malformed(),
        },
    }
}

fn insufficient_data() -> SqlError {
    SqlError::new(
        sqlstate::PROTOCOL_VIOLATION,
        "insufficient data left in message",
    )
}

/// A Bind's parameters (after its portal and statement names): `22021` if a text-format value
/// is not UTF-8, as Postgres checks them (binary values are the types' business), and `08P01` if
/// the message is shorter than what it announces (pgwire's decoder would panic on it).
fn invalid_text_parameters(rest: &[u8]) -> Option<SqlError> {
    let short = || Some(insufficient_data());
    let int16 = |at: usize| -> Option<i16> {
        Some(i16::from_be_bytes([*rest.get(at)?, *rest.get(at + 1)?]))
    };
    // Counts are read unsigned, as pgwire's decoder reads them.
    let count = |at: usize| int16(at).map(|n| usize::from(n as u16));
    let Some(formats) = count(0) else {
        return short();
    };
    let Some(codes) = (0..formats)
        .map(|i| int16(2 + 2 * i))
        .collect::<Option<Vec<i16>>>()
    else {
        return short();
    };
    let mut at = 2 + 2 * formats;
    let Some(params) = count(at) else {
        return short();
    };
    at += 2;
    for i in 0..params {
        let Some(len) = rest.get(at..at + 4).and_then(|b| b.try_into().ok()) else {
            return short();
        };
        at += 4;
        let Ok(len) = usize::try_from(i32::from_be_bytes(len)) else {
            continue; // NULL
        };
        let Some(value) = rest.get(at..at + len) else {
            return short();
        };
        at += len;
        // No codes: all text; one code: it applies to every parameter; else one per parameter.
        let code = match codes.as_slice() {
            [] => 0,
            [one] => *one,
            many => many.get(i).copied().unwrap_or(0),
        };
        if code == 0
            && let Err(e) = std::str::from_utf8(value)
        {
            return Some(invalid_byte_sequence(&value[e.valid_up_to()..]));
        }
    }
    let Some(results) = count(at) else {
        return short();
    };
    if rest.len() < at + 2 + 2 * results {
        return short();
    }
    None
}

/// Postgres' error for `bad`, the bytes from the first invalid character on: the character's
/// bytes as its lead byte announces them.
fn invalid_byte_sequence(bad: &[u8]) -> SqlError {
    let announced = match bad.first() {
        Some(b) if b & 0xe0 == 0xc0 => 2,
        Some(b) if b & 0xf0 == 0xe0 => 3,
        Some(b) if b & 0xf8 == 0xf0 => 4,
        _ => 1,
    };
    let bytes: Vec<String> = bad
        .iter()
        .take(announced)
        .map(|b| format!("0x{b:02x}"))
        .collect();
    SqlError::new(
        sqlstate::CHARACTER_NOT_IN_REPERTOIRE,
        format!(
            "invalid byte sequence for encoding \"UTF8\": {}",
            bytes.join(" ")
        ),
    )
}

impl AsyncRead for Checked {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.ready > 0 {
                let n = this.ready.min(out.remaining());
                out.put_slice(&this.buffer[..n]);
                this.buffer.advance(n);
                this.ready -= n;
                return Poll::Ready(Ok(()));
            }
            if this.refusing() {
                // The loop is woken by the slot's notify, answers, and reads again.
                return Poll::Pending;
            }
            this.check();
            if this.ready > 0 || this.refusing() {
                continue;
            }
            if this.eof {
                // A cut-off message: hand it on for pgwire to refuse, then the end.
                this.ready = this.buffer.len();
                if this.ready == 0 {
                    return Poll::Ready(Ok(()));
                }
                continue;
            }
            let mut chunk = [0u8; 8192];
            let mut read = ReadBuf::new(&mut chunk);
            match Pin::new(&mut this.inner).poll_read(cx, &mut read) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) => {
                    if read.filled().is_empty() {
                        this.eof = true;
                    } else {
                        this.buffer.extend_from_slice(read.filled());
                    }
                }
            }
        }
    }
}

impl AsyncWrite for Checked {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(sql: &[u8]) -> Vec<u8> {
        let mut m = vec![b'Q'];
        m.extend_from_slice(&((sql.len() + 5) as i32).to_be_bytes());
        m.extend_from_slice(sql);
        m.push(0);
        m
    }

    #[test]
    fn invalid_utf8_is_named_as_postgres_names_it() {
        let e = invalid_strings(&query(b"SELECT '\xff'"));
        assert_eq!(
            e.map(|e| e.message),
            Some("invalid byte sequence for encoding \"UTF8\": 0xff".into())
        );
        let e = invalid_strings(&query(b"SELECT '\xc3\x28'"));
        assert_eq!(
            e.map(|e| e.message),
            Some("invalid byte sequence for encoding \"UTF8\": 0xc3 0x28".into())
        );
        assert!(invalid_strings(&query("SELECT 'héllo \u{fffd}'".as_bytes())).is_none());
    }

    fn bind(formats: &[i16], params: &[Option<&[u8]>]) -> Vec<u8> {
        let mut body = b"\0\0".to_vec();
        body.extend_from_slice(&(formats.len() as i16).to_be_bytes());
        for f in formats {
            body.extend_from_slice(&f.to_be_bytes());
        }
        body.extend_from_slice(&(params.len() as i16).to_be_bytes());
        for p in params {
            match p {
                Some(v) => {
                    body.extend_from_slice(&(v.len() as i32).to_be_bytes());
                    body.extend_from_slice(v);
                }
                None => body.extend_from_slice(&(-1i32).to_be_bytes()),
            }
        }
        body.extend_from_slice(&0i16.to_be_bytes());
        let mut m = vec![b'B'];
        m.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
        m.extend(body);
        m
    }

    #[test]
    fn text_parameters_are_checked_binary_ones_are_not() {
        let bad: &[u8] = b"a\xffb";
        let e = invalid_strings(&bind(&[], &[None, Some(b"ok"), Some(bad)]));
        assert_eq!(
            e.map(|e| e.message),
            Some("invalid byte sequence for encoding \"UTF8\": 0xff".into())
        );
        assert!(invalid_strings(&bind(&[1], &[Some(bad)])).is_none());
        assert!(invalid_strings(&bind(&[1, 0], &[Some(bad), Some(b"fine")])).is_none());
        assert!(invalid_strings(&bind(&[1, 0], &[Some(b"x"), Some(bad)])).is_some());
        // Cut short anywhere: a protocol violation, not a panic in the decoder.
        let whole = bind(&[0], &[Some(b"x")]);
        for cut in 7..whole.len() {
            let e = invalid_strings(&whole[..cut]).map(|e| e.code);
            assert_eq!(e, Some(sqlstate::PROTOCOL_VIOLATION), "cut at {cut}");
        }
        assert!(invalid_strings(&whole).is_none());
        let parse = |body: &[u8]| {
            let mut m = vec![b'P'];
            m.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
            m.extend_from_slice(body);
            m
        };
        assert!(invalid_strings(&parse(b"\0SELECT $1\0\0\x01\0\0\0\x17")).is_none());
        let e = invalid_strings(&parse(b"\0SELECT $1\0\0\x01\0\0")).map(|e| e.code);
        assert_eq!(e, Some(sqlstate::PROTOCOL_VIOLATION));
        let e = invalid_strings(&[b'E', 0, 0, 0, 5, 0]).map(|e| e.code);
        assert_eq!(e, Some(sqlstate::PROTOCOL_VIOLATION));
        // Counts pgwire reads unsigned: a "negative" count announces thousands of fields.
        let e = invalid_strings(&parse(b"\0SELECT 1\0\x80\0")).map(|e| e.code);
        assert_eq!(e, Some(sqlstate::PROTOCOL_VIOLATION));
        let mut huge = bind(&[], &[]);
        let formats = 7; // tag, length, two empty names
        huge[formats..formats + 2].copy_from_slice(&[0xff, 0xff]);
        let e = invalid_strings(&huge).map(|e| e.code);
        assert_eq!(e, Some(sqlstate::PROTOCOL_VIOLATION));
    }

    #[test]
    fn a_sasl_initial_response_must_hold_what_it_announces() {
        let message = |body: &[u8]| {
            let mut m = vec![b'p'];
            m.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
            m.extend_from_slice(body);
            m
        };
        let good = message(b"SCRAM-SHA-256\0\0\0\0\x03abc");
        assert!(invalid_sasl_initial(&good).is_none());
        assert!(invalid_sasl_initial(&message(b"SCRAM-SHA-256\0\xff\xff\xff\xff")).is_none());
        for bad in [
            &b"SCRAM-SHA-256"[..],
            b"SCRAM-SHA-256\0\0\0",
            b"SCRAM-SHA-256\0\0\0\0\x04abc",
            b"SCRAM-SHA-256\0\xff\xff\xff\xfe",
        ] {
            let e = invalid_sasl_initial(&message(bad)).map(|e| e.code);
            assert_eq!(e, Some(sqlstate::PROTOCOL_VIOLATION), "{bad:?}");
        }
    }
}
