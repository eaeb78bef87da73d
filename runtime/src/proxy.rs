//! The userspace port proxy for private networks (`strata run -p`): it accepts on the host and,
//! for each connection, connects from inside the container's network namespace (a thread that
//! setns'd into it) to `127.0.0.1:<container port>`, then copies both ways. No bridge, no
//! iptables, no private addresses. TCP only.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::thread::JoinHandle;

/// One published port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortMapping {
    /// Where to listen on the host (port 0 picks a free one).
    pub host: SocketAddr,
    /// The port inside the container.
    pub container_port: u16,
}

/// Running proxies; dropping it stops accepting (open connections finish on their own).
pub struct PortProxy {
    local: Vec<SocketAddr>,
    stop: Option<OwnedFd>,
    acceptors: Vec<JoinHandle<()>>,
}

impl PortProxy {
    /// Starts one acceptor per mapping. `netns` is the container's network namespace
    /// (`/proc/<init pid>/ns/net`, opened while the container runs).
    pub fn start(netns: File, mappings: &[PortMapping]) -> std::io::Result<Self> {
        let (stop_read, stop_write) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(std::io::Error::from)?;
        let netns = std::sync::Arc::new(netns);
        let stop_read = std::sync::Arc::new(stop_read);
        let mut local = Vec::new();
        let mut acceptors = Vec::new();
        for mapping in mappings {
            let listener = TcpListener::bind(mapping.host)?;
            local.push(listener.local_addr()?);
            let (netns, stop_read, port) =
                (netns.clone(), stop_read.clone(), mapping.container_port);
            acceptors.push(std::thread::spawn(move || {
                accept_loop(listener, &netns, &stop_read, port)
            }));
        }
        Ok(Self {
            local,
            stop: Some(stop_write),
            acceptors,
        })
    }

    /// The host addresses actually listened on, in the order of the mappings.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.local
    }
}

impl Drop for PortProxy {
    fn drop(&mut self) {
        drop(self.stop.take()); // the acceptors see the pipe close
        for a in self.acceptors.drain(..) {
            let _ = a.join();
        }
    }
}

fn accept_loop(listener: TcpListener, netns: &std::sync::Arc<File>, stop: &OwnedFd, port: u16) {
    loop {
        let mut fds = [
            libc::pollfd {
                fd: listener.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: stop.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: poll(2) on two descriptors we hold.
        if unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) } < 0 {
            if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return;
        }
        if fds[1].revents != 0 {
            return;
        }
        let Ok((client, _)) = listener.accept() else {
            continue;
        };
        let netns = netns.clone();
        std::thread::spawn(move || {
            // Sockets belong to the namespace they were created in: this thread joins the
            // container's network namespace just to create and connect its upstream socket.
            if nix::sched::setns(netns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).is_err() {
                return;
            }
            let Ok(upstream) = TcpStream::connect(("127.0.0.1", port)) else {
                return;
            };
            splice_both_ways(client, upstream);
        });
    }
}

fn splice_both_ways(client: TcpStream, upstream: TcpStream) {
    let (Ok(client2), Ok(upstream2)) = (client.try_clone(), upstream.try_clone()) else {
        return;
    };
    let back = std::thread::spawn(move || copy_then_shutdown(upstream2, client2));
    copy_then_shutdown(client, upstream);
    let _ = back.join();
}

fn copy_then_shutdown(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = [0u8; 32 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}
