//! What a user would write without yuyo: tokio + hyper 1 + ed25519-dalek + serde_json,
//! POST / only, signature check, PING and a fixed command reply, 401 on a bad signature.
//! The load benchmark (`bench/load.sh`) measures yuyo against it.
//!
//! Usage: `yuyo-bench-baseline [ADDR] [PUBLIC_KEY_HEX] [CERT_PEM KEY_PEM]` (defaults:
//! 127.0.0.1:8090, the fixtures' test key, plain HTTP). With a certificate and key it
//! serves HTTPS through tokio-rustls, as a user would put TLS in front of hyper.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use ed25519_dalek::{Signature, VerifyingKey};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;

const TEST_PUBLIC_KEY: &str = "ea4a6c63e29c520abef5507b132ec5f9954776aebebe7b92421eea691446d22c";

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response
}

fn json(body: &'static [u8]) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body)));
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}

async fn handle(
    key: Arc<VerifyingKey>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if request.method() != Method::POST || request.uri().path() != "/" {
        return Ok(text(StatusCode::NOT_FOUND, "not found"));
    }
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let (Some(signature), Some(timestamp)) = (
        header("x-signature-ed25519"),
        header("x-signature-timestamp"),
    ) else {
        return Ok(text(StatusCode::UNAUTHORIZED, "missing signature"));
    };
    let Ok(body) = request.into_body().collect().await.map(|b| b.to_bytes()) else {
        return Ok(text(StatusCode::BAD_REQUEST, "bad body"));
    };
    let Some(signature) = hex::decode(signature)
        .ok()
        .and_then(|s| <[u8; 64]>::try_from(s).ok())
        .map(|s| Signature::from_bytes(&s))
    else {
        return Ok(text(StatusCode::UNAUTHORIZED, "bad signature"));
    };
    let mut message = timestamp.into_bytes();
    message.extend_from_slice(&body);
    if key.verify_strict(&message, &signature).is_err() {
        return Ok(text(StatusCode::UNAUTHORIZED, "bad signature"));
    }
    let Ok(interaction) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return Ok(text(StatusCode::BAD_REQUEST, "bad json"));
    };
    Ok(
        match interaction.get("type").and_then(serde_json::Value::as_u64) {
            Some(1) => json(br#"{"type":1}"#),
            Some(2) => json(br#"{"type":4,"data":{"content":"hello"}}"#),
            _ => text(StatusCode::BAD_REQUEST, "unsupported"),
        },
    )
}

/// A TLS acceptor for the certificate chain and key in these PEM files (ALPN http/1.1).
fn acceptor(cert: &str, key: &str) -> Result<TlsAcceptor, Box<dyn std::error::Error>> {
    let chain = CertificateDer::pem_file_iter(cert)?.collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_file(key)?;
    let mut config = ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Serves one connection (after the TLS handshake, with `tls`).
async fn connection(stream: TcpStream, tls: Option<TlsAcceptor>, key: Arc<VerifyingKey>) {
    let _ = stream.set_nodelay(true);
    let service = service_fn(move |request| handle(key.clone(), request));
    let http = http1::Builder::new();
    let _ = match tls {
        Some(tls) => match tls.accept(stream).await {
            Ok(stream) => http.serve_connection(TokioIo::new(stream), service).await,
            Err(_) => return,
        },
        None => http.serve_connection(TokioIo::new(stream), service).await,
    };
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let addr: SocketAddr = args.next().as_deref().unwrap_or("127.0.0.1:8090").parse()?;
    let key_hex = args.next().unwrap_or_else(|| TEST_PUBLIC_KEY.to_owned());
    let key_bytes: [u8; 32] = hex::decode(key_hex)?
        .try_into()
        .map_err(|_| "public key must be 32 bytes")?;
    let key = Arc::new(VerifyingKey::from_bytes(&key_bytes)?);
    let tls = match (args.next(), args.next()) {
        (Some(cert), Some(key)) => Some(acceptor(&cert, &key)?),
        _ => None,
    };
    let listener = TcpListener::bind(addr).await?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    println!("listening on {scheme}://{}", listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
        tokio::spawn(connection(stream, tls.clone(), key.clone()));
    }
}
