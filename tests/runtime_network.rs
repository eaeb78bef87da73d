//! Networks: none and private (own namespace, only `lo`, up), host, and the userspace port proxy.

mod runtime_support;
mod udp_support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::path::Path;
use std::time::{Duration, Instant};

use oci_spec::runtime::LinuxNamespaceType;
use runtime_support::{Rootfs, STRATA, run};
use strata_runtime::proxy::{PortMapping, PortProxy, Protocol};
use strata_runtime::spec::{self, Network};
use strata_runtime::{Container, Sandbox, StdioSet};

const INTERFACES: &str = "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' | sort; cat /sys/class/net/lo/flags; \
     cat /proc/sys/net/ipv4/ip_unprivileged_port_start";

fn host_interfaces() -> Vec<String> {
    let dev = std::fs::read_to_string("/proc/net/dev").unwrap();
    let mut names: Vec<String> = dev
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next())
        .map(|n| n.trim().to_string())
        .collect();
    names.sort();
    names
}

#[test]
fn none_and_private_have_only_loopback_up() {
    let rootfs = Rootfs::new();
    for network in [Network::None, Network::Private] {
        let mut spec = rootfs.spec(INTERFACES);
        spec::set_network(&mut spec, network);
        let out = run(&spec);
        // lo is IFF_UP | IFF_LOOPBACK; as in Docker, any user may bind ports below 1024.
        assert_eq!(out.stdout, "lo\n0x9\n0\n", "{network:?}: {}", out.stderr);
    }
}

#[test]
fn host_network_sees_the_host_interfaces() {
    let rootfs = Rootfs::new();
    let mut spec = rootfs.spec(INTERFACES);
    spec::set_network(&mut spec, Network::Host);
    let out = run(&spec);
    let inside: Vec<&str> = out
        .stdout
        .lines()
        .take_while(|l| !l.starts_with("0x"))
        .collect();
    assert_eq!(inside, host_interfaces(), "{}", out.stderr);
    assert!(inside.len() > 1, "this machine has more than lo");
    // The host's sysctls are left alone.
    let host_start =
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start").unwrap();
    assert!(out.stdout.ends_with(&host_start), "{}", out.stdout);
}

#[test]
fn published_port_reaches_a_private_container() {
    let rootfs = Rootfs::new();
    std::fs::create_dir(rootfs.path().join("www")).unwrap();
    std::fs::write(
        rootfs.path().join("www/index.html"),
        "hello from the sandbox\n",
    )
    .unwrap();
    let container = started(&rootfs, "exec httpd -f -p 8080 -h /www");
    let (by_thread, by_process) = both_proxies(&container, 8080, Protocol::Tcp);
    for proxy in [&by_thread, &by_process] {
        let response = http_get(proxy.local_addrs()[0]);
        assert!(
            response.starts_with("HTTP/1.") && response.contains(" 200 "),
            "{response}"
        );
        assert!(response.ends_with("hello from the sandbox\n"), "{response}");
    }
    let addr = by_thread.local_addrs()[0];
    drop(by_thread);
    drop(by_process);
    assert!(
        TcpStream::connect(addr).is_err(),
        "the proxy stopped listening"
    );
    container.signal(libc::SIGKILL).unwrap();
    let exit = container.wait().unwrap();
    assert_eq!(exit.status.signal, Some(libc::SIGKILL));
}

#[test]
fn published_udp_port_relays_each_client_apart() {
    let rootfs = Rootfs::new();
    let container = started(&rootfs, "exec sleep 60");
    let (by_thread, by_process) = both_proxies(&container, 5353, Protocol::Udp);
    // A datagram before anything listens inside is lost, and does not stop the relay.
    let early = UdpSocket::bind("127.0.0.1:0").unwrap();
    early
        .send_to(b"too early", by_thread.local_addrs()[0])
        .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    udp_support::serve_echo_in(container.namespace("net").unwrap(), 5353);
    assert!(udp_support::ask(&early, by_thread.local_addrs()[0], "later").starts_with("later"));
    for proxy in [&by_thread, &by_process] {
        let published = proxy.local_addrs()[0];
        let (a, b) = (
            UdpSocket::bind("127.0.0.1:0").unwrap(),
            UdpSocket::bind("127.0.0.1:0").unwrap(),
        );
        // Each client is a peer of its own inside, and gets its own answers, every time.
        let first_a = udp_support::ask(&a, published, "a1");
        let first_b = udp_support::ask(&b, published, "b1");
        let peer = |answer: &str| answer.rsplit(' ').next().unwrap().to_string();
        assert_ne!(peer(&first_a), peer(&first_b));
        assert_eq!(peer(&udp_support::ask(&a, published, "a2")), peer(&first_a));
        assert_eq!(peer(&udp_support::ask(&b, published, "b2")), peer(&first_b));
    }
    let addr = by_thread.local_addrs()[0];
    drop(by_thread);
    drop(by_process);
    UdpSocket::bind(addr).expect("the proxy let go of the published port");
    container.signal(libc::SIGKILL).unwrap();
    container.wait().unwrap();
}

#[test]
fn a_network_namespace_given_by_path_is_joined() {
    let rootfs = Rootfs::new();
    let first = started(&rootfs, "exec sleep 60");
    let net_of = |pid: i32| {
        let link = std::fs::read_link(format!("/proc/{pid}/ns/net")).unwrap();
        format!("{}\n", link.display())
    };
    let first_ns = net_of(first.pid());
    assert_ne!(first_ns, net_of(std::process::id() as i32));

    // As `--network container:<first>`: the second container's spec names the first's namespace.
    let with_path = |path: &str| {
        let mut spec = rootfs.spec("readlink /proc/self/ns/net");
        let mut linux = spec.linux().clone().unwrap();
        let mut namespaces = linux.namespaces().clone().unwrap();
        for ns in namespaces.iter_mut() {
            if ns.typ() == LinuxNamespaceType::Network {
                ns.set_path(Some(path.into()));
            }
        }
        linux.set_namespaces(Some(namespaces));
        spec.set_linux(Some(linux));
        spec
    };
    let joined = run(&with_path(&format!("/proc/{}/ns/net", first.pid())));
    assert_eq!(joined.stdout, first_ns, "{}", joined.stderr);
    let missing = Sandbox::new(STRATA)
        .spawn(&with_path("/nonexistent/ns/net"), StdioSet::piped())
        .map(|c| c.wait())
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        missing.contains("joining namespace /nonexistent/ns/net"),
        "{missing}"
    );
    first.signal(libc::SIGKILL).unwrap();
    first.wait().unwrap();
}

/// A private-network container running `script`, once its shell has started.
fn started(rootfs: &Rootfs, script: &str) -> Container {
    let spec = rootfs.spec(&format!("echo ready; {script}"));
    let mut container = Sandbox::new(STRATA)
        .spawn(&spec, StdioSet::piped())
        .unwrap();
    let mut stdout = BufReader::new(container.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    container
}

/// `port` of `container` published on a free loopback port both ways of connecting inside: a
/// thread joining the namespace (root), and the connector process that rootless callers use.
fn both_proxies(container: &Container, port: u16, protocol: Protocol) -> (PortProxy, PortProxy) {
    let mapping = PortMapping {
        host: "127.0.0.1:0".parse().unwrap(),
        container_port: port,
        protocol,
    };
    let by_thread = PortProxy::start(container.namespace("net").unwrap(), &[mapping]).unwrap();
    let (user, net) = (
        container.namespace("user").unwrap(),
        container.namespace("net").unwrap(),
    );
    let by_process =
        PortProxy::start_with_helper(Path::new(STRATA), user, net, &[mapping]).unwrap();
    (by_thread, by_process)
}

/// GETs /index.html through `addr`, retrying while the server inside is still starting (the proxy
/// then closes the connection at once).
fn http_get(addr: std::net::SocketAddr) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut conn = TcpStream::connect(addr).unwrap();
        conn.write_all(b"GET /index.html HTTP/1.0\r\n\r\n").unwrap();
        let mut response = String::new();
        let _ = conn.read_to_string(&mut response);
        if !response.is_empty() || Instant::now() > deadline {
            return response;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
