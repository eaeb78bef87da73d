//! The control channel between the caller and the helper: a `SOCK_SEQPACKET` socket pair carrying
//! JSON messages, each optionally with file descriptors (`SCM_RIGHTS`).
//!
//! Seqpacket keeps message boundaries, so the helper, the container's init and the workload (which
//! all inherit the helper's end) can each write whole messages to the caller without framing.

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::sys::socket::{
    ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType, recvmsg, sendmsg,
};
use serde::{Deserialize, Serialize};

use crate::ExitStatus;

/// Largest message payload; bigger payloads (the spec) are split into chunks.
const CHUNK: usize = 32 * 1024;
/// Most file descriptors one message carries.
const MAX_FDS: usize = 8;

/// Messages the helper side (helper, init, workload) sends to the caller.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Report {
    /// Something was adjusted (an rlimit clamped, a limit ignored); the run goes on.
    Warning(String),
    /// The master side of the container's terminal (fd attached).
    PtyMaster,
    /// Init's namespaces, one descriptor attached per name, in order. Init opens them itself:
    /// it is not dumpable, so its /proc/<pid>/ns entries are closed to unprivileged callers.
    Namespaces(Vec<String>),
    /// The container's init runs; its pid in the caller's pid namespace (a pidfd attached).
    Started { pid: i32 },
    /// Setting the container up failed before the command ran.
    SetupFailed(String),
    /// The command could not be executed (not found, not executable); init exits with `code`.
    ExecFailed { message: String, code: i32 },
    /// The command ended (sent by init, which knows whether a signal ended it).
    WorkloadExited(ExitStatus),
    /// Init ended; `status` is init's own status, the helper's last word.
    Exited {
        status: ExitStatus,
        oom_killed: bool,
    },
}

pub(crate) fn socket_pair() -> std::io::Result<(OwnedFd, OwnedFd)> {
    nix::sys::socket::socketpair(
        nix::sys::socket::AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(std::io::Error::from)
}

/// Sends one raw message with the given descriptors.
pub(crate) fn send_raw(sock: BorrowedFd<'_>, bytes: &[u8], fds: &[RawFd]) -> std::io::Result<()> {
    let iov = [IoSlice::new(bytes)];
    let rights;
    let cmsgs: &[ControlMessage] = if fds.is_empty() {
        &[]
    } else {
        rights = [ControlMessage::ScmRights(fds)];
        &rights
    };
    loop {
        match sendmsg::<()>(sock.as_raw_fd(), &iov, cmsgs, MsgFlags::MSG_NOSIGNAL, None) {
            Ok(_) => return Ok(()),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Receives one raw message; `None` at end of stream (the peer closed).
pub(crate) fn recv_raw(sock: BorrowedFd<'_>) -> std::io::Result<Option<(Vec<u8>, Vec<OwnedFd>)>> {
    let mut buf = vec![0u8; CHUNK + 1024];
    let mut cmsg_space = nix::cmsg_space!([RawFd; MAX_FDS]);
    loop {
        let mut iov = [IoSliceMut::new(&mut buf)];
        let msg = match recvmsg::<()>(
            sock.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg_space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Ok(msg) => msg,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        };
        let mut fds = Vec::new();
        for cmsg in msg.cmsgs()? {
            if let ControlMessageOwned::ScmRights(received) = cmsg {
                // SAFETY: the kernel just installed these descriptors in this process for us.
                fds.extend(
                    received
                        .into_iter()
                        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                );
            }
        }
        let len = msg.bytes;
        if len == 0 && fds.is_empty() {
            return Ok(None);
        }
        buf.truncate(len);
        return Ok(Some((buf, fds)));
    }
}

/// Sends a report (best effort from inside the container: the caller may be gone).
pub(crate) fn report(sock: BorrowedFd<'_>, report: &Report, fds: &[RawFd]) -> std::io::Result<()> {
    let bytes = serde_json::to_vec(report).map_err(std::io::Error::other)?;
    send_raw(sock, &bytes, fds)
}

/// Reads the next report; `None` when the helper side closed the channel.
pub(crate) fn next_report(sock: BorrowedFd<'_>) -> std::io::Result<Option<(Report, Vec<OwnedFd>)>> {
    match recv_raw(sock)? {
        None => Ok(None),
        Some((bytes, fds)) => {
            let report = serde_json::from_slice(&bytes).map_err(std::io::Error::other)?;
            Ok(Some((report, fds)))
        }
    }
}

/// Sends a large payload as a length header followed by chunks; `fds` ride on the header.
pub(crate) fn send_payload(
    sock: BorrowedFd<'_>,
    payload: &[u8],
    fds: &[RawFd],
) -> std::io::Result<()> {
    send_raw(sock, &(payload.len() as u64).to_le_bytes(), fds)?;
    for chunk in payload.chunks(CHUNK) {
        send_raw(sock, chunk, &[])?;
    }
    Ok(())
}

/// Receives what [`send_payload`] sent.
pub(crate) fn recv_payload(sock: BorrowedFd<'_>) -> std::io::Result<(Vec<u8>, Vec<OwnedFd>)> {
    let truncated =
        || std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "control channel closed");
    let (header, fds) = recv_raw(sock)?.ok_or_else(truncated)?;
    let len: [u8; 8] = header
        .as_slice()
        .try_into()
        .map_err(|_| std::io::Error::other("bad payload header"))?;
    let len = u64::from_le_bytes(len) as usize;
    let mut payload = Vec::with_capacity(len);
    while payload.len() < len {
        let (chunk, _) = recv_raw(sock)?.ok_or_else(truncated)?;
        payload.extend_from_slice(&chunk);
    }
    Ok((payload, fds))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Seek, Write};
    use std::os::fd::AsFd;

    #[test]
    fn payloads_larger_than_a_message_arrive_whole_with_their_descriptors() {
        let (a, b) = socket_pair().unwrap();
        let payload: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(b"through SCM_RIGHTS").unwrap();
        let sender = std::thread::spawn(move || {
            send_payload(a.as_fd(), &payload, &[file.as_raw_fd()]).map(|_| payload)
        });
        let (received, fds) = recv_payload(b.as_fd()).unwrap();
        assert_eq!(received, sender.join().unwrap().unwrap());
        let mut passed = std::fs::File::from(fds.into_iter().next().unwrap());
        passed.rewind().unwrap();
        let mut text = String::new();
        passed.read_to_string(&mut text).unwrap();
        assert_eq!(text, "through SCM_RIGHTS");
    }
}
