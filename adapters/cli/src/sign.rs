//! `yuyo sign`: the signature headers for a body, and a curl command using them.

use std::process::ExitCode;

use yuyo_demo as demo;

use crate::{SignArgs, keys, shell_quote, unix_now};

/// Runs `yuyo sign`.
pub fn run(args: &SignArgs) -> Result<ExitCode, String> {
    let seed = keys::secret_seed(args.secret_key.as_deref())?;
    let timestamp = args.timestamp.clone().unwrap_or_else(unix_now);
    let (body, data) = match (&args.body, &args.file) {
        (Some(body), _) => (body.clone().into_bytes(), shell_quote(body)),
        (None, Some(path)) => {
            let body =
                std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            (body, shell_quote(&format!("@{}", path.display())))
        }
        (None, None) => return Err("give --body JSON or --file PATH".to_owned()),
    };
    let signature = demo::sign(&seed, &timestamp, &body);
    println!("X-Signature-Ed25519: {signature}");
    println!("X-Signature-Timestamp: {timestamp}");
    println!();
    println!("{}", curl_line(&args.url, &signature, &timestamp, &data));
    Ok(ExitCode::SUCCESS)
}

/// A curl command posting `data` (already shell-quoted; `@file` or the body) signed.
pub fn curl_line(url: &str, signature: &str, timestamp: &str, data: &str) -> String {
    format!(
        "curl -i {} -H 'Content-Type: application/json' -H 'X-Signature-Ed25519: {signature}' \
         -H 'X-Signature-Timestamp: {timestamp}' --data-binary {data}",
        shell_quote(url)
    )
}
