//! Batch signature verification across requests; see [`VerifyQueue`].

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

use curve25519_dalek::constants::ED25519_BASEPOINT_POINT;
use curve25519_dalek::edwards::EdwardsPoint;
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::{IsIdentity, VartimeMultiscalarMul};
use sha2::{Digest, Sha512};

use super::Endpoint;
use super::exchange::{Finished, Signed};
use super::signature::{Claim, PublicKey};

/// The most signatures verified in one batch: beyond this the saving per
/// signature is flat while the wait of the first request keeps growing.
pub const MAX_BATCH: usize = 64;

/// After a batch fails, how many signatures are verified singly before
/// batching again.
pub const FALLBACK_SIGNATURES: u32 = 32;

/// Counters of a [`VerifyQueue`], for benchmarks and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BatchStats {
    /// Batches verified with the combined equation.
    pub batches: u64,
    /// Signatures accepted through a combined equation.
    pub batched_signatures: u64,
    /// Signatures checked on their own (with `verify_strict`'s equation, or
    /// rejected by its cheap checks).
    pub single_signatures: u64,
    /// Batches whose combined equation failed (each signature was then
    /// verified on its own).
    pub failed_batches: u64,
}

/// The requests of one endpoint awaiting signature verification, checked in
/// batches.
///
/// Ed25519 verification is most of the CPU an interaction costs. Checking
/// `n` signatures against one key as a single random linear combination (one
/// multiscalar multiplication of `n + 2` points) costs a third to a fifth of
/// `n` single checks once `n` reaches 8–64 (see the `exchange` bench), so
/// under load the requests that complete in the same wake-up of a server are
/// verified together.
///
/// Every connection of an [`Endpoint`] shares its queue. A driver
/// [`enqueue`](super::Signed::enqueue)s its request, lets the other ready
/// connections run once (so their requests join the queue), then awaits the
/// [`Ticket`]. The first ticket polled drains the queue and verifies what it
/// found; tickets whose request another one took wait for it. No thread,
/// timer or runtime is involved: whoever polls does the work.
///
/// # Same answers as `verify_strict`
/// A batch is accepted only if every signature in it passes the checks
/// `verify_strict` makes cheaply (canonical `s`, canonical `R` that is not of
/// small order; the key is checked once when the [`Verifier`] is built) and
/// the combined equation holds. If it does not, each signature is checked
/// on its own with `verify_strict`'s equation, so a bad signature fails only its own
/// request, and the next [`FALLBACK_SIGNATURES`] are verified singly so a
/// stream of bad signatures cannot make every batch do its work twice.
///
/// One case differs only for the holder of the private key: a signature
/// whose `R` has a torsion component passes the batch equation with
/// probability up to ½ but always fails `verify_strict`. Making it requires
/// the key, which only Discord has, so peers cannot use it; detecting it
/// exactly would cost as much as a single verification per signature.
///
/// [`Verifier`]: super::Verifier
#[derive(Default)]
pub struct VerifyQueue {
    pending: Mutex<Vec<Pending>>,
    /// Signatures still to verify singly after a failed batch.
    single_left: AtomicU32,
    batches: AtomicU64,
    batched_signatures: AtomicU64,
    single_signatures: AtomicU64,
    failed_batches: AtomicU64,
}

impl std::fmt::Debug for VerifyQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyQueue")
            .field("pending", &lock(&self.pending).len())
            .field("stats", &self.stats())
            .finish()
    }
}

struct Pending {
    signed: Signed,
    now_unix_secs: u64,
    slot: Arc<Slot>,
}

impl VerifyQueue {
    /// Queue `signed` (verified at `now_unix_secs`, for the timestamp window).
    pub(super) fn submit(endpoint: Endpoint, signed: Signed, now_unix_secs: u64) -> Ticket {
        let slot = Arc::new(Slot::default());
        lock(&endpoint.verify_queue().pending).push(Pending {
            signed,
            now_unix_secs,
            slot: Arc::clone(&slot),
        });
        Ticket { endpoint, slot }
    }

    /// Verify the signatures of up to [`MAX_BATCH`] queued requests now and
    /// wake their tickets (each finishes its own request); returns how many
    /// were verified.
    pub fn run(&self) -> usize {
        let batch: Vec<Pending> = {
            let mut pending = lock(&self.pending);
            let take = pending.len().min(MAX_BATCH);
            pending.drain(..take).collect()
        };
        let count = batch.len();
        if count == 0 {
            return 0;
        }
        let verified = self.verify(&batch);
        if let Some(first) = batch.first() {
            first.signed.endpoint().metrics().verified_batch(count);
        }
        for (pending, verified) in batch.into_iter().zip(verified) {
            // The rest (timestamp window, JSON, dispatch) is left to each
            // ticket's own poll, so it runs on its own task, in parallel on a
            // multi-threaded runtime, and not at all for a dropped ticket.
            pending.slot.fill(Verified {
                signed: pending.signed,
                verified,
                now_unix_secs: pending.now_unix_secs,
            });
        }
        count
    }

    /// What the queue has done so far.
    #[must_use]
    pub fn stats(&self) -> BatchStats {
        BatchStats {
            batches: self.batches.load(Ordering::Relaxed),
            batched_signatures: self.batched_signatures.load(Ordering::Relaxed),
            single_signatures: self.single_signatures.load(Ordering::Relaxed),
            failed_batches: self.failed_batches.load(Ordering::Relaxed),
        }
    }

    /// Whether each request's signature verifies, in order.
    fn verify(&self, batch: &[Pending]) -> Vec<bool> {
        let mut verified = vec![false; batch.len()];
        // A request without a claim fails `verify_strict`'s cheap checks and
        // stays rejected (unless the verifier is the fuzzing one).
        let mut claims = Vec::with_capacity(batch.len());
        for (index, pending) in batch.iter().enumerate() {
            let signed = &pending.signed;
            let verifier = signed.endpoint().config().verifier();
            match verifier.public_key() {
                Some(key) => {
                    let message = [signed.timestamp(), signed.body()];
                    if let Some(claim) = Claim::new(key, signed.signature(), &message) {
                        claims.push((index, claim, key));
                    }
                }
                None => {
                    verified[index] = verifier
                        .verify(signed.timestamp(), signed.body(), signed.signature())
                        .is_ok();
                }
            }
        }
        if claims.len() >= 2 && !self.take_single_turn(claims.len()) {
            self.batches.fetch_add(1, Ordering::Relaxed);
            if combined_equation_holds(&claims) {
                self.batched_signatures
                    .fetch_add(claims.len() as u64, Ordering::Relaxed);
                self.single_signatures
                    .fetch_add((batch.len() - claims.len()) as u64, Ordering::Relaxed);
                for &(index, ..) in &claims {
                    verified[index] = true;
                }
                return verified;
            }
            self.failed_batches.fetch_add(1, Ordering::Relaxed);
            if let Some(first) = batch.first() {
                first.signed.endpoint().metrics().batch_failed();
            }
            self.single_left
                .store(FALLBACK_SIGNATURES, Ordering::Relaxed);
            // Anyone can send a bad signature: never more than a debug line.
            tracing::debug!(
                size = claims.len(),
                "signature batch failed; verifying each on its own"
            );
        }
        self.single_signatures
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        for (index, claim, key) in &claims {
            verified[*index] = claim.holds(key);
        }
        verified
    }

    /// Whether these `count` signatures must be verified singly because a
    /// recent batch failed; counts them off if so.
    fn take_single_turn(&self, count: usize) -> bool {
        let count = u32::try_from(count).unwrap_or(u32::MAX);
        self.single_left
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                (left > 0).then(|| left.saturating_sub(count))
            })
            .is_ok()
    }
}

/// Whether `Σ zᵢ·(Rᵢ + kᵢ·Aᵢ − sᵢ·B) = 0` for random 128-bit `zᵢ`: true
/// when every signature verifies; when any does not, false except with
/// probability 2⁻¹²⁸ (see the module docs for the torsion caveat).
///
/// Unlike `ed25519_dalek::verify_batch`, terms that share a key (every
/// request of an endpoint does) share one `A` term: the multiscalar
/// multiplication has `n + 2` points instead of `2n + 1`, about half the
/// work.
fn combined_equation_holds(terms: &[(usize, Claim, &PublicKey)]) -> bool {
    // The zᵢ are derived from every input, so a peer cannot choose its
    // signature knowing them (as ed25519-dalek derives its own).
    let mut transcript = Sha512::new();
    transcript.update(b"yuyo ed25519 batch v1");
    for (_, term, _) in terms {
        transcript.update(term.signature);
        transcript.update(term.k.as_bytes());
    }
    let seed = transcript.finalize();

    let mut scalars = Vec::with_capacity(terms.len() + 2);
    let mut points = Vec::with_capacity(terms.len() + 2);
    let mut keys: Vec<(EdwardsPoint, Scalar)> = Vec::with_capacity(1);
    let mut basepoint = Scalar::ZERO;
    for (index, (_, term, key)) in terms.iter().enumerate() {
        let z = Scalar::from(random_128(&seed, index));
        scalars.push(z);
        points.push(term.r);
        basepoint -= z * term.s;
        let zk = z * term.k;
        match keys.iter_mut().find(|(a, _)| a == key.point()) {
            Some((_, coefficient)) => *coefficient += zk,
            None => keys.push((*key.point(), zk)),
        }
    }
    for (a, coefficient) in keys {
        scalars.push(coefficient);
        points.push(a);
    }
    scalars.push(basepoint);
    points.push(ED25519_BASEPOINT_POINT);
    EdwardsPoint::vartime_multiscalar_mul(scalars, points).is_identity()
}

/// The `index`th 128-bit coefficient from the transcript `seed`; odd, so
/// never zero.
fn random_128(seed: &[u8], index: usize) -> u128 {
    let mut hash = Sha512::new();
    hash.update(seed);
    hash.update((index as u64).to_le_bytes());
    let digest = hash.finalize();
    let mut bytes = [0_u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    u128::from_le_bytes(bytes) | 1
}

/// A request's place in the [`VerifyQueue`]: resolves to its [`Finished`].
///
/// Polling it verifies the queued batch if nobody has taken this request yet.
/// A driver that wants batching lets other connections run once between
/// [`Signed::enqueue`] and the first poll (e.g. `yield_now().await`).
#[must_use = "a ticket does nothing unless polled"]
pub struct Ticket {
    endpoint: Endpoint,
    slot: Arc<Slot>,
}

impl std::fmt::Debug for Ticket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ticket").finish_non_exhaustive()
    }
}

impl Future for Ticket {
    type Output = Finished;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Finished> {
        let this = self.get_mut();
        loop {
            if let Some(done) = this.slot.take(cx.waker()) {
                return Poll::Ready(done.signed.conclude(done.verified, done.now_unix_secs));
            }
            // Batches are capped, so this request may be further down the
            // queue: run batches until it is done or the queue is empty.
            if this.endpoint.verify_queue().run() == 0 {
                // Another ticket's poll took this request and is verifying
                // it; it wakes this one when done.
                return Poll::Pending;
            }
        }
    }
}

/// A request whose signature has been checked.
struct Verified {
    signed: Signed,
    verified: bool,
    now_unix_secs: u64,
}

/// Where a verified request waits for its ticket.
#[derive(Default)]
struct Slot {
    state: Mutex<SlotState>,
}

#[derive(Default)]
enum SlotState {
    #[default]
    Waiting,
    Parked(Waker),
    Done(Verified),
    Taken,
}

impl Slot {
    fn fill(&self, done: Verified) {
        let previous = std::mem::replace(&mut *lock(&self.state), SlotState::Done(done));
        if let SlotState::Parked(waker) = previous {
            waker.wake();
        }
    }

    /// The result if it is there, else registers `waker` for it.
    fn take(&self, waker: &Waker) -> Option<Verified> {
        let mut state = lock(&self.state);
        match std::mem::replace(&mut *state, SlotState::Taken) {
            SlotState::Done(done) => Some(done),
            SlotState::Waiting | SlotState::Parked(_) => {
                *state = SlotState::Parked(waker.clone());
                None
            }
            // Polled after completion: stays pending, as futures may.
            SlotState::Taken => None,
        }
    }
}

/// A poisoned lock only means another thread panicked while holding it; the
/// data (a queue, a slot) is still consistent, since no code here panics
/// mid-update.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
