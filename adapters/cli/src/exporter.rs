//! `yuyo serve --metrics ADDR`: the Prometheus recorder, and `GET /metrics` served on
//! its own thread (so it runs beside any `--runtime`).
//!
//! The listener is bound here, so port 0 works and the bound address can be announced.
//! Requests are answered one at a time, each within [`IO_TIMEOUT`], with
//! `Connection: close`: a scraper needs no more.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use yuyo_core::metrics::{BATCH_BUCKETS, SECONDS_BUCKETS, VERIFY_BATCH_SIZE};

/// How long a scrape may take to send its request or read the answer.
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// The largest request head read; longer ones get a 431.
const MAX_HEAD: usize = 8 * 1024;

/// How often histograms are drained when nobody scrapes (bounds their memory).
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// Installs the Prometheus recorder as the global one, binds `bind` and serves
/// `/metrics` there from a thread; returns the bound address. Call it before building
/// the service, so the handles it caches are the recorder's.
pub fn start(bind: SocketAddr) -> Result<SocketAddr, String> {
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
        .and_then(|b| {
            b.set_buckets_for_metric(Matcher::Full(VERIFY_BATCH_SIZE.into()), BATCH_BUCKETS)
        })
        .map_err(|e| format!("--metrics: {e}"))?
        .build_recorder();
    let handle = recorder.handle();
    let listener =
        TcpListener::bind(bind).map_err(|e| format!("--metrics: cannot listen on {bind}: {e}"))?;
    let addr = listener
        .local_addr()
        .map_err(|e| format!("--metrics: cannot listen on {bind}: {e}"))?;
    metrics::set_global_recorder(recorder)
        .map_err(|_| "--metrics: a metrics recorder is already installed".to_owned())?;
    yuyo_core::metrics::describe();
    let upkeep = handle.clone();
    spawn("yuyo-metrics-upkeep", move || {
        loop {
            std::thread::sleep(UPKEEP_EVERY);
            upkeep.run_upkeep();
        }
    })?;
    spawn("yuyo-metrics", move || {
        for stream in listener.incoming() {
            match stream {
                Ok(stream) => {
                    if let Err(error) = answer(stream, &handle) {
                        tracing::debug!(%error, "metrics scrape failed");
                    }
                }
                Err(error) => tracing::debug!(%error, "metrics: accept failed"),
            }
        }
    })?;
    Ok(addr)
}

fn spawn(name: &str, work: impl FnOnce() + Send + 'static) -> Result<(), String> {
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(work)
        .map(drop)
        .map_err(|e| format!("--metrics: cannot start a thread: {e}"))
}

/// Reads one request head and answers it: the metrics for `GET /metrics`, else an error.
fn answer(mut stream: TcpStream, handle: &PrometheusHandle) -> std::io::Result<()> {
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let head = match read_head(&mut stream)? {
        Some(head) => head,
        None => return respond(&mut stream, "431 Request Header Fields Too Large", ""),
    };
    let mut parts = head.split(' ');
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    match (method, path) {
        ("GET", "/metrics") => respond(&mut stream, "200 OK", &handle.render()),
        (_, "/metrics") => respond(&mut stream, "405 Method Not Allowed", ""),
        _ => respond(&mut stream, "404 Not Found", ""),
    }
}

/// The request line, once the whole head (up to the blank line) is in; `None` when
/// the head is longer than [`MAX_HEAD`].
fn read_head(stream: &mut TcpStream) -> std::io::Result<Option<String>> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if head.len() > MAX_HEAD {
            return Ok(None);
        }
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    Ok(Some(String::from_utf8_lossy(line).into_owned()))
}

fn respond(stream: &mut TcpStream, status: &str, body: &str) -> std::io::Result<()> {
    let content_type = if body.is_empty() {
        "text/plain; charset=utf-8"
    } else {
        "text/plain; version=0.0.4; charset=utf-8"
    };
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()
}
