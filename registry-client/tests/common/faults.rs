//! A fault-injecting HTTP/1.1 proxy in front of a registry. Each request gets a connection of
//! its own (the proxy adds `Connection: close`), so faults are chosen per request by rules on
//! method and path: answer a status without forwarding, cut the connection after some bytes of
//! the request or response body, or flip one byte of a response body.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Answer this status at once (503 and 429 get `Retry-After: 1`).
    Status(u16),
    /// Close both connections after this many bytes of request body went upstream.
    DropRequestAfter(usize),
    /// Close both connections after this many bytes of response body reached the client.
    DropResponseAfter(usize),
    /// Flip the bits of this byte of the response body.
    CorruptResponseByte(usize),
}

#[derive(Clone, Debug)]
pub struct Rule {
    pub method: &'static str,
    pub path_contains: String,
    /// Matching requests let through untouched before the fault applies.
    pub skip: usize,
    /// How many matching requests get the fault after that.
    pub times: usize,
    pub fault: Fault,
}

impl Rule {
    pub fn new(method: &'static str, path_contains: &str, fault: Fault) -> Rule {
        Rule {
            method,
            path_contains: path_contains.to_string(),
            skip: 0,
            times: 1,
            fault,
        }
    }

    pub fn skip(mut self, n: usize) -> Rule {
        self.skip = n;
        self
    }

    pub fn times(mut self, n: usize) -> Rule {
        self.times = n;
        self
    }
}

pub struct FaultProxy {
    pub addr: SocketAddr,
    rules: Arc<Mutex<Vec<Rule>>>,
    /// `METHOD path` for every request, with ` !FAULT` when one was applied.
    pub log: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FaultProxy {
    pub async fn start(upstream: SocketAddr, rules: Vec<Rule>) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let rules = Arc::new(Mutex::new(rules));
        let log = Arc::new(Mutex::new(Vec::new()));
        let task = {
            let (rules, log) = (rules.clone(), log.clone());
            tokio::spawn(async move {
                while let Ok((client, _)) = listener.accept().await {
                    let (rules, log) = (rules.clone(), log.clone());
                    tokio::spawn(async move {
                        let _ = handle(client, upstream, &rules, &log).await;
                    });
                }
            })
        };
        FaultProxy {
            addr,
            rules,
            log,
            task,
        }
    }

    pub fn set_rules(&self, rules: Vec<Rule>) {
        *self.rules.lock().unwrap() = rules;
    }

    /// The faults applied so far.
    pub fn applied(&self) -> Vec<String> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(" !"))
            .cloned()
            .collect()
    }

    pub fn host(&self) -> String {
        self.addr.to_string()
    }
}

fn pick_fault(rules: &Mutex<Vec<Rule>>, method: &str, path: &str) -> Option<Fault> {
    let mut rules = rules.lock().unwrap();
    let rule = rules
        .iter_mut()
        .find(|r| r.method == method && path.contains(&r.path_contains) && r.times > 0)?;
    if rule.skip > 0 {
        rule.skip -= 1;
        return None;
    }
    rule.times -= 1;
    Some(rule.fault)
}

async fn handle(
    mut client: TcpStream,
    upstream: SocketAddr,
    rules: &Mutex<Vec<Rule>>,
    log: &Mutex<Vec<String>>,
) -> std::io::Result<()> {
    // Anything but HTTP (a client probing for TLS) is hung up on, as plain servers do.
    let Some((buf, head_end)) = super::read_request_head(&mut client).await? else {
        return Ok(());
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut request_line = head.lines().next().unwrap_or_default().split(' ');
    let method = request_line.next().unwrap_or_default().to_string();
    let path = request_line.next().unwrap_or_default().to_string();
    let fault = pick_fault(rules, &method, &path);
    log.lock().unwrap().push(match fault {
        Some(f) => format!("{method} {path} !{f:?}"),
        None => format!("{method} {path}"),
    });
    if let Some(Fault::Status(status)) = fault {
        let retry_after = if matches!(status, 429 | 503) {
            "Retry-After: 1\r\n"
        } else {
            ""
        };
        let answer = format!(
            "HTTP/1.1 {status} Injected\r\nContent-Length: 0\r\n{retry_after}Connection: close\r\n\r\n"
        );
        client.write_all(answer.as_bytes()).await?;
        return Ok(());
    }
    // Forward with `Connection: close` instead of whatever the client said.
    let mut new_head: String = head
        .trim_end_matches("\r\n")
        .split("\r\n")
        .filter(|l| !l.to_ascii_lowercase().starts_with("connection:"))
        .map(|l| format!("{l}\r\n"))
        .collect();
    new_head.push_str("Connection: close\r\n\r\n");
    let mut server = TcpStream::connect(upstream).await?;
    server.write_all(new_head.as_bytes()).await?;
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let early_body = buf[head_end..].to_vec();
    let (dropped_tx, mut dropped_rx) = tokio::sync::oneshot::channel::<()>();

    let request = tokio::spawn(async move {
        let limit = match fault {
            Some(Fault::DropRequestAfter(n)) => Some(n),
            _ => None,
        };
        let mut sent = 0usize;
        let mut pending = early_body;
        loop {
            if !pending.is_empty() {
                let allowed = limit.map_or(pending.len(), |l| pending.len().min(l - sent));
                if server_write.write_all(&pending[..allowed]).await.is_err() {
                    return;
                }
                sent += allowed;
                if limit.is_some_and(|l| sent >= l) {
                    let _ = dropped_tx.send(());
                    return;
                }
            }
            let mut chunk = vec![0u8; 64 << 10];
            match client_read.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    chunk.truncate(n);
                    pending = chunk;
                }
            }
        }
    });

    let mut head_buf: Vec<u8> = Vec::new();
    let mut body_pos: Option<usize> = None;
    let mut chunk = vec![0u8; 64 << 10];
    loop {
        let n = tokio::select! {
            _ = &mut dropped_rx => break,
            read = server_read.read(&mut chunk) => match read { Ok(0) | Err(_) => break, Ok(n) => n },
        };
        let mut data = chunk[..n].to_vec();
        // Where the body starts in this piece of the response.
        let body_start = match body_pos {
            Some(_) => 0,
            None => {
                head_buf.extend_from_slice(&data);
                match head_buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    Some(i) => {
                        let start = data.len() - (head_buf.len() - (i + 4));
                        body_pos = Some(0);
                        start
                    }
                    None => data.len(),
                }
            }
        };
        let pos = body_pos.unwrap_or(0);
        let body_len = data.len() - body_start;
        match fault {
            Some(Fault::CorruptResponseByte(k)) if k >= pos && k < pos + body_len => {
                data[body_start + k - pos] ^= 0xff;
            }
            Some(Fault::DropResponseAfter(k)) if pos + body_len >= k && body_pos.is_some() => {
                let keep = body_start + (k - pos.min(k));
                let _ = client_write.write_all(&data[..keep]).await;
                break;
            }
            _ => {}
        }
        if body_pos.is_some() {
            body_pos = Some(pos + body_len);
        }
        if client_write.write_all(&data).await.is_err() {
            break;
        }
    }
    request.abort();
    Ok(())
}
