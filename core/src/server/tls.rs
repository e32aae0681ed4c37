//! HTTPS served by the session itself: a rustls server connection on byte buffers, between
//! the socket bytes a driver moves and the HTTP/1.1 machinery.
//!
//! The driver reads ciphertext into [`Session::receive_buffer`](super::Session::receive_buffer)
//! and writes what [`Output::Transmit`](super::Output::Transmit) hands it, exactly as for a
//! plain connection: the session decrypts what was received into the HTTP/1.1 receive
//! buffer, and encrypts every answer before it reaches the output. So every adapter serves
//! TLS the same way, with no TLS code of its own.
//!
//! [`ServerTls`] is the configuration, shared by every connection of a server: built from
//! PEM files, PEM bytes or DER, it can be [reloaded](ServerTls::reload_from_files) while
//! serving. A reload changes what NEW connections get; connections already open keep the
//! configuration they were accepted with.

use std::fmt;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Instant;

use bytes::{Buf, Bytes, BytesMut};
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ServerConfig, ServerConnection};

/// The ALPN protocol served: HTTP/1.1 only.
pub const ALPN_HTTP11: &[u8] = b"http/1.1";

/// Room reserved for one socket read of ciphertext (a full TLS record and then some).
const READ_RESERVE: usize = 8 * 1024;

/// Why a TLS configuration could not be built or reloaded.
#[derive(Debug)]
#[non_exhaustive]
pub enum TlsError {
    /// A certificate or key file could not be read (missing, unreadable).
    Read {
        /// The file.
        path: PathBuf,
        /// Why it could not be read.
        source: io::Error,
    },
    /// The certificate PEM is malformed.
    CertificatePem(pem::Error),
    /// The key PEM is malformed.
    KeyPem(pem::Error),
    /// The certificate PEM holds no certificate.
    NoCertificate,
    /// The key PEM holds no private key.
    NoKey,
    /// The private key does not belong to the first certificate of the chain.
    KeyMismatch,
    /// rustls refused the certificate or key (e.g. an unsupported key type).
    Rustls(rustls::Error),
    /// [`ServerTls::reload_from_files`] on a configuration not built from files.
    NoFiles,
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Read { path, source } => write!(f, "cannot read {}: {source}", path.display()),
            Self::CertificatePem(e) => write!(f, "malformed certificate PEM: {e}"),
            Self::KeyPem(e) => write!(f, "malformed private key PEM: {e}"),
            Self::NoCertificate => f.write_str("no certificate in the certificate PEM"),
            Self::NoKey => f.write_str("no private key in the key PEM"),
            Self::KeyMismatch => f.write_str("the private key does not match the certificate"),
            Self::Rustls(e) => write!(f, "rustls refused the certificate or key: {e}"),
            Self::NoFiles => f.write_str("this TLS configuration was not built from files"),
        }
    }
}

impl std::error::Error for TlsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Read { source, .. } => Some(source),
            Self::CertificatePem(e) | Self::KeyPem(e) => Some(e),
            Self::Rustls(e) => Some(e),
            Self::NoCertificate | Self::NoKey | Self::KeyMismatch | Self::NoFiles => None,
        }
    }
}

/// The TLS configuration of a server: a cheap, shared handle (clone it before handing it
/// to the [`Service`](crate::service::Service) to reload it later).
///
/// Served with rustls' defaults and its ring provider: TLS 1.2 and 1.3, ALPN `http/1.1`,
/// no client authentication.
#[derive(Clone)]
pub struct ServerTls {
    inner: Arc<Shared>,
}

struct Shared {
    config: RwLock<Arc<ServerConfig>>,
    /// The certificate chain and key files, for [`ServerTls::reload_from_files`].
    files: Option<(PathBuf, PathBuf)>,
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTls")
            .field("files", &self.inner.files)
            .finish_non_exhaustive()
    }
}

impl ServerTls {
    /// A configuration from a PEM certificate chain file (leaf first) and a PEM private
    /// key file (PKCS#8, PKCS#1 or SEC1), which [`ServerTls::reload_from_files`] re-reads.
    ///
    /// # Errors
    /// [`TlsError::Read`] for a missing or unreadable file, then as [`ServerTls::from_pem`].
    pub fn from_pem_files(
        cert_chain: impl AsRef<Path>,
        key: impl AsRef<Path>,
    ) -> Result<Self, TlsError> {
        let files = (cert_chain.as_ref().to_owned(), key.as_ref().to_owned());
        let config = config_from_files(&files.0, &files.1)?;
        Ok(Self::with(config, Some(files)))
    }

    /// A configuration from an in-memory PEM certificate chain (leaf first) and PEM key.
    ///
    /// # Errors
    /// [`TlsError::NoCertificate`], [`TlsError::NoKey`], [`TlsError::KeyMismatch`], or a
    /// malformed PEM.
    pub fn from_pem(cert_chain: &[u8], key: &[u8]) -> Result<Self, TlsError> {
        Ok(Self::with(config_from_pem(cert_chain, key)?, None))
    }

    /// A configuration from a DER certificate chain (leaf first) and DER key.
    ///
    /// # Errors
    /// [`TlsError::NoCertificate`] for an empty chain, [`TlsError::KeyMismatch`], or a key
    /// rustls cannot use.
    pub fn from_der(
        cert_chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<Self, TlsError> {
        Ok(Self::with(server_config(cert_chain, key)?, None))
    }

    /// A configuration built by the caller, served as it is (set its ALPN protocols to
    /// `http/1.1`, see [`ALPN_HTTP11`]).
    #[must_use]
    pub fn from_config(config: Arc<ServerConfig>) -> Self {
        Self::with(config, None)
    }

    fn with(config: Arc<ServerConfig>, files: Option<(PathBuf, PathBuf)>) -> Self {
        Self {
            inner: Arc::new(Shared {
                config: RwLock::new(config),
                files,
            }),
        }
    }

    /// The configuration new connections are served with.
    #[must_use]
    pub fn config(&self) -> Arc<ServerConfig> {
        let config = self
            .inner
            .config
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        Arc::clone(&config)
    }

    /// Serves new connections with `config`; open connections keep theirs.
    pub fn reload_config(&self, config: Arc<ServerConfig>) {
        let mut current = self
            .inner
            .config
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        *current = config;
    }

    /// Serves new connections with this PEM certificate chain and key; open connections
    /// keep theirs. On error nothing changes.
    ///
    /// # Errors
    /// As [`ServerTls::from_pem`].
    pub fn reload_pem(&self, cert_chain: &[u8], key: &[u8]) -> Result<(), TlsError> {
        self.reload_config(config_from_pem(cert_chain, key)?);
        Ok(())
    }

    /// Serves new connections with this DER certificate chain and key; open connections
    /// keep theirs. On error nothing changes.
    ///
    /// # Errors
    /// As [`ServerTls::from_der`].
    pub fn reload_der(
        &self,
        cert_chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<(), TlsError> {
        self.reload_config(server_config(cert_chain, key)?);
        Ok(())
    }

    /// Re-reads the files of [`ServerTls::from_pem_files`] (e.g. after a certificate
    /// renewal) for new connections; open connections keep theirs. On error nothing
    /// changes.
    ///
    /// # Errors
    /// [`TlsError::NoFiles`] when not built from files, else as
    /// [`ServerTls::from_pem_files`].
    pub fn reload_from_files(&self) -> Result<(), TlsError> {
        let (cert, key) = self.inner.files.as_ref().ok_or(TlsError::NoFiles)?;
        self.reload_config(config_from_files(cert, key)?);
        Ok(())
    }
}

fn read_file(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

fn config_from_files(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    config_from_pem(&read_file(cert)?, &read_file(key)?)
}

fn config_from_pem(cert_chain: &[u8], key: &[u8]) -> Result<Arc<ServerConfig>, TlsError> {
    let chain = CertificateDer::pem_slice_iter(cert_chain)
        .collect::<Result<Vec<_>, _>>()
        .map_err(TlsError::CertificatePem)?;
    let key = PrivateKeyDer::from_pem_slice(key).map_err(|error| match error {
        pem::Error::NoItemsFound => TlsError::NoKey,
        error => TlsError::KeyPem(error),
    })?;
    server_config(chain, key)
}

/// rustls' defaults with the ring provider (like the REST client's), ALPN `http/1.1`.
fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<ServerConfig>, TlsError> {
    if chain.is_empty() {
        return Err(TlsError::NoCertificate);
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Rustls)?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|error| match error {
            rustls::Error::InconsistentKeys(_) => TlsError::KeyMismatch,
            error => TlsError::Rustls(error),
        })?;
    config.alpn_protocols = vec![ALPN_HTTP11.to_vec()];
    Ok(Arc::new(config))
}

/// What [`Layer::decrypt`] found besides plaintext.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decrypted {
    /// Go on.
    Open,
    /// The peer sent close_notify: it sends nothing more.
    Closed,
    /// A bad record or a failed handshake: the alert waits in [`Layer::poll_transmit`];
    /// close after sending it.
    Failed,
}

/// The TLS layer of one session.
pub(crate) struct Layer {
    conn: ServerConnection,
    /// Ciphertext received and not yet given to rustls; released when empty.
    incoming: BytesMut,
    /// The head deadline, which the handshake must meet.
    handshake_until: Instant,
    failed: bool,
    close_notify_sent: bool,
}

impl fmt::Debug for Layer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Layer")
            .field("handshaking", &self.conn.is_handshaking())
            .field("incoming", &self.incoming.len())
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}

impl Layer {
    /// A layer for a connection accepted now, whose handshake must end by `handshake_until`.
    pub(crate) fn new(
        config: Arc<ServerConfig>,
        handshake_until: Instant,
    ) -> Result<Self, rustls::Error> {
        let mut conn = ServerConnection::new(config)?;
        // The session bounds its output (`MAX_UNSENT`) and drains rustls after every write.
        conn.set_buffer_limit(None);
        Ok(Self {
            conn,
            incoming: BytesMut::new(),
            handshake_until,
            failed: false,
            close_notify_sent: false,
        })
    }

    /// The ciphertext receive buffer, with room for one read.
    pub(crate) fn receive_buffer(&mut self) -> &mut BytesMut {
        self.incoming.reserve(READ_RESERVE);
        &mut self.incoming
    }

    /// The handshake deadline, while the handshake runs.
    pub(crate) fn handshake_deadline(&self) -> Option<Instant> {
        (self.conn.is_handshaking() && !self.failed).then_some(self.handshake_until)
    }

    /// The negotiated ALPN protocol.
    pub(crate) fn alpn_protocol(&self) -> Option<&[u8]> {
        self.conn.alpn_protocol()
    }

    /// Gives rustls the ciphertext received and appends the plaintext it yields to `plain`.
    pub(crate) fn decrypt(&mut self, plain: &mut BytesMut) -> Decrypted {
        let mut found = Decrypted::Open;
        while !self.incoming.is_empty() && found == Decrypted::Open {
            let mut reader = &self.incoming[..];
            let read = match self.conn.read_tls(&mut reader) {
                Ok(read) => read,
                Err(error) => {
                    tracing::debug!(%error, "TLS record not accepted");
                    found = self.fail();
                    break;
                }
            };
            self.incoming.advance(read);
            found = self.process(plain);
            if read == 0 {
                break;
            }
        }
        if self.incoming.is_empty() || found != Decrypted::Open {
            self.incoming = BytesMut::new();
        }
        found
    }

    fn process(&mut self, plain: &mut BytesMut) -> Decrypted {
        let state = match self.conn.process_new_packets() {
            Ok(state) => state,
            Err(error) => {
                tracing::debug!(%error, "TLS failed; closing the connection");
                return self.fail();
            }
        };
        let available = state.plaintext_bytes_to_read();
        if available > 0 {
            let start = plain.len();
            plain.resize(start + available, 0);
            if let Err(error) = self.conn.reader().read_exact(&mut plain[start..]) {
                tracing::debug!(%error, "TLS plaintext not readable");
                plain.truncate(start);
                return self.fail();
            }
        }
        if state.peer_has_closed() {
            Decrypted::Closed
        } else {
            Decrypted::Open
        }
    }

    fn fail(&mut self) -> Decrypted {
        self.failed = true;
        Decrypted::Failed
    }

    /// Drops ciphertext received after the session stopped reading (a lingering close);
    /// returns how many bytes that was.
    pub(crate) fn discard_received(&mut self) -> usize {
        let discarded = self.incoming.len();
        self.incoming = BytesMut::new();
        discarded
    }

    /// Encrypts `plain` (buffered by rustls until the handshake ends); the records wait
    /// in [`Layer::poll_transmit`].
    pub(crate) fn encrypt(&mut self, plain: &[u8]) {
        if self.failed || self.close_notify_sent {
            return;
        }
        if let Err(error) = self.conn.writer().write_all(plain) {
            tracing::debug!(%error, "TLS refused plaintext");
        }
    }

    /// Queues close_notify, once, unless TLS failed: before the sending side is shut down.
    /// Returns whether it was queued now.
    pub(crate) fn close_notify(&mut self) -> bool {
        if self.failed || self.close_notify_sent {
            return false;
        }
        self.close_notify_sent = true;
        self.conn.send_close_notify();
        true
    }

    /// The records (handshake, application data, alerts) to write to the socket.
    pub(crate) fn poll_transmit(&mut self) -> Option<Bytes> {
        if !self.conn.wants_write() {
            return None;
        }
        let mut out = Vec::new();
        while self.conn.wants_write() {
            match self.conn.write_tls(&mut out) {
                Ok(0) => break,
                Ok(_) => {}
                Err(error) => {
                    // Writing into a Vec does not fail.
                    tracing::debug!(%error, "TLS records not written");
                    break;
                }
            }
        }
        (!out.is_empty()).then(|| Bytes::from(out))
    }
}
