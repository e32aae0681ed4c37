//! Signed requests (Ed25519 over timestamp ‖ body, as Discord signs them) and the little
//! HTTP/1.1 response parsing the fresh client needs.

use std::time::{SystemTime, UNIX_EPOCH};

use ed25519_dalek::{Signer as _, SigningKey};

/// The fixtures' test identity (core/fixtures/README.md): every byte of the seed is 0x07.
/// `yuyo serve` and the baseline accept it by default.
pub const TEST_SECRET_SEED: [u8; 32] = [7; 32];

/// The PING body the fresh client sends, and the body a healthy server answers with.
pub const PING: &[u8] = br#"{"type":1}"#;

/// Parses a 32-byte seed from 64 hex digits.
pub fn parse_seed(text: &str) -> Result<SigningKey, String> {
    let bytes = hex::decode(text.trim()).map_err(|e| format!("secret key: {e}"))?;
    let seed = <[u8; 32]>::try_from(bytes)
        .map_err(|_| "secret key: need 32 bytes (64 hex digits)".to_owned())?;
    Ok(SigningKey::from_bytes(&seed))
}

/// Unix time now in seconds, the `X-Signature-Timestamp` (fresh, in case the server checks
/// a timestamp window).
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The head of a signed `POST /` whose body is `body` (which the caller may or may not
/// send), announcing `Content-Length: body.len()`, with `extra` header lines (each ending
/// in CRLF) before the blank line.
pub fn signed_post_head(key: &SigningKey, body: &[u8], extra: &str) -> Vec<u8> {
    let timestamp = unix_now().to_string();
    let mut message = timestamp.clone().into_bytes();
    message.extend_from_slice(body);
    let signature = hex::encode(key.sign(&message).to_bytes());
    format!(
        "POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         User-Agent: Discord-Interactions/1.0 (+https://discord.com)\r\n\
         X-Signature-Ed25519: {signature}\r\nX-Signature-Timestamp: {timestamp}\r\n\
         Content-Length: {}\r\n{extra}\r\n",
        body.len()
    )
    .into_bytes()
}

/// A complete signed PING request on a connection the server should close after it.
pub fn ping_request(key: &SigningKey) -> Vec<u8> {
    let mut request = signed_post_head(key, PING, "Connection: close\r\n");
    request.extend_from_slice(PING);
    request
}

/// A parsed response: its status and body.
#[derive(Debug)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The body (by `Content-Length`, or everything up to the end of the stream).
    pub body: Vec<u8>,
}

/// Parses `buf` as a response. `Ok(None)`: incomplete so far (with `eof`, a response
/// without `Content-Length` is complete when the stream ends). Chunked bodies are not
/// decoded: none of the servers measured sends one for a PING.
pub fn parse_response(buf: &[u8], eof: bool) -> Result<Option<Response>, String> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    let head_len = match response.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(format!("bad response: {e}")),
    };
    let status = response.code.unwrap_or(0);
    let length = response
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .and_then(|h| std::str::from_utf8(h.value).ok())
        .and_then(|v| v.trim().parse::<usize>().ok());
    let rest = &buf[head_len..];
    match length {
        Some(n) if rest.len() >= n => Ok(Some(Response {
            status,
            body: rest[..n].to_vec(),
        })),
        None if eof => Ok(Some(Response {
            status,
            body: rest.to_vec(),
        })),
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_complete_response_by_content_length() {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{\"type\":1}";
        let parsed = parse_response(raw, false);
        assert!(matches!(parsed, Ok(Some(Response { status: 200, ref body })) if body == PING));
        let partial = parse_response(&raw[..raw.len() - 1], false);
        assert!(matches!(partial, Ok(None)));
    }

    #[test]
    fn the_test_seed_gives_the_fixtures_public_key() {
        let key = SigningKey::from_bytes(&TEST_SECRET_SEED);
        assert_eq!(
            hex::encode(key.verifying_key().to_bytes()),
            "ea4a6c63e29c520abef5507b132ec5f9954776aebebe7b92421eea691446d22c"
        );
    }
}
