//! TLS for `yuyo check https://…`: rustls with the webpki roots (the public CAs, like
//! Discord) or a private CA (`--ca PEM`), remembering the certificate the server showed
//! so that it can be described even when it is refused.

use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};

/// The TLS client configuration of one check, and the last certificate it was shown.
#[derive(Debug, Clone)]
pub struct Tls {
    config: Arc<rustls::ClientConfig>,
    seen: Arc<Recorder>,
    /// Whether the roots are a private CA's (`--ca`).
    private_ca: bool,
}

impl Tls {
    /// Trusts the webpki roots, or only the certificates of the `ca` PEM file.
    pub fn new(ca: Option<&Path>) -> Result<Self, String> {
        let mut roots = RootCertStore::empty();
        match ca {
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
            Some(path) => {
                let shown = path.display();
                let certs = CertificateDer::pem_file_iter(path)
                    .map_err(|e| format!("--ca {shown}: cannot read it as PEM: {e}"))?;
                for cert in certs {
                    let cert = cert.map_err(|e| format!("--ca {shown}: bad PEM: {e}"))?;
                    roots
                        .add(cert)
                        .map_err(|e| format!("--ca {shown}: not a usable CA certificate: {e}"))?;
                }
                if roots.is_empty() {
                    return Err(format!(
                        "--ca {shown}: no certificate in it (expected -----BEGIN CERTIFICATE-----)"
                    ));
                }
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .map_err(|e| format!("cannot set up certificate checks: {e}"))?;
        let seen = Arc::new(Recorder {
            inner,
            last: Mutex::new(None),
        });
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("cannot set up TLS: {e}"))?
            .dangerous()
            .with_custom_certificate_verifier(seen.clone())
            .with_no_client_auth();
        Ok(Self {
            config: Arc::new(config),
            seen,
            private_ca: ca.is_some(),
        })
    }

    /// A client session for `host`.
    pub fn connect(&self, host: &str) -> Result<rustls::ClientConnection, String> {
        let name = ServerName::try_from(host.to_owned())
            .map_err(|e| format!("{host} is not a valid TLS server name: {e}"))?;
        rustls::ClientConnection::new(Arc::clone(&self.config), name)
            .map_err(|e| format!("cannot start TLS: {e}"))
    }

    /// The last certificate a server showed, described.
    pub fn last_certificate(&self) -> Option<Certificate> {
        let last = self
            .seen
            .last
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        last.as_ref().map(|der| Certificate::parse(der))
    }

    /// A TLS failure in words, with what to fix; `None` when `error` is not one.
    pub fn explain(&self, error: &io::Error) -> Option<String> {
        let rustls_error = error.get_ref()?.downcast_ref::<rustls::Error>()?;
        let rustls::Error::InvalidCertificate(problem) = rustls_error else {
            let hint = match rustls_error {
                rustls::Error::InvalidMessage(_) => {
                    ": the server does not speak TLS on this port (plain http?)"
                }
                _ => "",
            };
            return Some(format!("TLS handshake failed: {rustls_error}{hint}"));
        };
        let certificate = self.last_certificate();
        let expiry = certificate
            .as_ref()
            .map_or_else(String::new, |c| format!(" on {}", c.not_after));
        let where_from = if self.private_ca {
            "the --ca certificate"
        } else {
            "a public CA (Discord trusts the usual public CAs, e.g. Let's Encrypt)"
        };
        let why = match problem {
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                format!("the certificate expired{expiry}: renew it")
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                "the certificate is not valid yet: check its dates and the clocks".to_owned()
            }
            CertificateError::UnknownIssuer | CertificateError::BadSignature => format!(
                "the certificate is not trusted: it does not chain to {where_from} \
                 ({problem:?}); serve the whole chain, or pass a private CA with --ca PEM"
            ),
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                "the certificate is not valid for this host name: get one that names it".to_owned()
            }
            _ if certificate.as_ref().is_some_and(|c| c.subject == c.issuer) => format!(
                "the certificate is self-signed: Discord only accepts one that chains to \
                 {where_from}; get one (e.g. from Let's Encrypt), or pass it as a private \
                 CA with --ca PEM to test"
            ),
            other => format!("the certificate is refused: {other}"),
        };
        let shown = certificate.map_or_else(String::new, |c| format!(" [{c}]"));
        Some(format!("{why}{shown}"))
    }
}

/// What a certificate says about itself.
#[derive(Debug, Clone)]
pub struct Certificate {
    /// The subject's distinguished name.
    pub subject: String,
    /// The issuer's distinguished name.
    pub issuer: String,
    /// The end of its validity.
    pub not_after: String,
    /// Whole days left until then, if it is valid now.
    pub days_left: Option<i64>,
}

impl Certificate {
    fn parse(der: &CertificateDer<'_>) -> Self {
        match x509_parser::parse_x509_certificate(der) {
            Ok((_, cert)) => Self {
                subject: cert.subject().to_string(),
                issuer: cert.issuer().to_string(),
                not_after: cert.validity().not_after.to_string(),
                days_left: cert
                    .validity()
                    .time_to_expiration()
                    .map(|left| left.whole_days()),
            },
            Err(e) => Self {
                subject: format!("(unreadable certificate: {e})"),
                issuer: String::new(),
                not_after: "?".to_owned(),
                days_left: None,
            },
        }
    }
}

impl std::fmt::Display for Certificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "subject {}, issuer {}, expires {}",
            self.subject, self.issuer, self.not_after
        )?;
        if let Some(days) = self.days_left {
            write!(f, " (in {days} days)")?;
        }
        Ok(())
    }
}

/// webpki's verifier, keeping the end-entity certificate it was shown.
#[derive(Debug)]
struct Recorder {
    inner: Arc<WebPkiServerVerifier>,
    last: Mutex<Option<CertificateDer<'static>>>,
}

impl ServerCertVerifier for Recorder {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        *self.last.lock().unwrap_or_else(PoisonError::into_inner) =
            Some(end_entity.clone().into_owned());
        self.inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
