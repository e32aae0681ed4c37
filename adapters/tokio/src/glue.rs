//! Tokio glue that `yuyo-tower` shares: reading reply files on the blocking pool and
//! waiting for shutdown signals. Runtime plumbing only, no protocol decisions.

use std::io;
use std::path::Path;

use bytes::{Bytes, BytesMut};
use tokio::sync::mpsc;

/// Bytes of a reply file read at once.
pub const FILE_CHUNK: usize = 64 * 1024;

/// Reads `path` in [`FILE_CHUNK`] pieces into `tx`; run it on the blocking pool. Stops
/// when the receiver is gone.
pub fn read_file_chunks(path: &Path, tx: &mpsc::Sender<io::Result<Bytes>>) {
    use std::io::Read as _;
    let mut file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(error) => {
            let _ = tx.blocking_send(Err(error));
            return;
        }
    };
    let mut buf = BytesMut::new();
    loop {
        buf.resize(FILE_CHUNK, 0);
        match file.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                buf.truncate(n);
                if tx.blocking_send(Ok(buf.split().freeze())).is_err() {
                    return;
                }
            }
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => {
                let _ = tx.blocking_send(Err(error));
                return;
            }
        }
    }
}

/// Waits for Ctrl-C or (on Unix) SIGTERM; `false` if signals cannot be listened for.
pub async fn wait_for_signal() -> bool {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    result = tokio::signal::ctrl_c() => {
                        if let Err(error) = result {
                            tracing::error!(%error, "cannot listen for Ctrl-C");
                            terminate.recv().await;
                        }
                    }
                    _ = terminate.recv() => {}
                }
                return true;
            }
            Err(error) => tracing::error!(%error, "cannot listen for SIGTERM"),
        }
    }
    match tokio::signal::ctrl_c().await {
        Ok(()) => true,
        Err(error) => {
            tracing::error!(%error, "cannot listen for Ctrl-C");
            false
        }
    }
}
