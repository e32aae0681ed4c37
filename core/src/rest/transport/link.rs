//! The byte layer of one client connection: plain TCP, or TLS with `rustls` working on
//! byte buffers, so no adapter carries TLS code of its own.

use std::io::{self, Read, Write};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use super::Origin;
use crate::rest::error::{TransportError, TransportErrorKind};

/// Plain bytes, or a `rustls` client session over them.
pub(crate) enum Link {
    /// Bytes go to the socket as they are.
    Plain,
    /// Bytes are sealed and opened by `rustls`.
    Tls(Box<rustls::ClientConnection>),
}

/// What opening received bytes gave.
#[derive(Debug, Default)]
pub(crate) struct Opened {
    /// The peer ended its stream (TLS `close_notify`, or the socket's end).
    pub(crate) closed: bool,
}

fn tls_error(error: impl std::fmt::Display) -> TransportError {
    TransportError::new(TransportErrorKind::Io, format!("TLS: {error}"))
}

impl Link {
    /// The link to `origin`: TLS (with `config`) for `https`.
    pub(crate) fn to(
        origin: &Origin,
        config: &Arc<rustls::ClientConfig>,
    ) -> Result<Self, TransportError> {
        if !origin.tls {
            return Ok(Self::Plain);
        }
        let name = origin.server_name()?;
        rustls::ClientConnection::new(Arc::clone(config), name)
            .map(|session| Self::Tls(Box::new(session)))
            .map_err(|e| TransportError::new(TransportErrorKind::Connect, format!("TLS: {e}")))
    }

    /// Whether the TLS handshake is still going on.
    pub(crate) fn is_handshaking(&self) -> bool {
        match self {
            Self::Plain => false,
            Self::Tls(session) => session.is_handshaking(),
        }
    }

    /// Bytes the session wants written now (handshake messages, alerts), if any.
    pub(crate) fn outgoing(&mut self) -> Option<Bytes> {
        let Self::Tls(session) = self else {
            return None;
        };
        if !session.wants_write() {
            return None;
        }
        let mut out = Vec::new();
        while session.wants_write() {
            // Writing into a Vec cannot fail.
            if session.write_tls(&mut out).is_err() {
                break;
            }
        }
        (!out.is_empty()).then(|| Bytes::from(out))
    }

    /// The wire bytes that carry `plain`.
    pub(crate) fn seal(&mut self, plain: Bytes) -> Result<Bytes, TransportError> {
        match self {
            Self::Plain => Ok(plain),
            Self::Tls(session) => {
                session.writer().write_all(&plain).map_err(tls_error)?;
                Ok(self.outgoing().unwrap_or_default())
            }
        }
    }

    /// Takes `data` read from the socket (empty: the socket's end) and appends what it
    /// carries to `plain`.
    pub(crate) fn open(
        &mut self,
        mut data: &[u8],
        plain: &mut BytesMut,
    ) -> Result<Opened, TransportError> {
        let Self::Tls(session) = self else {
            plain.extend_from_slice(data);
            return Ok(Opened {
                closed: data.is_empty(),
            });
        };
        if data.is_empty() {
            return Ok(Opened { closed: true });
        }
        while !data.is_empty() {
            session.read_tls(&mut data).map_err(tls_error)?;
            session.process_new_packets().map_err(tls_error)?;
            if drain_plaintext(session, plain)? {
                return Ok(Opened { closed: true });
            }
        }
        Ok(Opened::default())
    }
}

/// Moves the session's decrypted bytes to `plain`; `true` once the peer sent
/// `close_notify`.
fn drain_plaintext(
    session: &mut rustls::ClientConnection,
    plain: &mut BytesMut,
) -> Result<bool, TransportError> {
    let mut chunk = [0_u8; 4096];
    loop {
        match session.reader().read(&mut chunk) {
            Ok(0) => return Ok(true),
            Ok(n) => plain.extend_from_slice(&chunk[..n]),
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(error) => return Err(tls_error(error)),
        }
    }
}
