//! The userspace port proxy for private networks (`strata run -p`): it accepts on the host and,
//! for each connection, connects from inside the container's network namespace to
//! `127.0.0.1:<container port>`, then copies both ways. No bridge, no iptables, no private
//! addresses. TCP only.
//!
//! Sockets belong to the namespace they are created in, so only the upstream socket has to be
//! made inside. As root, the connection's thread joins the network namespace itself. Without
//! root, a thread cannot (joining a namespace owned by another user namespace needs the caller
//! to join that user namespace, which a multi-threaded process may not): a connector process,
//! the helper executable in its connector mode, joins the container's user and network
//! namespaces and hands connected sockets back over a socket pair.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::Path;
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crate::channel;
use crate::{Container, HELPER_ARG, Sandbox};

/// The helper's argument for connector mode: `HELPER_ARG CONNECTOR_ARG <init pid>`.
pub(crate) const CONNECTOR_ARG: &str = "connect";

/// One published port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortMapping {
    /// Where to listen on the host (port 0 picks a free one).
    pub host: SocketAddr,
    /// The port inside the container.
    pub container_port: u16,
}

/// How upstream connections are made inside the container's network namespace.
enum Connector {
    /// The connection's own thread joins the namespace (root).
    Setns(File),
    /// A connector process inside the namespaces makes them (rootless).
    Process {
        socket: Mutex<OwnedFd>,
        child: Mutex<Child>,
    },
}

impl Connector {
    fn connect(&self, port: u16) -> std::io::Result<TcpStream> {
        match self {
            Connector::Setns(netns) => {
                nix::sched::setns(netns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)?;
                TcpStream::connect(("127.0.0.1", port))
            }
            Connector::Process { socket, .. } => {
                let socket = socket
                    .lock()
                    .map_err(|_| std::io::Error::other("connector lock poisoned"))?;
                channel::send_raw(socket.as_fd(), &port.to_le_bytes(), &[])?;
                let (reply, mut fds) = channel::recv_raw(socket.as_fd())?
                    .ok_or_else(|| std::io::Error::other("the port proxy connector ended"))?;
                match fds.pop() {
                    Some(fd) => Ok(TcpStream::from(fd)),
                    None => Err(std::io::Error::other(
                        String::from_utf8_lossy(&reply).into_owned(),
                    )),
                }
            }
        }
    }
}

/// Running proxies; dropping it stops accepting (open connections finish on their own).
pub struct PortProxy {
    local: Vec<SocketAddr>,
    stop: Option<OwnedFd>,
    acceptors: Vec<JoinHandle<()>>,
    connector: Arc<Connector>,
}

impl PortProxy {
    /// Starts one acceptor per mapping; connections join `netns`, the container's network
    /// namespace (`Container::namespace("net")`). Needs root.
    pub fn start(netns: File, mappings: &[PortMapping]) -> std::io::Result<Self> {
        Self::with_connector(Connector::Setns(netns), mappings)
    }

    /// Starts the proxies through a connector process (`helper` in connector mode) that joins
    /// `user_ns` and `net_ns`, the container's user and network namespaces: works without root.
    pub fn start_with_helper(
        helper: &Path,
        user_ns: File,
        net_ns: File,
        mappings: &[PortMapping],
    ) -> std::io::Result<Self> {
        let (ours, theirs) = channel::socket_pair()?;
        let child = Command::new(helper)
            .args([HELPER_ARG, CONNECTOR_ARG])
            .stdin(theirs)
            .stdout(std::process::Stdio::null())
            .spawn()?;
        let connector = Connector::Process {
            socket: Mutex::new(ours),
            child: Mutex::new(child),
        };
        if let Connector::Process { socket, .. } = &connector {
            let socket = socket
                .lock()
                .map_err(|_| std::io::Error::other("connector lock poisoned"))?;
            channel::send_raw(
                socket.as_fd(),
                b"namespaces",
                &[user_ns.as_raw_fd(), net_ns.as_raw_fd()],
            )?;
        }
        Self::with_connector(connector, mappings)
    }

    /// Publishes `mappings` of `container`: joining threads as root, a connector process otherwise.
    pub fn for_container(
        sandbox: &Sandbox,
        container: &Container,
        mappings: &[PortMapping],
    ) -> std::io::Result<Self> {
        if nix::unistd::geteuid().is_root() {
            Self::start(container.namespace("net")?, mappings)
        } else {
            Self::start_with_helper(
                sandbox.helper(),
                container.namespace("user")?,
                container.namespace("net")?,
                mappings,
            )
        }
    }

    fn with_connector(connector: Connector, mappings: &[PortMapping]) -> std::io::Result<Self> {
        let (stop_read, stop_write) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(std::io::Error::from)?;
        let connector = Arc::new(connector);
        let stop_read = Arc::new(stop_read);
        let mut proxy = Self {
            local: Vec::new(),
            stop: Some(stop_write),
            acceptors: Vec::new(),
            connector,
        };
        for mapping in mappings {
            let listener = TcpListener::bind(mapping.host)?;
            proxy.local.push(listener.local_addr()?);
            let (connector, stop_read, port) = (
                proxy.connector.clone(),
                stop_read.clone(),
                mapping.container_port,
            );
            proxy.acceptors.push(std::thread::spawn(move || {
                accept_loop(listener, &connector, &stop_read, port)
            }));
        }
        Ok(proxy)
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
        if let Connector::Process { socket, child } = &*self.connector {
            if let Ok(socket) = socket.lock() {
                let _ = nix::sys::socket::shutdown(
                    socket.as_raw_fd(),
                    nix::sys::socket::Shutdown::Both,
                );
            }
            if let Ok(mut child) = child.lock() {
                let _ = child.wait();
            }
        }
    }
}

fn accept_loop(listener: TcpListener, connector: &Arc<Connector>, stop: &OwnedFd, port: u16) {
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
        let connector = connector.clone();
        std::thread::spawn(move || {
            if let Ok(upstream) = connector.connect(port) {
                splice_both_ways(client, upstream);
            }
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

/// Connector mode (single-threaded, in the helper executable): receives the container's user and
/// network namespaces, joins them (the user namespace only when it is not ours already), then
/// answers each port request with a socket connected to it, or an error message.
pub(crate) fn connector_main(control: &OwnedFd) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let (_, fds) = channel::recv_raw(control.as_fd())
        .map_err(|e| e.to_string())?
        .ok_or("no namespaces received")?;
    let [user, net]: [OwnedFd; 2] = fds.try_into().map_err(|_| "expected two namespaces")?;
    let (user, net) = (File::from(user), File::from(net));
    let own = std::fs::metadata("/proc/self/ns/user").map_err(|e| e.to_string())?;
    let target = user.metadata().map_err(|e| e.to_string())?;
    if (own.dev(), own.ino()) != (target.dev(), target.ino()) {
        nix::sched::setns(user.as_fd(), nix::sched::CloneFlags::CLONE_NEWUSER)
            .map_err(|e| format!("joining the user namespace: {e}"))?;
    }
    nix::sched::setns(net.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
        .map_err(|e| format!("joining the network namespace: {e}"))?;
    while let Some((request, _)) = channel::recv_raw(control.as_fd()).map_err(|e| e.to_string())? {
        let port = match <[u8; 2]>::try_from(request.as_slice()) {
            Ok(bytes) => u16::from_le_bytes(bytes),
            Err(_) => return Err("bad request".into()),
        };
        let sent = match TcpStream::connect(("127.0.0.1", port)) {
            Ok(stream) => channel::send_raw(control.as_fd(), b"ok", &[stream.as_raw_fd()]),
            Err(e) => channel::send_raw(control.as_fd(), e.to_string().as_bytes(), &[]),
        };
        sent.map_err(|e| e.to_string())?;
    }
    Ok(())
}
