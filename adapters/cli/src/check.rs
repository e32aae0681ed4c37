//! `yuyo check`: the probes Discord runs when an interactions endpoint URL (or an event
//! webhooks URL) is saved, each within Discord's 3-second deadline, plus the TLS
//! certificate for https URLs.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use http::Method;
use yuyo_demo as demo;

use crate::client::{self, Request, Response, Target};
use crate::tls::Tls;
use crate::{CheckArgs, keys, unix_now};

/// A certificate expiring sooner than this is worth a note.
const RENEW_WITHIN_DAYS: i64 = 14;
/// The PING Discord sends to an interactions endpoint.
const PING: &[u8] = br#"{"type":1}"#;
/// The PING Discord sends to an event webhooks URL.
const EVENT_PING: &[u8] = br#"{"version":1,"application_id":"1","type":0}"#;
/// Why the signed PING is not checked without a key.
const NEEDS_KEY: &str = "needs the key Discord signs with (give a test key the endpoint is \
                         configured with as --secret-key), or let Discord check: use `yuyo register`";

/// What one probe concluded.
enum Verdict {
    Pass,
    Fail(String),
    Skip(String),
}

/// One probe: what to send, and what the answer must be.
struct Probe {
    name: &'static str,
    method: Method,
    content_type: Option<&'static str>,
    /// The signature and timestamp headers, if sent.
    signature: Option<(String, String)>,
    body: &'static [u8],
    judge: fn(&Response) -> Result<(), String>,
    /// Why it is not sent, if it is not.
    skip: Option<&'static str>,
}

/// Runs `yuyo check`: prints PASS/FAIL/SKIP per probe with its latency; fails if any
/// probe failed.
pub fn run(args: &CheckArgs) -> Result<ExitCode, String> {
    let target = Target::parse(&args.url)?;
    let key = signing_key(args)?;
    let tls = match (target.tls, &args.ca) {
        (true, ca) => Some(Tls::new(ca.as_deref())?),
        (false, Some(_)) => return Err("--ca is for https:// URLs".to_owned()),
        (false, None) => None,
    };
    let what = if args.events {
        "event webhooks URL"
    } else {
        "interactions endpoint"
    };
    let deadline = Duration::from_millis(args.deadline_ms);
    println!(
        "checking {} as Discord's {what}, each probe within {deadline:?}",
        args.url
    );
    if let Some(seed) = &key {
        println!(
            "signing with the key of public key {}",
            demo::public_key_hex(seed)
        );
    }
    if !target.tls {
        println!("note: Discord accepts only https:// URLs; this checks the server behind them");
    }
    let mut verdicts = Vec::new();
    if let Some(tls) = &tls {
        let verdict = certificate(&target, tls, deadline);
        let refused = matches!(verdict, Verdict::Fail(_));
        verdicts.push(verdict);
        if refused {
            println!("the probes need a certificate Discord accepts: not run");
            return Ok(summary(&verdicts));
        }
    }
    for probe in probes(args.events, key.as_ref()) {
        verdicts.push(run_probe(&target, tls.as_ref(), &probe, deadline));
    }
    Ok(summary(&verdicts))
}

/// The key to sign with (`--secret-key`), checked against `--public-key`.
fn signing_key(args: &CheckArgs) -> Result<Option<[u8; 32]>, String> {
    let Some(secret) = &args.secret_key else {
        if let Some(given) = &args.public_key {
            return Err(format!(
                "--public-key {given} is checked against the key the probes are signed with: \
                 give the matching --secret-key (its 64-hex-digit seed)"
            ));
        }
        return Ok(None);
    };
    let seed = keys::secret_seed(Some(secret))?;
    let public_key = demo::public_key_hex(&seed);
    if let Some(given) = &args.public_key {
        let (_, given) = keys::verifier(Some(given))?;
        if given != public_key {
            return Err(format!(
                "--public-key {given} does not belong to --secret-key (its public key is \
                 {public_key}); the endpoint would reject every signature"
            ));
        }
    }
    Ok(Some(seed))
}

/// The TLS handshake alone: the certificate must be one Discord accepts.
fn certificate(target: &Target, tls: &Tls, deadline: Duration) -> Verdict {
    const NAME: &str = "TLS certificate";
    let started = Instant::now();
    let verdict = match client::handshake(target, tls, deadline) {
        Ok(Some(cert)) => {
            println!("PASS  {NAME}: {cert}  ({})", millis(started));
            if cert.days_left.is_some_and(|days| days < RENEW_WITHIN_DAYS) {
                println!(
                    "note: the certificate expires in under {RENEW_WITHIN_DAYS} days: renew it"
                );
            }
            return Verdict::Pass;
        }
        Ok(None) => Verdict::Fail("the server showed no certificate".to_owned()),
        Err(why) => Verdict::Fail(why),
    };
    report(NAME, &verdict, started);
    verdict
}

/// The probes, in order.
fn probes(events: bool, key: Option<&[u8; 32]>) -> Vec<Probe> {
    let (ping, expected): (&'static [u8], _) = if events {
        (EVENT_PING, "signed event PING answered 204")
    } else {
        (PING, "signed PING answered 200 {\"type\":1}")
    };
    let timestamp = unix_now();
    // Without a key, a demo signature (corrupted below, so it is no one's).
    let signature = demo::sign(key.unwrap_or(&demo::DEMO_SECRET_SEED), &timestamp, ping);
    let signed = Some((signature.clone(), timestamp.clone()));
    let json = Some("application/json");
    let post = |name, content_type, signature, judge| Probe {
        name,
        method: Method::POST,
        content_type,
        signature,
        body: ping,
        judge,
        skip: None,
    };
    let mut probes = Vec::new();
    if events {
        probes.push(post(expected, json, signed.clone(), event_acknowledged));
    } else {
        probes.push(post(expected, json, signed.clone(), pong));
    }
    if key.is_none() {
        probes[0].skip = Some(NEEDS_KEY);
    }
    let corrupted = Some((corrupt(&signature), timestamp));
    probes.push(post(
        "PING without signature headers answered 401",
        json,
        None,
        unsigned,
    ));
    probes.push(post(
        "PING with a corrupted signature answered 401",
        json,
        corrupted,
        bad_signature,
    ));
    if !events {
        probes.push(post(
            "PING sent as text/plain answered 4xx",
            Some("text/plain"),
            signed,
            not_json,
        ));
    }
    probes.push(Probe {
        name: "GET answered with no 2xx",
        method: Method::GET,
        content_type: None,
        signature: None,
        body: b"",
        judge: not_get,
        skip: None,
    });
    probes
}

/// Sends one probe, prints and returns its verdict.
fn run_probe(target: &Target, tls: Option<&Tls>, probe: &Probe, deadline: Duration) -> Verdict {
    let started = Instant::now();
    if let Some(why) = probe.skip {
        let verdict = Verdict::Skip(why.to_owned());
        report(probe.name, &verdict, started);
        return verdict;
    }
    let mut headers = Vec::new();
    if let Some(content_type) = probe.content_type {
        headers.push(("Content-Type", content_type));
    }
    if let Some((signature, timestamp)) = &probe.signature {
        headers.push(("X-Signature-Ed25519", signature.as_str()));
        headers.push(("X-Signature-Timestamp", timestamp.as_str()));
    }
    let request = Request {
        method: &probe.method,
        headers: &headers,
        body: probe.body,
    };
    let verdict = match client::send(target, tls, request, deadline) {
        Ok(response) => match (probe.judge)(&response) {
            Ok(()) => Verdict::Pass,
            Err(why) => Verdict::Fail(why),
        },
        Err(why) if why.contains("no complete response within") => Verdict::Fail(format!(
            "{why}: Discord gives up after {deadline:?} (answer first, work later: defer, or \
             reply through REST)"
        )),
        Err(why) => Verdict::Fail(why),
    };
    report(probe.name, &verdict, started);
    verdict
}

fn millis(started: Instant) -> String {
    format!("{} ms", started.elapsed().as_millis())
}

fn report(name: &str, verdict: &Verdict, started: Instant) {
    match verdict {
        Verdict::Pass => println!("PASS  {name}  ({})", millis(started)),
        Verdict::Fail(why) => println!("FAIL  {name}: {why}  ({})", millis(started)),
        Verdict::Skip(why) => println!("SKIP  {name}: not checked: {why}"),
    }
}

/// The last line, and the exit code.
fn summary(verdicts: &[Verdict]) -> ExitCode {
    let failed = verdicts
        .iter()
        .filter(|v| matches!(v, Verdict::Fail(_)))
        .count();
    let skipped = verdicts
        .iter()
        .filter(|v| matches!(v, Verdict::Skip(_)))
        .count();
    let checked = verdicts.len() - skipped;
    let not_checked = match skipped {
        0 => String::new(),
        n => format!(" ({n} not checked)"),
    };
    if failed == 0 {
        println!("all {checked} probes passed{not_checked}: Discord would accept this URL");
        ExitCode::SUCCESS
    } else {
        println!("{failed} of {checked} probes failed{not_checked}: Discord would refuse this URL");
        ExitCode::FAILURE
    }
}

/// `got STATUS BODY`.
fn got(response: &Response) -> String {
    format!("got {} {}", response.status, excerpt(&response.body))
}

fn pong(response: &Response) -> Result<(), String> {
    if response.status == 401 {
        return Err(format!(
            "{}: the endpoint refused the signature; is it configured with the public key \
             of --secret-key?",
            got(response)
        ));
    }
    if response.status != 200 {
        return Err(format!(
            "{}: Discord expects 200 {{\"type\":1}}",
            got(response)
        ));
    }
    match serde_json::from_slice::<serde_json::Value>(&response.body) {
        Ok(value) if value.get("type").and_then(serde_json::Value::as_u64) == Some(1) => Ok(()),
        Ok(_) | Err(_) => Err(format!(
            "{}: the body is not JSON {{\"type\":1}}",
            got(response)
        )),
    }
}

fn event_acknowledged(response: &Response) -> Result<(), String> {
    match response.status {
        204 => Ok(()),
        401 => Err(format!(
            "{}: the endpoint refused the signature; is it configured with the public key \
             of --secret-key?",
            got(response)
        )),
        _ => Err(format!(
            "{}: Discord expects 204 (no content) for an event webhook PING",
            got(response)
        )),
    }
}

/// A request Discord did not sign must get 401; `what` names the flaw.
fn refused_unsigned(response: &Response, what: &str) -> Result<(), String> {
    match response.status {
        401 => Ok(()),
        200..=299 => Err(format!(
            "{}: the endpoint accepts requests with {what}, which anyone can send: it must \
             verify X-Signature-Ed25519 with the application's public key",
            got(response)
        )),
        _ => Err(format!(
            "{}: Discord expects 401 for {what}: the endpoint refuses the request but with \
             the wrong status",
            got(response)
        )),
    }
}

fn unsigned(response: &Response) -> Result<(), String> {
    refused_unsigned(response, "no signature")
}

fn bad_signature(response: &Response) -> Result<(), String> {
    refused_unsigned(response, "a bad signature")
}

fn not_json(response: &Response) -> Result<(), String> {
    if (400..500).contains(&response.status) {
        return Ok(());
    }
    Err(format!(
        "{}: a body not sent as application/json should be refused (415), as Discord only \
         sends JSON",
        got(response)
    ))
}

fn not_get(response: &Response) -> Result<(), String> {
    if (200..300).contains(&response.status) {
        return Err(format!(
            "{}: the endpoint answers GET; Discord only POSTs (405 expected)",
            got(response)
        ));
    }
    Ok(())
}

/// `signature` with its first hex digit changed: still well-formed, no longer valid.
fn corrupt(signature: &str) -> String {
    let mut chars: Vec<char> = signature.chars().collect();
    if let Some(first) = chars.first_mut() {
        *first = if *first == '0' { '1' } else { '0' };
    }
    chars.into_iter().collect()
}

/// A short, printable view of a body.
fn excerpt(body: &[u8]) -> String {
    const MAX: usize = 200;
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        "(empty body)".to_owned()
    } else if text.chars().count() > MAX {
        format!("{}…", text.chars().take(MAX).collect::<String>())
    } else {
        text.to_owned()
    }
}
