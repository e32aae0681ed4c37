//! The fresh client: what Discord's next request sees while the attack holds its
//! connections. One signed PING on a new connection, within a deadline, blocking (it runs on
//! its own thread so that the attack's tasks cannot delay it).

use std::collections::BTreeMap;
use std::io::{ErrorKind, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;

use crate::request::{PING, parse_response, ping_request};

/// How one PING went: answered (200 `{"type":1}`) after this long, or why not.
pub type Outcome = Result<Duration, String>;

/// Sends one signed PING on a new connection and waits for the answer, all within
/// `timeout` (connect included).
pub fn ping(addr: SocketAddr, key: &SigningKey, timeout: Duration) -> Outcome {
    let started = Instant::now();
    let deadline = started + timeout;
    let mut stream =
        TcpStream::connect_timeout(&addr, timeout).map_err(|e| label("connect", &e))?;
    let request = ping_request(key);
    stream
        .set_write_timeout(Some(remaining(deadline)?))
        .map_err(|e| label("socket", &e))?;
    stream.write_all(&request).map_err(|e| label("write", &e))?;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    let response = loop {
        stream
            .set_read_timeout(Some(remaining(deadline)?))
            .map_err(|e| label("socket", &e))?;
        let eof = match stream.read(&mut chunk) {
            Ok(0) => true,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                false
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(label("read", &e)),
        };
        if let Some(response) = parse_response(&buf, eof)? {
            break response;
        }
        if eof {
            return Err(if buf.is_empty() {
                "closed"
            } else {
                "truncated"
            }
            .to_owned());
        }
    };
    let elapsed = started.elapsed();
    if response.status != 200 {
        return Err(format!("status-{}", response.status));
    }
    if response.body != PING {
        return Err("wrong-body".to_owned());
    }
    Ok(elapsed)
}

/// The time left until `deadline`, or the timeout error if none is.
fn remaining(deadline: Instant) -> Result<Duration, String> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        Err("timeout".to_owned())
    } else {
        Ok(left)
    }
}

/// A short, space-free name for an IO error at `step`: timeouts are one kind whatever the
/// step (what the fresh client sees is "no answer in time").
fn label(step: &str, error: &std::io::Error) -> String {
    match error.kind() {
        ErrorKind::TimedOut | ErrorKind::WouldBlock => "timeout".to_owned(),
        kind => format!("{step}-{kind:?}"),
    }
}

/// All the fresh client's PINGs of a run.
#[derive(Debug, Default)]
pub struct Pings {
    /// The latencies of the answered PINGs.
    pub answered: Vec<Duration>,
    /// How many were sent.
    pub total: usize,
    /// The failures by kind.
    pub errors: BTreeMap<String, usize>,
}

impl Pings {
    /// Adds one PING's outcome.
    pub fn add(&mut self, outcome: Outcome) {
        self.total += 1;
        match outcome {
            Ok(latency) => self.answered.push(latency),
            Err(kind) => *self.errors.entry(kind).or_default() += 1,
        }
    }

    /// The nearest-rank percentile `p` (0–100) of the answered PINGs' latencies in ms
    /// (with fewer than 100 answers, p99 is the maximum).
    pub fn percentile_ms(&self, p: f64) -> Option<f64> {
        let mut sorted = self.answered.clone();
        sorted.sort_unstable();
        let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
        let index = rank.clamp(1, sorted.len().max(1)) - 1;
        sorted.get(index).map(|d| d.as_secs_f64() * 1000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn p99_of_few_answers_is_the_maximum() {
        let mut pings = Pings::default();
        for ms in [5, 1, 3] {
            pings.add(Ok(Duration::from_millis(ms)));
        }
        pings.add(Err("timeout".to_owned()));
        assert_eq!(pings.percentile_ms(50.0), Some(3.0));
        assert_eq!(pings.percentile_ms(99.0), Some(5.0));
        assert_eq!(Pings::default().percentile_ms(50.0), None);
    }
}
