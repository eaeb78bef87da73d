//! A UDP echo server inside a container's network namespace, run by a thread of the test (no
//! UDP server in the busybox image), and a client that retries while the path is being set up.

#![allow(dead_code)]

use std::fs::File;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

/// Binds `127.0.0.1:port` inside `netns` and answers each datagram with `<payload> from <peer>`,
/// until nothing arrives for 30 s. Returns once the socket is bound.
pub fn serve_echo_in(netns: File, port: u16) {
    let (bound_tx, bound_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        // The thread alone moves into the namespace; the socket stays in it.
        nix::sched::setns(netns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let socket = UdpSocket::bind(("127.0.0.1", port)).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        bound_tx.send(()).unwrap();
        let mut buf = [0u8; 2048];
        while let Ok((n, peer)) = socket.recv_from(&mut buf) {
            let mut reply = buf[..n].to_vec();
            reply.extend_from_slice(format!(" from {peer}").as_bytes());
            let _ = socket.send_to(&reply, peer);
        }
    });
    bound_rx.recv().unwrap();
}

/// Sends `payload` from `client` to `to` until its answer comes (datagrams may be lost while a
/// server starts; answers to earlier tries are skipped); panics after 10 s.
pub fn ask(client: &UdpSocket, to: SocketAddr, payload: &str) -> String {
    client
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = [0u8; 2048];
    loop {
        client.send_to(payload.as_bytes(), to).unwrap();
        match client.recv_from(&mut buf) {
            Ok((n, from)) => {
                assert_eq!(from, to, "the answer comes from the published port");
                let answer = String::from_utf8_lossy(&buf[..n]).into_owned();
                if answer.starts_with(&format!("{payload} from ")) {
                    return answer;
                }
            }
            Err(e) => assert!(Instant::now() < deadline, "no answer to {payload:?}: {e}"),
        }
    }
}
