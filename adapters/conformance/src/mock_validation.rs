//! The mock Discord validating URLs as Discord does when an application's interactions
//! endpoint URL (or event webhooks URL) is set through `PATCH /applications/@me`: it
//! sends a PING signed with its key pair and one with a bad signature, each within the
//! deadline (3 s, as Discord), over http or https (trusting the configured roots), and
//! answers 400 with Discord's error shape when either answer is wrong.

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use yuyo_core::rest::transport::rustls;

use crate::demo;
use crate::mock_discord::Reply;

/// How the mock validates URLs (see [`MockDiscord::with_validation`](crate::mock_discord::MockDiscord::with_validation)).
#[derive(Clone, Debug)]
pub struct Validation {
    /// The key the probes are signed with (the endpoint is configured with its public
    /// key).
    pub secret_seed: [u8; 32],
    /// How long each probe may take, connecting included (Discord: 3 s).
    pub deadline: Duration,
    /// The TLS client configuration for `https` URLs; `None`: https URLs fail.
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

impl Validation {
    /// Probes signed with `secret_seed`, Discord's 3-second deadline, http only.
    #[must_use]
    pub fn new(secret_seed: [u8; 32]) -> Self {
        Self {
            secret_seed,
            deadline: Duration::from_secs(3),
            tls: None,
        }
    }

    /// Each probe within `deadline` instead (tests keep their total time small).
    #[must_use]
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }

    /// Validates `https` URLs whose certificates chain to `roots`.
    #[must_use]
    pub fn trusting(mut self, roots: rustls::RootCertStore) -> Self {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        self.tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .ok()
            .map(|builder| Arc::new(builder.with_root_certificates(roots).with_no_client_auth()));
        self
    }
}

/// The URL fields Discord validates, with what a signed request must get.
const FIELDS: [(&str, &str, &[u8], u16); 2] = [
    (
        "interactions_endpoint_url",
        "APPLICATION_INTERACTIONS_ENDPOINT_URL_INVALID",
        br#"{"type":1}"#,
        200,
    ),
    (
        "event_webhooks_url",
        "APPLICATION_EVENT_WEBHOOKS_URL_INVALID",
        br#"{"version":1,"application_id":"1","type":0}"#,
        204,
    ),
];

/// The answer to a `PATCH /applications/@me` with `body`, after probing each URL it
/// sets; the failures are pushed to `failures` (what the probe saw).
pub(crate) fn validate(validation: &Validation, body: &[u8], failures: &mut Vec<String>) -> Reply {
    let Ok(serde_json::Value::Object(fields)) = serde_json::from_slice(body) else {
        return Reply::status(
            400,
            r#"{"code":50109,"message":"The request body contains invalid JSON."}"#,
        );
    };
    let mut errors = serde_json::Map::new();
    for (field, code, ping, expected) in FIELDS {
        let Some(url) = fields.get(field).and_then(serde_json::Value::as_str) else {
            continue;
        };
        if url.is_empty() {
            continue;
        }
        if let Err(why) = probe_url(validation, url, ping, expected) {
            failures.push(format!("{field} {url}: {why}"));
            let message = match field {
                "interactions_endpoint_url" => {
                    "The specified interactions endpoint url could not be verified."
                }
                _ => "The specified event webhooks url could not be verified.",
            };
            errors.insert(
                field.to_owned(),
                serde_json::json!({"_errors": [{"code": code, "message": message}]}),
            );
        }
    }
    if !errors.is_empty() {
        let body = serde_json::json!({
            "code": 50035, "errors": errors, "message": "Invalid Form Body"
        });
        return Reply::status(400, &body.to_string());
    }
    let mut application = serde_json::json!({
        "id": "1", "name": "mock", "description": "", "icon": null, "bot_public": true,
        "bot_require_code_grant": false,
        "verify_key": demo::public_key_hex(&validation.secret_seed), "flags": 0,
    });
    for (field, _, _, _) in FIELDS {
        if let (Some(object), Some(value)) = (application.as_object_mut(), fields.get(field)) {
            object.insert(field.to_owned(), value.clone());
        }
    }
    if let (Some(object), Some(value)) = (
        application.as_object_mut(),
        fields.get("event_webhooks_status"),
    ) {
        object.insert("event_webhooks_status".to_owned(), value.clone());
    }
    Reply::ok(&application.to_string())
}

/// Discord's two probes: `ping` signed must get `expected`, badly signed must get 401.
fn probe_url(validation: &Validation, url: &str, ping: &[u8], expected: u16) -> Result<(), String> {
    let timestamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        .to_string();
    let signature = demo::sign(&validation.secret_seed, &timestamp, ping);
    let (status, body) = exchange(validation, url, &signature, &timestamp, ping)?;
    let body_ok = expected != 200
        || serde_json::from_slice::<serde_json::Value>(&body)
            .is_ok_and(|v| v.get("type").and_then(serde_json::Value::as_u64) == Some(1));
    if status != expected || !body_ok {
        return Err(format!(
            "the signed PING got {status} {}; expected {expected}{}",
            String::from_utf8_lossy(&body),
            if expected == 200 { " {\"type\":1}" } else { "" }
        ));
    }
    let bad = format!("0{}", &signature[1..]);
    let bad = if bad == signature {
        format!("1{}", &signature[1..])
    } else {
        bad
    };
    let (status, _) = exchange(validation, url, &bad, &timestamp, ping)?;
    if status != 401 {
        return Err(format!(
            "the PING with a bad signature got {status}; expected 401"
        ));
    }
    Ok(())
}

/// Where a URL points.
struct Target<'a> {
    tls: bool,
    host: &'a str,
    port: u16,
    authority: &'a str,
    path: &'a str,
}

fn parse(url: &str) -> Result<Target<'_>, String> {
    let (tls, rest) = if let Some(rest) = url.strip_prefix("https://") {
        (true, rest)
    } else if let Some(rest) = url.strip_prefix("http://") {
        (false, rest)
    } else {
        return Err(format!("{url} is not an http(s) URL"));
    };
    let split = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(split);
    let path = if path.is_empty() { "/" } else { path };
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) => (
            host,
            port.parse().map_err(|_| format!("bad port in {url}"))?,
        ),
        None => (authority, if tls { 443 } else { 80 }),
    };
    Ok(Target {
        tls,
        host,
        port,
        authority,
        path,
    })
}

/// One POST, bounded by the deadline from connecting to the last byte.
fn exchange(
    validation: &Validation,
    url: &str,
    signature: &str,
    timestamp: &str,
    body: &[u8],
) -> Result<(u16, Vec<u8>), String> {
    let target = parse(url)?;
    let deadline = Instant::now() + validation.deadline;
    let head = format!(
        "POST {} HTTP/1.1\r\nhost: {}\r\nuser-agent: Discord-Interactions/1.0 (+https://discord.com)\r\n\
         content-type: application/json\r\ncontent-length: {}\r\nx-signature-ed25519: {signature}\r\n\
         x-signature-timestamp: {timestamp}\r\nconnection: close\r\n\r\n",
        target.path,
        target.authority,
        body.len()
    );
    let mut wire = head.into_bytes();
    wire.extend_from_slice(body);
    let mut stream = open(validation, &target, deadline)?;
    let stream = stream.as_mut();
    bounded(stream, deadline, validation.deadline, |s| {
        s.write_all(&wire)?;
        s.flush()
    })?;
    let mut buf = Vec::new();
    loop {
        let mut chunk = [0_u8; 8192];
        let n = bounded(stream, deadline, validation.deadline, |s| {
            s.read(&mut chunk)
        })?;
        buf.extend_from_slice(&chunk[..n]);
        if let Some(done) = complete(&mut buf, n == 0)? {
            return Ok(done);
        }
        if n == 0 {
            return Err("the connection closed before a whole response".to_owned());
        }
    }
}

fn late(within: Duration) -> String {
    format!("no answer within {within:?}")
}

/// A connection to `target` (TLS for https), opened before `deadline`.
fn open(
    validation: &Validation,
    target: &Target<'_>,
    deadline: Instant,
) -> Result<Box<dyn ReadWrite>, String> {
    let addr = (target.host, target.port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {}: {e}", target.host))?
        .next()
        .ok_or_else(|| format!("{} has no address", target.host))?;
    let left = deadline
        .checked_duration_since(Instant::now())
        .filter(|d| !d.is_zero())
        .ok_or_else(|| late(validation.deadline))?;
    let tcp = TcpStream::connect_timeout(&addr, left)
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    let socket = tcp.try_clone().map_err(|e| e.to_string())?;
    if !target.tls {
        return Ok(Box::new(Timed(tcp, socket)));
    }
    let config = validation
        .tls
        .clone()
        .ok_or_else(|| "https URLs need a TLS configuration (Validation::trusting)".to_owned())?;
    let name = rustls::pki_types::ServerName::try_from(target.host.to_owned())
        .map_err(|e| format!("bad server name {}: {e}", target.host))?;
    let tls = rustls::ClientConnection::new(config, name)
        .map_err(|e| format!("TLS setup failed: {e}"))?;
    Ok(Box::new(Timed(rustls::StreamOwned::new(tls, tcp), socket)))
}

/// Runs one IO step on `stream` with its socket timeouts set to the time left.
fn bounded<T>(
    stream: &mut dyn ReadWrite,
    deadline: Instant,
    within: Duration,
    step: impl FnOnce(&mut dyn ReadWrite) -> io::Result<T>,
) -> Result<T, String> {
    let left = deadline
        .checked_duration_since(Instant::now())
        .filter(|d| !d.is_zero())
        .ok_or_else(|| late(within))?;
    stream.limit(left).map_err(|e| e.to_string())?;
    step(stream).map_err(|e| match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => late(within),
        _ => e.to_string(),
    })
}

/// The response in `buf`, once whole (`eof`: nothing more will come).
fn complete(buf: &mut Vec<u8>, eof: bool) -> Result<Option<(u16, Vec<u8>)>, String> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
    let status: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("not an HTTP response: {head}"))?;
    if (100..200).contains(&status) {
        buf.drain(..end + 4);
        return complete(buf, eof);
    }
    let header = |name: &str| {
        head.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_owned())
    };
    let body = &buf[end + 4..];
    if header("transfer-encoding:").is_some_and(|v| v.contains("chunked")) {
        let mut rest = body.to_vec();
        return Ok(
            crate::mock_discord::read_chunked(&mut io::empty(), &mut rest)
                .map(|body| (status, body)),
        );
    }
    match header("content-length:").and_then(|v| v.parse::<usize>().ok()) {
        Some(length) if body.len() >= length => Ok(Some((status, body[..length].to_vec()))),
        Some(_) => Ok(None),
        None if status == 204 || status == 304 || eof => Ok(Some((status, body.to_vec()))),
        None => Ok(None),
    }
}

/// A stream whose socket timeouts can be set.
trait ReadWrite: Read + Write {
    fn limit(&self, timeout: Duration) -> io::Result<()>;
}

/// A stream and the socket under it.
struct Timed<S>(S, TcpStream);

impl<S: Read> Read for Timed<S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

impl<S: Write> Write for Timed<S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

impl<S: Read + Write> ReadWrite for Timed<S> {
    fn limit(&self, timeout: Duration) -> io::Result<()> {
        self.1.set_read_timeout(Some(timeout))?;
        self.1.set_write_timeout(Some(timeout))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::net::TcpListener;
    use std::thread;

    use yuyo_core::endpoint::Verifier;

    use super::*;
    use crate::mock_discord::read_request;

    /// An endpoint on 127.0.0.1 for `connections` connections: `verify` (check the demo
    /// signature) or accept everything, after `delay` (the behaviour under test).
    fn endpoint(verify: bool, delay: Duration, connections: usize) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let verifier = Verifier::from_hex(demo::DEMO_PUBLIC_KEY_HEX).unwrap();
        thread::spawn(move || {
            for stream in listener.incoming().take(connections) {
                let mut stream = stream.unwrap();
                stream
                    .set_read_timeout(Some(Duration::from_secs(5)))
                    .unwrap();
                let Some(request) = read_request(&mut stream, &mut Vec::new()) else {
                    continue;
                };
                let signature = request
                    .header("x-signature-ed25519")
                    .and_then(|s| hex::decode(s).ok())
                    .and_then(|s| <[u8; 64]>::try_from(s).ok());
                let timestamp = request.header("x-signature-timestamp").unwrap_or("");
                let valid = signature.is_some_and(|s| {
                    verifier
                        .verify(timestamp.as_bytes(), &request.body, &s)
                        .is_ok()
                });
                thread::sleep(delay);
                let answer: &[u8] = if valid || !verify {
                    b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n{\"type\":1}"
                } else {
                    b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 0\r\n\r\n"
                };
                let _ = stream.write_all(answer);
            }
        });
        format!("http://{addr}/interactions")
    }

    fn patch(url: &str) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({ "interactions_endpoint_url": url })).unwrap()
    }

    #[test]
    fn a_correct_endpoint_is_saved() {
        let url = endpoint(true, Duration::ZERO, 2);
        let mut failures = Vec::new();
        let reply = validate(
            &Validation::new(demo::DEMO_SECRET_SEED),
            &patch(&url),
            &mut failures,
        );
        assert_eq!(reply.status, 200, "{failures:?}");
        let application: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
        assert_eq!(application["interactions_endpoint_url"], url.as_str());
        assert_eq!(application["verify_key"], demo::DEMO_PUBLIC_KEY_HEX);
    }

    #[test]
    fn an_endpoint_accepting_bad_signatures_gets_discords_error() {
        let url = endpoint(false, Duration::ZERO, 2);
        let mut failures = Vec::new();
        let reply = validate(
            &Validation::new(demo::DEMO_SECRET_SEED),
            &patch(&url),
            &mut failures,
        );
        assert_eq!(reply.status, 400);
        let body: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"code": 50035, "errors": {"interactions_endpoint_url": {"_errors": [{
                "code": "APPLICATION_INTERACTIONS_ENDPOINT_URL_INVALID",
                "message": "The specified interactions endpoint url could not be verified."
            }]}}, "message": "Invalid Form Body"})
        );
        assert_eq!(
            failures,
            [format!(
                "interactions_endpoint_url {url}: the PING with a bad signature got 200; expected 401"
            )]
        );
    }

    #[test]
    fn a_slow_or_wrongly_keyed_endpoint_fails() {
        let url = endpoint(true, Duration::from_millis(400), 1);
        let validation =
            Validation::new(demo::DEMO_SECRET_SEED).deadline(Duration::from_millis(100));
        let mut failures = Vec::new();
        assert_eq!(
            validate(&validation, &patch(&url), &mut failures).status,
            400
        );
        assert!(
            failures[0].ends_with("no answer within 100ms"),
            "{failures:?}"
        );

        let url = endpoint(true, Duration::ZERO, 1);
        let mut failures = Vec::new();
        assert_eq!(
            validate(&Validation::new([9; 32]), &patch(&url), &mut failures).status,
            400
        );
        assert!(
            failures[0].contains("the signed PING got 401"),
            "{failures:?}"
        );
    }
}
