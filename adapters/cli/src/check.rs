//! `yuyo check`: the probes Discord runs when an interactions endpoint URL is saved.

use std::process::ExitCode;

use yuyo_demo as demo;

use crate::client::{self, Response, Target};
use crate::{CheckArgs, keys, unix_now};

/// The PING body Discord sends.
const PING: &[u8] = br#"{"type":1}"#;

/// Runs `yuyo check`: prints PASS/FAIL per probe; fails if any probe failed.
pub fn run(args: &CheckArgs) -> Result<ExitCode, String> {
    let target = Target::parse(&args.url)?;
    let seed = keys::secret_seed(args.secret_key.as_deref())?;
    let public_key = demo::public_key_hex(&seed);
    if let Some(given) = &args.public_key {
        let (_, given) = keys::verifier(Some(given))?;
        if given != public_key && args.secret_key.is_none() {
            return Err(format!(
                "--public-key {given} is not the demo key: give the matching --secret-key \
                 (its 64-hex-digit seed) so that the probes are signed for it"
            ));
        }
        if given != public_key {
            return Err(format!(
                "--public-key {given} does not belong to --secret-key (its public key is \
                 {public_key}); the endpoint would reject every signature"
            ));
        }
    }
    println!(
        "checking {} (requests signed for public key {public_key})",
        args.url
    );

    let timestamp = unix_now();
    let signature = demo::sign(&seed, &timestamp, PING);
    let probes = [
        probe_ping(&target, &signature, &timestamp),
        probe_bad_signature(&target, &corrupt(&signature), &timestamp),
    ];
    let failed = probes.iter().filter(|passed| !**passed).count();
    if failed == 0 {
        println!(
            "all {} probes passed: Discord would accept this URL",
            probes.len()
        );
        Ok(ExitCode::SUCCESS)
    } else {
        println!(
            "{failed} of {} probes failed: Discord would refuse this URL",
            probes.len()
        );
        Ok(ExitCode::FAILURE)
    }
}

/// Sends a PING signed with `signature`.
fn send_ping(target: &Target, signature: &str, timestamp: &str) -> Result<Response, String> {
    client::post(
        target,
        &[
            ("Content-Type", "application/json"),
            ("X-Signature-Ed25519", signature),
            ("X-Signature-Timestamp", timestamp),
        ],
        PING,
    )
}

/// Probe 1: a correctly signed PING gets 200 with JSON `{"type":1}`.
fn probe_ping(target: &Target, signature: &str, timestamp: &str) -> bool {
    const NAME: &str = "signed PING answered 200 {\"type\":1}";
    let verdict = send_ping(target, signature, timestamp).and_then(|response| {
        if response.status != 200 {
            return Err(format!(
                "got {} {} (is the public key right?)",
                response.status,
                excerpt(&response.body)
            ));
        }
        match serde_json::from_slice::<serde_json::Value>(&response.body) {
            Ok(value) if value.get("type").and_then(serde_json::Value::as_u64) == Some(1) => Ok(()),
            Ok(_) | Err(_) => Err(format!(
                "got 200 but the body is not JSON {{\"type\":1}}: {}",
                excerpt(&response.body)
            )),
        }
    });
    report(NAME, verdict)
}

/// Probe 2: the same PING with a corrupted signature gets 401.
fn probe_bad_signature(target: &Target, signature: &str, timestamp: &str) -> bool {
    const NAME: &str = "PING with a corrupted signature answered 401";
    let verdict = send_ping(target, signature, timestamp).and_then(|response| {
        if response.status == 401 {
            Ok(())
        } else {
            Err(format!(
                "got {} {}: the endpoint accepts requests Discord did not sign",
                response.status,
                excerpt(&response.body)
            ))
        }
    });
    report(NAME, verdict)
}

fn report(name: &str, verdict: Result<(), String>) -> bool {
    match verdict {
        Ok(()) => {
            println!("PASS  {name}");
            true
        }
        Err(why) => {
            println!("FAIL  {name}: {why}");
            false
        }
    }
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
