//! What the kernel knows about our sockets (Linux `/proc`): whether the server closed an
//! attacking connection although the attack never reads from it, and the fd limit.

use std::collections::HashMap;
use std::os::fd::AsRawFd;

/// `/proc/net/tcp`'s code for ESTABLISHED; any other state (CLOSE_WAIT after the server's
/// FIN) or no entry at all (the socket was reset) means the server closed the connection.
const ESTABLISHED: u8 = 0x01;

/// The socket inode of `socket`, to find it in `/proc/net/tcp` (exact, unlike the local
/// port, which a reset socket gives back for reuse).
pub fn inode(socket: &impl AsRawFd) -> Option<u64> {
    let link = std::fs::read_link(format!("/proc/self/fd/{}", socket.as_raw_fd())).ok()?;
    let text = link.to_str()?;
    text.strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// The TCP state of every IPv4 socket by inode, from `/proc/net/tcp`.
pub fn tcp_states() -> std::io::Result<HashMap<u64, u8>> {
    let text = std::fs::read_to_string("/proc/net/tcp")?;
    let mut states = HashMap::new();
    // sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode
    for line in text.lines().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (Some(state), Some(inode)) = (fields.get(3), fields.get(9)) else {
            continue;
        };
        if let (Ok(state), Ok(inode)) = (u8::from_str_radix(state, 16), inode.parse::<u64>()) {
            states.insert(inode, state);
        }
    }
    Ok(states)
}

/// Whether the socket with `inode` is still ESTABLISHED in `states`.
pub fn is_established(states: &HashMap<u64, u8>, inode: u64) -> bool {
    states.get(&inode) == Some(&ESTABLISHED)
}

/// The soft limit on open files (`/proc/self/limits`); `None` if unlimited or unreadable.
pub fn open_files_limit() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line.trim_start_matches("Max open files")
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_listening_socket_by_inode() -> std::io::Result<()> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let states = tcp_states()?;
        let inode = inode(&listener).ok_or_else(|| std::io::Error::other("no inode"))?;
        // 0x0A is LISTEN.
        assert_eq!(states.get(&inode), Some(&0x0A));
        assert!(!is_established(&states, inode));
        Ok(())
    }
}
