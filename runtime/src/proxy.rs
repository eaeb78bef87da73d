//! The userspace port proxy for private networks (`strata run -p`): it accepts on the host and,
//! for each connection, connects from inside the container's network namespace to
//! `127.0.0.1:<container port>`, then copies both ways. No bridge, no iptables, no private
//! addresses.
//!
//! UDP is relayed as docker-proxy does: each client address gets a socket of its own inside,
//! connected to the container port, whose replies go back to that client from the published
//! port; a client silent for [`UDP_IDLE`] is forgotten.
//!
//! Sockets belong to the namespace they are created in, so only the upstream socket has to be
//! made inside. As root, the connection's thread joins the network namespace itself. Without
//! root, a thread cannot (joining a namespace owned by another user namespace needs the caller
//! to join that user namespace, which a multi-threaded process may not): a connector process,
//! the helper executable in its connector mode, joins the container's user and network
//! namespaces and hands connected sockets back over a socket pair.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::channel;
use crate::{Container, HELPER_ARG, Sandbox};

/// The helper's argument for connector mode: `HELPER_ARG CONNECTOR_ARG <init pid>`.
pub(crate) const CONNECTOR_ARG: &str = "connect";

/// How long a UDP client may stay silent before its socket inside is closed (docker-proxy's
/// `UDPConnTrackTimeout`).
pub const UDP_IDLE: Duration = Duration::from_secs(90);

/// The largest UDP payload (65,535 less the IPv4 and UDP headers).
const MAX_DATAGRAM: usize = 65_507;

/// A transport protocol the proxy carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    /// The byte a connector request names it by.
    fn code(self) -> u8 {
        match self {
            Protocol::Tcp => b't',
            Protocol::Udp => b'u',
        }
    }
}

/// One published port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortMapping {
    /// Where to listen on the host (port 0 picks a free one).
    pub host: SocketAddr,
    /// The port inside the container.
    pub container_port: u16,
    pub protocol: Protocol,
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
    /// A socket inside the container's network namespace, connected to `127.0.0.1:port`.
    fn connect(&self, protocol: Protocol, port: u16) -> std::io::Result<OwnedFd> {
        match self {
            Connector::Setns(netns) => {
                nix::sched::setns(netns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)?;
                connect_inside(protocol, port)
            }
            Connector::Process { socket, .. } => {
                let socket = socket
                    .lock()
                    .map_err(|_| std::io::Error::other("connector lock poisoned"))?;
                let [low, high] = port.to_le_bytes();
                channel::send_raw(socket.as_fd(), &[low, high, protocol.code()], &[])?;
                let (reply, mut fds) = channel::recv_raw(socket.as_fd())?
                    .ok_or_else(|| std::io::Error::other("the port proxy connector ended"))?;
                fds.pop().ok_or_else(|| {
                    std::io::Error::other(String::from_utf8_lossy(&reply).into_owned())
                })
            }
        }
    }
}

/// A socket of this thread's network namespace connected to `127.0.0.1:port`.
fn connect_inside(protocol: Protocol, port: u16) -> std::io::Result<OwnedFd> {
    match protocol {
        Protocol::Tcp => TcpStream::connect(("127.0.0.1", port)).map(OwnedFd::from),
        Protocol::Udp => {
            let socket = UdpSocket::bind(("127.0.0.1", 0))?;
            socket.connect(("127.0.0.1", port))?;
            Ok(OwnedFd::from(socket))
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
            let (connector, stop_read, port) = (
                proxy.connector.clone(),
                stop_read.clone(),
                mapping.container_port,
            );
            let acceptor = match mapping.protocol {
                Protocol::Tcp => {
                    let listener = TcpListener::bind(mapping.host)?;
                    proxy.local.push(listener.local_addr()?);
                    std::thread::spawn(move || accept_loop(listener, &connector, &stop_read, port))
                }
                Protocol::Udp => {
                    let socket = UdpSocket::bind(mapping.host)?;
                    proxy.local.push(socket.local_addr()?);
                    std::thread::spawn(move || udp_relay(socket, &connector, &stop_read, port))
                }
            };
            proxy.acceptors.push(acceptor);
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

/// Waits until `fd` is readable (true) or `stop` is (false: the proxy is stopping), for at
/// most `timeout` (then `None`).
fn wait_readable(fd: BorrowedFd<'_>, stop: &OwnedFd, timeout: Option<Duration>) -> Option<bool> {
    let millis = timeout.map_or(-1, |t| i32::try_from(t.as_millis()).unwrap_or(i32::MAX));
    loop {
        let mut fds = [
            libc::pollfd {
                fd: fd.as_raw_fd(),
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
        match unsafe { libc::poll(fds.as_mut_ptr(), 2, millis) } {
            0 => return None,
            n if n < 0 => {
                if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Some(false);
            }
            _ => return Some(fds[1].revents == 0),
        }
    }
}

fn accept_loop(listener: TcpListener, connector: &Arc<Connector>, stop: &OwnedFd, port: u16) {
    while wait_readable(listener.as_fd(), stop, None) == Some(true) {
        let Ok((client, _)) = listener.accept() else {
            continue;
        };
        let connector = connector.clone();
        std::thread::spawn(move || {
            if let Ok(upstream) = connector.connect(Protocol::Tcp, port) {
                splice_both_ways(client, TcpStream::from(upstream));
            }
        });
    }
}

/// The UDP clients of one published port, each with its socket inside.
type UdpClients = Arc<Mutex<HashMap<SocketAddr, Arc<UdpSocket>>>>;

/// Relays datagrams from clients of the published `socket` to `port` inside, a socket inside per
/// client; a thread per client sends the replies back. Returns when the proxy stops, once those
/// threads are done (so the published port is closed when the proxy is dropped).
fn udp_relay(socket: UdpSocket, connector: &Arc<Connector>, stop: &Arc<OwnedFd>, port: u16) {
    let socket = Arc::new(socket);
    let clients: UdpClients = Arc::default();
    let mut repliers: Vec<JoinHandle<()>> = Vec::new();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    while wait_readable(socket.as_fd(), stop, None) == Some(true) {
        repliers.retain(|r| !r.is_finished());
        let Ok((n, client)) = socket.recv_from(&mut buf) else {
            continue;
        };
        let known = match clients.lock() {
            Ok(clients) => clients.get(&client).cloned(),
            Err(_) => return,
        };
        let upstream = match known {
            Some(upstream) => upstream,
            None => {
                let Ok(fd) = connector.connect(Protocol::Udp, port) else {
                    continue;
                };
                let upstream = Arc::new(UdpSocket::from(fd));
                match clients.lock() {
                    Ok(mut clients) => clients.insert(client, upstream.clone()),
                    Err(_) => return,
                };
                let (socket, clients, stop) = (socket.clone(), clients.clone(), stop.clone());
                let replies = upstream.clone();
                repliers.push(std::thread::spawn(move || {
                    udp_replies(&replies, &socket, client, &stop);
                    if let Ok(mut clients) = clients.lock() {
                        clients.remove(&client);
                    }
                }));
                upstream
            }
        };
        // A datagram nobody inside takes is lost, as on a network.
        let _ = upstream.send(&buf[..n]);
    }
    for replier in repliers {
        let _ = replier.join();
    }
}

/// Sends what arrives on `upstream` to `client` from the published `socket`, until the client
/// has been idle for [`UDP_IDLE`] or the proxy stops.
fn udp_replies(upstream: &UdpSocket, socket: &UdpSocket, client: SocketAddr, stop: &OwnedFd) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    while wait_readable(upstream.as_fd(), stop, Some(UDP_IDLE)) == Some(true) {
        match upstream.recv(&mut buf) {
            Ok(n) => {
                let _ = socket.send_to(&buf[..n], client);
            }
            // An earlier datagram found no socket inside (ICMP port unreachable): the next may.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {}
            Err(_) => return,
        }
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
/// answers each request (a port and a protocol) with a socket connected to it, or an error
/// message.
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
        let (port, protocol) = match request.as_slice() {
            [low, high, b't'] => (u16::from_le_bytes([*low, *high]), Protocol::Tcp),
            [low, high, b'u'] => (u16::from_le_bytes([*low, *high]), Protocol::Udp),
            _ => return Err("bad request".into()),
        };
        let sent = match connect_inside(protocol, port) {
            Ok(socket) => channel::send_raw(control.as_fd(), b"ok", &[socket.as_raw_fd()]),
            Err(e) => channel::send_raw(control.as_fd(), e.to_string().as_bytes(), &[]),
        };
        sent.map_err(|e| e.to_string())?;
    }
    Ok(())
}
