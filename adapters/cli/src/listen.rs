//! Where `yuyo serve` gets its listening socket: bound by itself, bound beside an older
//! `yuyo serve` for a handover (`--reuse-port`), or passed by systemd socket activation
//! (`--listen-fd`). Each gives a plain `std` listener the runtime adapters take over.

use std::io;
use std::net::{SocketAddr, TcpListener};

use socket2::{Domain, Protocol, Socket, Type};

/// Connections the kernel queues for the listener before `accept` (the `listen` backlog;
/// the kernel caps it at `net.core.somaxconn`).
const BACKLOG: i32 = 1024;

/// How `yuyo serve` gets its listening socket.
#[derive(Clone, Copy, Debug)]
pub enum Listen {
    /// Bind `addr`.
    Bind(SocketAddr),
    /// Bind `addr` with `SO_REUSEPORT` beside an older process serving it, and take every
    /// new connection from it (see [`take_new_connections`]).
    Handover(SocketAddr),
    /// The socket systemd (or any `LISTEN_FDS` launcher) passed, by index.
    Activated(usize),
}

/// Why there is no listener.
#[derive(Debug)]
pub struct ListenError {
    what: String,
    error: io::Error,
}

impl std::fmt::Display for ListenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.what, self.error)
    }
}

impl Listen {
    /// The listening socket, in blocking mode.
    pub fn listener(self) -> Result<TcpListener, ListenError> {
        let failed = |what: String| move |error| ListenError { what, error };
        match self {
            Self::Bind(addr) => {
                TcpListener::bind(addr).map_err(failed(format!("cannot listen on {addr}")))
            }
            Self::Handover(addr) => {
                handover(addr).map_err(failed(format!("cannot listen on {addr} with SO_REUSEPORT")))
            }
            Self::Activated(index) => {
                activated(index).map_err(failed(format!("no listening socket #{index} passed")))
            }
        }
    }
}

fn activated(index: usize) -> io::Result<TcpListener> {
    let listener = listenfd::ListenFd::from_env()
        .take_tcp_listener(index)?
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                "LISTEN_FDS names no such TCP socket (run under systemd socket activation)",
            )
        })?;
    // systemd may pass it non-blocking; the adapters set the mode they need.
    listener.set_nonblocking(false)?;
    Ok(listener)
}

fn handover(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    #[cfg(unix)]
    socket.set_reuse_port(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    take_new_connections(&socket)?;
    Ok(socket.into())
}

/// Steers every new connection to the address to the newest of two processes listening
/// on it with `SO_REUSEPORT`: this one.
///
/// Without it the kernel spreads connections over both by a hash, and those it queues
/// for the old process when that one closes its listener are reset. The classic BPF
/// program `return 1` picks socket 1 of the group, which is the one bound last while
/// two are (Linux appends a new socket to its group, and moves the last one into the
/// place of one that leaves): from here on the old process only finishes what it has.
/// Alone in its group, index 1 does not exist and the kernel falls back to its hash. The
/// program stays with the group, so the next handover steers the same way.
#[cfg(target_os = "linux")]
pub fn take_new_connections(socket: &Socket) -> io::Result<()> {
    const BPF_RET_K: u16 = 0x06;
    let mut program = [libc::sock_filter {
        code: BPF_RET_K,
        jt: 0,
        jf: 0,
        k: 1,
    }];
    let program = libc::sock_fprog {
        len: 1,
        filter: program.as_mut_ptr(),
    };
    nix::sys::socket::setsockopt(
        socket,
        nix::sys::socket::sockopt::AttachReusePortCbpf,
        &program,
    )
    .map_err(io::Error::from)
}

/// Elsewhere the kernel's own spreading stays: the old process drains what it got.
#[cfg(not(target_os = "linux"))]
pub fn take_new_connections(_socket: &Socket) -> io::Result<()> {
    Ok(())
}
