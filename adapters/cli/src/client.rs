//! A tiny HTTP/1.1 client over `std::net` for `yuyo check`: plain http only, one request
//! per connection, every step bounded by a timeout and a size limit.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// Connect, read and write timeout.
const TIMEOUT: Duration = Duration::from_secs(10);
/// Largest response head accepted.
const MAX_HEAD: usize = 64 * 1024;
/// Largest response body accepted.
const MAX_BODY: usize = 1024 * 1024;

/// Where to send requests, from an `http://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Host name or address (IPv6 without brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// The `Host` header value.
    pub authority: String,
    /// Path and query, at least `/`.
    pub path: String,
}

impl Target {
    /// Parses `http://host[:port][/path][?query]`.
    pub fn parse(url: &str) -> Result<Self, String> {
        let lower = url.to_ascii_lowercase();
        if lower.starts_with("https://") {
            return Err(format!(
                "{url}: https:// URLs are not supported; yuyo check speaks plain http only \
                 (check the server behind your TLS terminator, e.g. http://127.0.0.1:8080/)"
            ));
        }
        let Some(rest) = lower
            .starts_with("http://")
            .then(|| &url["http://".len()..])
        else {
            return Err(format!("{url}: expected a URL starting with http://"));
        };
        let split = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(split);
        let tail = tail.split('#').next().unwrap_or("");
        let path = if tail.starts_with('/') {
            tail.to_owned()
        } else {
            format!("/{tail}")
        };
        if authority.is_empty() || authority.contains('@') {
            return Err(format!("{url}: expected http://host[:port]/path"));
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) = v6
                .split_once(']')
                .ok_or_else(|| format!("{url}: unterminated IPv6 address"))?;
            (host, after.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            }
        };
        let port = match port {
            Some(port) => port
                .parse()
                .map_err(|_| format!("{url}: bad port `{port}`"))?,
            None => 80,
        };
        Ok(Self {
            host: host.to_owned(),
            port,
            authority: authority.to_owned(),
            path,
        })
    }
}

/// A response: status, headers (names lower-cased) and body.
#[derive(Debug, Clone)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Header fields, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked.
    pub body: Vec<u8>,
}

impl Response {
    /// The first header named `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// POSTs `body` to `target` with the extra `headers`, on a new connection.
pub fn post(target: &Target, headers: &[(&str, &str)], body: &[u8]) -> Result<Response, String> {
    let addrs = (target.host.as_str(), target.port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {}: {e}", target.host))?;
    let mut last = format!("{} resolved to no address", target.host);
    let mut stream = None;
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, TIMEOUT) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = format!("cannot connect to {addr}: {e}"),
        }
    }
    let mut stream = stream.ok_or(last)?;
    stream
        .set_read_timeout(Some(TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(TIMEOUT)))
        .map_err(|e| format!("socket setup failed: {e}"))?;

    let mut request = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: yuyo-check/{}\r\nContent-Length: {}\r\n\
         Connection: close\r\n",
        target.path,
        target.authority,
        env!("CARGO_PKG_VERSION"),
        body.len()
    );
    for (name, value) in headers {
        request.push_str(name);
        request.push_str(": ");
        request.push_str(value);
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    let mut bytes = request.into_bytes();
    bytes.extend_from_slice(body);
    stream
        .write_all(&bytes)
        .map_err(|e| format!("cannot send the request: {e}"))?;
    read_response(&mut stream).map_err(|e| format!("bad or no response: {e}"))
}

/// Buffered reading from the socket.
struct Reader<'a> {
    stream: &'a mut TcpStream,
    buf: Vec<u8>,
    eof: bool,
}

impl Reader<'_> {
    /// Reads more; `false` at end of stream.
    fn fill(&mut self) -> Result<bool, String> {
        if self.eof {
            return Ok(false);
        }
        let mut chunk = [0u8; 8192];
        let n = loop {
            match self.stream.read(&mut chunk) {
                Ok(n) => break n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.to_string()),
            }
        };
        self.buf.extend_from_slice(&chunk[..n]);
        self.eof = n == 0;
        Ok(n > 0)
    }

    /// Takes `n` bytes, reading as needed.
    fn take(&mut self, n: usize) -> Result<Vec<u8>, String> {
        while self.buf.len() < n {
            if !self.fill()? {
                return Err("connection closed inside the body".to_owned());
            }
        }
        Ok(self.buf.drain(..n).collect())
    }

    /// Takes one CRLF-terminated line (without the CRLF).
    fn line(&mut self) -> Result<Vec<u8>, String> {
        loop {
            if let Some(at) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = self.buf.drain(..at + 2).take(at).collect();
                return Ok(line);
            }
            if self.buf.len() > MAX_HEAD {
                return Err("line too long".to_owned());
            }
            if !self.fill()? {
                return Err("connection closed inside a chunked body".to_owned());
            }
        }
    }
}

fn read_response(stream: &mut TcpStream) -> Result<Response, String> {
    let mut reader = Reader {
        stream,
        buf: Vec::new(),
        eof: false,
    };
    loop {
        let mut fields = [httparse::EMPTY_HEADER; 64];
        let mut parsed = httparse::Response::new(&mut fields);
        let head_len = match parsed.parse(&reader.buf).map_err(|e| e.to_string())? {
            httparse::Status::Complete(len) => len,
            httparse::Status::Partial => {
                if reader.buf.len() > MAX_HEAD {
                    return Err("response head too large".to_owned());
                }
                if !reader.fill()? {
                    return Err(if reader.buf.is_empty() {
                        "the connection closed without a response".to_owned()
                    } else {
                        "the connection closed inside the response head".to_owned()
                    });
                }
                continue;
            }
        };
        let status = parsed.code.unwrap_or(0);
        let headers: Vec<(String, String)> = parsed
            .headers
            .iter()
            .map(|h| {
                (
                    h.name.to_ascii_lowercase(),
                    String::from_utf8_lossy(h.value).trim().to_owned(),
                )
            })
            .collect();
        reader.buf.drain(..head_len);
        if (100..200).contains(&status) {
            continue; // interim response
        }
        let mut response = Response {
            status,
            headers,
            body: Vec::new(),
        };
        let chunked = response
            .header("transfer-encoding")
            .is_some_and(|te| te.to_ascii_lowercase().contains("chunked"));
        if status == 204 || status == 304 {
        } else if chunked {
            response.body = read_chunked(&mut reader)?;
        } else if let Some(length) = response.header("content-length") {
            let length: usize = length
                .parse()
                .map_err(|_| format!("bad Content-Length `{length}`"))?;
            if length > MAX_BODY {
                return Err(format!("response body of {length} bytes is too large"));
            }
            response.body = reader.take(length)?;
        } else {
            while reader.fill()? {
                if reader.buf.len() > MAX_BODY {
                    return Err("response body too large".to_owned());
                }
            }
            response.body = std::mem::take(&mut reader.buf);
        }
        return Ok(response);
    }
}

fn read_chunked(reader: &mut Reader<'_>) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    loop {
        let line = reader.line()?;
        let line = String::from_utf8_lossy(&line);
        let size = line.split(';').next().unwrap_or("").trim();
        let size =
            usize::from_str_radix(size, 16).map_err(|_| format!("bad chunk size `{size}`"))?;
        if size == 0 {
            // Trailers, up to the empty line.
            while !reader.line()?.is_empty() {}
            return Ok(body);
        }
        if body.len() + size > MAX_BODY {
            return Err("response body too large".to_owned());
        }
        body.extend(reader.take(size)?);
        if !reader.line()?.is_empty() {
            return Err("chunk not followed by CRLF".to_owned());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Target;

    #[test]
    fn parses_urls() {
        let t = Target::parse("http://127.0.0.1:8080/interactions?x=1")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (t.host.as_str(), t.port, t.path.as_str()),
            ("127.0.0.1", 8080, "/interactions?x=1")
        );
        let t = Target::parse("http://example.com").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (t.host.as_str(), t.port, t.path.as_str()),
            ("example.com", 80, "/")
        );
        let t = Target::parse("http://[::1]:9/").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (t.host.as_str(), t.port, t.authority.as_str()),
            ("::1", 9, "[::1]:9")
        );
        assert!(Target::parse("https://example.com/").is_err_and(|e| e.contains("not supported")));
        assert!(Target::parse("ftp://example.com/").is_err());
        assert!(Target::parse("http://h:x/").is_err());
    }
}
