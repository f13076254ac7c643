//! Listening sockets handed over by Python, and accepting connections from them.

use std::io;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;

use mio::net::{TcpListener, UnixListener};

use super::connection::{Peer, Stream};

/// A listening socket, already bound and listening, set non-blocking here.
#[derive(Debug)]
pub enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

impl Listener {
    /// Takes ownership of a listening socket.
    ///
    /// # Errors
    /// If the socket cannot be made non-blocking.
    pub fn from_fd(fd: OwnedFd, is_unix: bool) -> io::Result<Self> {
        if is_unix {
            let std = std::os::unix::net::UnixListener::from(fd);
            std.set_nonblocking(true)?;
            Ok(Listener::Unix(UnixListener::from_std(std)))
        } else {
            let std = std::net::TcpListener::from(fd);
            std.set_nonblocking(true)?;
            Ok(Listener::Tcp(TcpListener::from_std(std)))
        }
    }

    /// Accepts one pending connection. TCP connections get `TCP_NODELAY` so a response head is never held back.
    ///
    /// # Errors
    /// `WouldBlock` when the queue is empty, and accept failures.
    pub fn accept(&self) -> io::Result<(Stream, Peer)> {
        match self {
            Listener::Tcp(listener) => {
                let (stream, addr) = listener.accept()?;
                // Without NODELAY a response head may wait for a delayed ACK; the connection still works.
                let _ = stream.set_nodelay(true);
                Ok((Stream::Tcp(stream), Peer::Ip(addr)))
            }
            Listener::Unix(listener) => {
                let (stream, _) = listener.accept()?;
                Ok((Stream::Unix(stream), Peer::Unix))
            }
        }
    }

    pub fn source(&mut self) -> &mut dyn mio::event::Source {
        match self {
            Listener::Tcp(listener) => listener,
            Listener::Unix(listener) => listener,
        }
    }

    /// The bound address of a TCP listener.
    #[must_use]
    pub fn local_addr(&self) -> Option<SocketAddr> {
        match self {
            Listener::Tcp(listener) => listener.local_addr().ok(),
            Listener::Unix(_) => None,
        }
    }
}
