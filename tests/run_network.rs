//! Published ports: busybox httpd in a private-network container, reached from the host on
//! 127.0.0.1 through the monitor's port proxy; a port already bound is one clear error.

mod run_support;
mod store_support;
mod udp_support;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::time::Duration;

use run_support::Env;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn http_get(port: u16, path: &str) -> std::io::Result<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
    let mut response = String::new();
    s.read_to_string(&mut response)?;
    Ok(response)
}

#[test]
fn published_port_reaches_httpd_and_a_bound_port_is_refused() {
    let env = Env::new();
    env.image(
        "web",
        &[
            "EXPOSE 80",
            r#"CMD ["httpd", "-f", "-p", "80", "-h", "/www"]"#,
        ],
    );
    let www = env.path().with_file_name("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("index.html"), "hello from the container\n").unwrap();
    let port = free_port();
    let publish = format!("{port}:80");
    let volume = format!("{}:/www:ro", www.display());
    env.ok(&[
        "run", "-d", "--name", "web", "-p", &publish, "-v", &volume, "web",
    ]);
    let mut response = String::new();
    env.until("httpd to answer", Duration::from_secs(10), || {
        response = http_get(port, "/").unwrap_or_default();
        response.contains("200 OK")
    });
    assert!(
        response.ends_with("hello from the container\n"),
        "{response}"
    );
    let ps = env.ok(&["ps"]);
    assert!(ps.contains(&format!("0.0.0.0:{port}->80/tcp")), "{ps}");
    let ports = env.inspect("web")["NetworkSettings"]["Ports"]["80/tcp"].clone();
    assert_eq!(ports[0]["HostPort"], port.to_string());

    // The same port again: refused before anything is left behind.
    let before = env.all_ids();
    let (code, err) = env.fails(&["run", "-d", "-p", &publish, "-v", "fresh:/data", "web"]);
    assert_eq!(code, 125);
    assert!(
        err.contains(&format!(
            "Bind for 0.0.0.0:{port} failed: port is already allocated"
        )),
        "{err}"
    );
    assert_eq!(env.all_ids(), before);
    assert_eq!(
        env.ok(&["volume", "ls", "-q"]),
        "",
        "the volume made for it went too"
    );
    // A port picked by the system (-p 80 alone) is reported as bound.
    env.ok(&[
        "run", "-d", "--name", "any", "-p", "80", "-v", &volume, "web",
    ]);
    let bound = env.inspect("any")["NetworkSettings"]["Ports"]["80/tcp"][0]["HostPort"]
        .as_str()
        .unwrap()
        .parse::<u16>()
        .unwrap();
    assert_ne!(bound, 0);
    env.until("the second httpd", Duration::from_secs(10), || {
        http_get(bound, "/").is_ok_and(|r| r.contains("200 OK"))
    });
    // Stopping the container closes its ports.
    env.ok(&["stop", "-t", "1", "web"]);
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
}

#[test]
fn published_udp_ports_reach_the_container_and_publish_all_includes_them() {
    let env = Env::new();
    env.image("dns", &["EXPOSE 5353/udp 80", r#"CMD ["sleep", "60"]"#]);
    let port = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let publish = format!("127.0.0.1:{port}:5353/udp");
    env.ok(&["run", "-d", "--name", "dns", "-p", &publish, "dns"]);
    let pid = env.inspect("dns")["State"]["Pid"].as_i64().unwrap();
    let netns = std::fs::File::open(format!("/proc/{pid}/ns/net")).unwrap();
    udp_support::serve_echo_in(netns, 5353);
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    let published = format!("127.0.0.1:{port}").parse().unwrap();
    let answer = udp_support::ask(&client, published, "query");
    assert!(answer.starts_with("query from 127.0.0.1:"), "{answer}");
    let ps = env.ok(&["ps"]);
    assert!(ps.contains(&format!("127.0.0.1:{port}->5353/udp")), "{ps}");
    let ports = env.inspect("dns")["NetworkSettings"]["Ports"].clone();
    assert_eq!(
        ports["5353/udp"][0]["HostPort"],
        port.to_string(),
        "{ports}"
    );
    // `port`, as Docker prints it.
    assert_eq!(
        env.ok(&["port", "dns"]),
        format!("5353/udp -> 127.0.0.1:{port}\n")
    );
    assert_eq!(
        env.ok(&["port", "dns", "5353/udp"]),
        format!("127.0.0.1:{port}\n")
    );
    let (_, err) = env.fails(&["port", "dns", "5353"]);
    assert!(
        err.contains("No public port '5353/tcp' published for dns"),
        "{err}"
    );
    env.ok(&["stop", "-t", "0", "dns"]);
    assert_eq!(
        env.ok(&["port", "dns"]),
        "",
        "a stopped container publishes nothing"
    );
    UdpSocket::bind(published).expect("stopping the container freed the port");

    // -P publishes both exposed ports, each with its protocol.
    env.ok(&["run", "-d", "--name", "all", "-P", "dns"]);
    let ports = env.inspect("all")["NetworkSettings"]["Ports"].clone();
    for key in ["5353/udp", "80/tcp"] {
        let host_port = ports[key][0]["HostPort"].as_str().unwrap_or_default();
        assert!(
            host_port.parse::<u16>().is_ok_and(|p| p != 0),
            "{key}: {ports}"
        );
    }
    env.ok(&["rm", "-f", "all"]);
}

#[test]
fn network_modes() {
    let env = Env::new();
    env.image("bb", &[]);
    let private = env.ok(&[
        "run",
        "--rm",
        "bb",
        "sh",
        "-c",
        "ls /sys/class/net | tr '\\n' ' '",
    ]);
    assert_eq!(private, "lo ");
    let none = env.ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        "bb",
        "ls",
        "/sys/class/net",
    ]);
    assert_eq!(none, "lo\n");
    let host_ifaces = std::fs::read_dir("/sys/class/net").unwrap().count();
    let host = env.ok(&[
        "run",
        "--rm",
        "--network",
        "host",
        "bb",
        "ls",
        "/sys/class/net",
    ]);
    assert_eq!(host.lines().count(), host_ifaces);
    let (_, err) = env.fails(&[
        "run",
        "--rm",
        "--network",
        "none",
        "-p",
        "8080:80",
        "bb",
        "true",
    ]);
    assert!(
        err.contains("published ports need a private network"),
        "{err}"
    );
    let (_, err) = env.fails(&["run", "--rm", "-p", "53/sctp", "bb", "true"]);
    assert!(err.contains("protocol sctp is not supported"), "{err}");
}
