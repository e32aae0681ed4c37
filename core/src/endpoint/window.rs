//! The optional timestamp window: checked on authentic requests only, with a
//! rate-limited warning when one falls outside it.

use std::sync::atomic::{AtomicU64, Ordering};

/// The fewest seconds between two warnings about authentic requests outside
/// the window.
pub(super) const STALE_WARNING_INTERVAL_SECS: u64 = 60;

/// Whether `timestamp` is a decimal Unix time within `window` seconds of `now`.
pub(super) fn within_window(timestamp: &[u8], now: u64, window: u64) -> bool {
    unix_secs(timestamp).is_some_and(|timestamp| timestamp.abs_diff(now) <= window)
}

/// A timestamp header as Unix seconds: ASCII digits only.
fn unix_secs(timestamp: &[u8]) -> Option<u64> {
    if timestamp.is_empty() || !timestamp.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(timestamp).ok()?.parse().ok()
}

/// Rate-limits the warning about authentic requests outside the window, per
/// endpoint: a replay flood or a skewed clock would otherwise log one line per
/// request. Goes by the `now` the driver passes in, as core reads no clock.
#[derive(Debug, Default)]
pub(super) struct StaleWarnings {
    /// The Unix second of the last warning, plus one; 0 before the first.
    last: AtomicU64,
    /// Stale requests not warned about since the last warning.
    suppressed: AtomicU64,
}

impl StaleWarnings {
    /// Whether to warn about a stale request seen at `now`: `Some` with the
    /// number suppressed since the previous warning when one is due (none yet,
    /// or [`STALE_WARNING_INTERVAL_SECS`] away from the last, either way, so a
    /// clock set back does not silence it), else `None` (and it is counted).
    pub(super) fn due(&self, now: u64) -> Option<u64> {
        let last = self.last.load(Ordering::Relaxed);
        let due = last
            .checked_sub(1)
            .is_none_or(|previous| now.abs_diff(previous) >= STALE_WARNING_INTERVAL_SECS);
        // Of threads racing for the same due warning, one wins the exchange.
        let stored = now.saturating_add(1);
        if due
            && self
                .last
                .compare_exchange(last, stored, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            Some(self.suppressed.swap(0, Ordering::Relaxed))
        } else {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

/// Logs an authentic request whose `timestamp` is outside `window_secs` of
/// `now`: a warning at most once per [`STALE_WARNING_INTERVAL_SECS`] (naming
/// the likely causes), a debug line otherwise.
pub(super) fn log_stale(warnings: &StaleWarnings, timestamp: &[u8], now: u64, window_secs: u64) {
    let timestamp_text = String::from_utf8_lossy(timestamp);
    // Positive: the timestamp is in the past.
    let age_secs = unix_secs(timestamp).map(|sent| i128::from(now) - i128::from(sent));
    match warnings.due(now) {
        Some(suppressed) => tracing::warn!(
            timestamp = %timestamp_text,
            now_unix_secs = now,
            age_secs,
            window_secs,
            suppressed,
            "refused authentic interaction: X-Signature-Timestamp outside the window \
             (a replayed request, or this host's clock is off: is it synced?); \
             at most one such warning a minute, `suppressed` counts the others"
        ),
        None => tracing::debug!(
            timestamp = %timestamp_text,
            now_unix_secs = now,
            age_secs,
            window_secs,
            "refused authentic interaction: X-Signature-Timestamp outside the window"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows() {
        assert!(within_window(b"1700000000", 1_700_000_300, 300));
        assert!(within_window(b"1700000300", 1_700_000_000, 300));
        assert!(!within_window(b"1700000000", 1_700_000_301, 300));
        assert!(!within_window(b"-1", 0, 300));
        assert!(!within_window(b"1e9", 1_000_000_000, 300));
        assert!(!within_window(b"", 0, 300));
        assert!(!within_window(b"99999999999999999999999", 0, u64::MAX));
    }

    #[test]
    fn one_warning_per_interval() {
        let warnings = StaleWarnings::default();
        assert_eq!(warnings.due(1_000), Some(0));
        assert_eq!(warnings.due(1_000), None);
        assert_eq!(warnings.due(1_059), None);
        assert_eq!(warnings.due(1_060), Some(2));
        assert_eq!(warnings.due(1_061), None);
        // A clock set back by more than the interval warns again.
        assert_eq!(warnings.due(900), Some(1));
        assert_eq!(warnings.due(901), None);
    }

    #[test]
    fn warnings_at_the_ends_of_time() {
        let warnings = StaleWarnings::default();
        assert_eq!(warnings.due(0), Some(0));
        assert_eq!(warnings.due(59), None);
        assert_eq!(warnings.due(u64::MAX), Some(1));
        assert_eq!(warnings.due(u64::MAX), None);
    }
}
