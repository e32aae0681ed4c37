//! Key arguments: parsing hex keys, the demo default.

use yuyo_core::endpoint::Verifier;
use yuyo_demo as demo;

/// A secret key given as hex: a 32-byte seed (64 digits), or a 64-byte keypair
/// (seed ‖ public key, 128 digits) of which the seed is used. `None`: the demo key.
pub fn secret_seed(hex_key: Option<&str>) -> Result<[u8; 32], String> {
    let Some(text) = hex_key else {
        return Ok(demo::DEMO_SECRET_SEED);
    };
    let bytes = hex::decode(text.trim())
        .map_err(|e| format!("--secret-key is not hex ({e}); expected 64 hex digits"))?;
    let seed = match bytes.len() {
        32 | 64 => &bytes[..32],
        n => {
            return Err(format!(
                "--secret-key has {n} bytes; expected a 32-byte seed (64 hex digits)"
            ));
        }
    };
    let mut out = [0u8; 32];
    out.copy_from_slice(seed);
    Ok(out)
}

/// A public key given as hex (`None`: the demo key), as a verifier plus its hex form.
pub fn verifier(hex_key: Option<&str>) -> Result<(Verifier, String), String> {
    let text = hex_key.unwrap_or(demo::DEMO_PUBLIC_KEY_HEX).trim();
    let verifier = Verifier::from_hex(text)
        .map_err(|e| format!("--public-key is not a valid Ed25519 public key: {e}"))?;
    Ok((verifier, text.to_ascii_lowercase()))
}
