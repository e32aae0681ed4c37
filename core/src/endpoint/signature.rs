//! The strict Ed25519 check of a request signature, split in the two parts
//! batch verification needs: the cheap checks and the challenge ([`Claim::new`]),
//! then the equation ([`Claim::holds`], or a batch's combined equation).
//!
//! The answers are those of ed25519-dalek's `verify_strict` (the tests and the
//! `batch_verify` fuzz target check it against `verify_strict` itself), for less
//! work: the message is hashed in place (no `timestamp ‖ body` copy), the key is
//! checked and negated once, and the equation compares points projectively instead
//! of compressing the result (an inversion), which is exact here because `R` is
//! known to be a canonical encoding.

use std::sync::LazyLock;

use curve25519_dalek::constants::EIGHT_TORSION;
use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::scalar::Scalar;
use ed25519_dalek::VerifyingKey;
use sha2::{Digest, Sha512};

/// An application's public key, with what every check of it needs.
#[derive(Clone, Debug)]
pub(super) struct PublicKey {
    verifying: VerifyingKey,
    /// `A`, decompressed.
    point: EdwardsPoint,
    /// `−A`.
    minus: EdwardsPoint,
}

impl PublicKey {
    /// The key must not be weak (of small order): `verify_strict` rejects every
    /// signature of such a key, and [`Verifier`](super::Verifier) refuses it.
    pub(super) fn new(verifying: VerifyingKey) -> Self {
        let point = verifying.to_edwards();
        Self {
            verifying,
            point,
            minus: -point,
        }
    }

    pub(super) fn verifying(&self) -> &VerifyingKey {
        &self.verifying
    }

    /// `A`.
    pub(super) fn point(&self) -> &EdwardsPoint {
        &self.point
    }

    /// Whether `signature` is valid over the concatenation of `message`'s parts.
    pub(super) fn verifies(&self, signature: &[u8; 64], message: &[&[u8]]) -> bool {
        Claim::new(self, signature, message).is_some_and(|claim| claim.holds(self))
    }
}

/// A signature that passed the checks `verify_strict` makes before its
/// equation, with its challenge: the claim that `[s]B = R + [k]A`.
pub(super) struct Claim {
    /// `R`, decompressed.
    pub(super) r: EdwardsPoint,
    pub(super) s: Scalar,
    /// `k = H(R ‖ A ‖ message)`.
    pub(super) k: Scalar,
    /// The signature as sent (for a batch's transcript).
    pub(super) signature: [u8; 64],
}

impl Claim {
    /// `None` exactly when `verify_strict` rejects the signature without
    /// reaching its equation: `s` not canonical, or `R` not a canonical
    /// encoding of a point outside the small-order subgroup.
    pub(super) fn new(key: &PublicKey, signature: &[u8; 64], message: &[&[u8]]) -> Option<Self> {
        let mut r_bytes = [0_u8; 32];
        let mut s_bytes = [0_u8; 32];
        r_bytes.copy_from_slice(&signature[..32]);
        s_bytes.copy_from_slice(&signature[32..]);
        if !plausible_r(&r_bytes) {
            return None;
        }
        let s = Option::<Scalar>::from(Scalar::from_canonical_bytes(s_bytes))?;
        let r = CompressedEdwardsY(r_bytes).decompress()?;
        let mut hash = Sha512::new();
        hash.update(r_bytes);
        hash.update(key.verifying.as_bytes());
        for part in message {
            hash.update(part);
        }
        Some(Self {
            r,
            s,
            k: Scalar::from_bytes_mod_order_wide(&hash.finalize().into()),
            signature: *signature,
        })
    }

    /// `verify_strict`'s equation: `R = [s]B − [k]A`.
    ///
    /// Compared as points rather than as encodings: the same answer, since `R`'s
    /// encoding is canonical (checked by [`Claim::new`]), so two encodings are equal
    /// exactly when their points are.
    pub(super) fn holds(&self, key: &PublicKey) -> bool {
        EdwardsPoint::vartime_double_scalar_mul_basepoint(&self.k, &key.minus, &self.s) == self.r
    }
}

/// The cheap part of `verify_strict`'s checks on `R`: a canonical encoding
/// (`y < p`) of a point that is not of small order. Whether it decompresses at
/// all is left to [`Claim::new`].
fn plausible_r(r: &[u8; 32]) -> bool {
    canonical_y(r) && !SMALL_ORDER.iter().any(|small| same_y(small, r))
}

/// Whether the 255-bit little-endian `y` of an encoded point is below
/// p = 2²⁵⁵ − 19.
fn canonical_y(encoded: &[u8; 32]) -> bool {
    let top = encoded[31] & 0x7f;
    !(top == 0x7f && encoded[1..31].iter().all(|&b| b == 0xff) && encoded[0] >= 0xed)
}

/// Equal `y` (the sign bit of `x` ignored: the negation of a small-order
/// point is one too, and `x = 0` points decode whatever the sign bit says).
fn same_y(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a[..31] == b[..31] && a[31] & 0x7f == b[31] & 0x7f
}

/// The canonical encodings of the eight points of small order.
static SMALL_ORDER: LazyLock<[[u8; 32]; 8]> =
    LazyLock::new(|| EIGHT_TORSION.map(|point| point.compress().to_bytes()));

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use ed25519_dalek::{Signature, Signer, SigningKey};
    use proptest::prelude::*;

    use super::*;

    fn key() -> (SigningKey, PublicKey) {
        let signing = SigningKey::from_bytes(&[3; 32]);
        let public = PublicKey::new(signing.verifying_key());
        (signing, public)
    }

    fn strict(key: &PublicKey, signature: &[u8; 64], message: &[u8]) -> bool {
        key.verifying()
            .verify_strict(message, &Signature::from_bytes(signature))
            .is_ok()
    }

    /// Signatures `verify_strict` must reject for each reason it has, plus
    /// valid ones: ours gives the same answer for every one.
    #[test]
    fn agrees_with_verify_strict_on_crafted_signatures() {
        let (signing, key) = key();
        let message = b"1700000000{\"type\":1}";
        let good = signing.sign(message).to_bytes();
        let mut cases = vec![good];
        // s + ℓ: the same scalar, not canonical.
        let mut big_s = good;
        let s = Scalar::from_canonical_bytes(good[32..].try_into().unwrap()).unwrap();
        let l_plus = big_add_l(&s.to_bytes());
        if let Some(l_plus) = l_plus {
            big_s[32..].copy_from_slice(&l_plus);
            cases.push(big_s);
        }
        // Every small-order R, with either sign bit, and non-canonical y = p + small.
        for point in EIGHT_TORSION {
            let mut bad = good;
            bad[..32].copy_from_slice(&point.compress().to_bytes());
            cases.push(bad);
            bad[31] ^= 0x80;
            cases.push(bad);
        }
        for low in 0..19_u8 {
            let mut bad = good;
            let mut y = [0xff_u8; 32];
            y[0] = 0xed + low;
            y[31] = 0x7f;
            bad[..32].copy_from_slice(&y);
            cases.push(bad);
        }
        // R with a torsion component: the single equation must reject it exactly.
        let r = CompressedEdwardsY(good[..32].try_into().unwrap())
            .decompress()
            .unwrap();
        for torsion in &EIGHT_TORSION[1..] {
            let mut bad = good;
            bad[..32].copy_from_slice(&(r + torsion).compress().to_bytes());
            cases.push(bad);
        }
        for (index, case) in cases.iter().enumerate() {
            assert_eq!(
                key.verifies(case, &[&message[..10], &message[10..]]),
                strict(&key, case, message),
                "case {index}"
            );
        }
        assert!(key.verifies(&good, &[message]));
    }

    /// `bytes` (a canonical scalar) plus ℓ, if it still fits in 256 bits.
    fn big_add_l(bytes: &[u8; 32]) -> Option<[u8; 32]> {
        const L: [u8; 32] = [
            0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9,
            0xde, 0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
        ];
        let mut out = [0_u8; 32];
        let mut carry = 0_u16;
        for i in 0..32 {
            let sum = u16::from(bytes[i]) + u16::from(L[i]) + carry;
            out[i] = (sum & 0xff) as u8;
            carry = sum >> 8;
        }
        (carry == 0).then_some(out)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(
            std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(64)
        ))]

        /// Damaged, arbitrary and valid signatures over arbitrary messages, split
        /// anywhere: the same answer as `verify_strict` over the whole message.
        #[test]
        fn agrees_with_verify_strict(
            message in prop::collection::vec(any::<u8>(), 0..300),
            split in any::<prop::sample::Index>(),
            flips in prop::collection::vec(0..512_usize, 0..3),
            raw in prop::option::weighted(0.2, any::<[u8; 32]>()),
        ) {
            let (signing, key) = key();
            let mut signature = signing.sign(&message).to_bytes();
            for bit in flips {
                signature[bit / 8] ^= 1 << (bit % 8);
            }
            if let Some(raw) = raw {
                signature[..32].copy_from_slice(&raw);
            }
            let at = split.index(message.len() + 1);
            prop_assert_eq!(
                key.verifies(&signature, &[&message[..at], &message[at..]]),
                strict(&key, &signature, &message)
            );
        }
    }
}
