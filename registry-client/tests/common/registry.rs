//! The real `docker-registry` on 127.0.0.1 with its config in a temporary directory, and
//! certificates made with openssl. Only std and tempfile, so the binary's tests include this
//! file too (`#[path]`).

#![allow(dead_code)] // each test binary uses part of it

use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Runs a command and returns its stdout, panicking with its stderr when it fails.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// How the registry authenticates.
pub enum Auth {
    None,
    /// htpasswd file with this user and password.
    Htpasswd {
        user: String,
        password: String,
    },
    /// `auth: token` trusting `cert` (PEM) for tokens from `realm`.
    Token {
        realm: String,
        service: String,
        issuer: String,
        cert: PathBuf,
    },
}

/// A certificate authority and a server certificate for 127.0.0.1/localhost, made by openssl.
pub struct Tls {
    pub ca_cert: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
}

impl Tls {
    pub fn make(dir: &Path) -> Tls {
        let ca_key = dir.join("ca.key");
        let ca_cert = dir.join("ca.crt");
        run(Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec"])
            .args([
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=strata test CA",
                "-keyout",
            ])
            .arg(&ca_key)
            .arg("-out")
            .arg(&ca_cert));
        let server_key = dir.join("server.key");
        let csr = dir.join("server.csr");
        run(Command::new("openssl")
            .args(["req", "-new", "-newkey", "ec", "-pkeyopt"])
            .args([
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-subj",
                "/CN=127.0.0.1",
            ])
            .arg("-keyout")
            .arg(&server_key)
            .arg("-out")
            .arg(&csr));
        let ext = dir.join("server.ext");
        std::fs::write(
            &ext,
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
             keyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        let server_cert = dir.join("server.crt");
        run(Command::new("openssl")
            .args(["x509", "-req", "-days", "2", "-in"])
            .arg(&csr)
            .arg("-CA")
            .arg(&ca_cert)
            .arg("-CAkey")
            .arg(&ca_key)
            .arg("-CAcreateserial")
            .arg("-extfile")
            .arg(&ext)
            .arg("-out")
            .arg(&server_cert));
        Tls {
            ca_cert,
            server_cert,
            server_key,
        }
    }
}

/// A running `docker-registry serve`, killed on drop.
pub struct Registry {
    pub dir: tempfile::TempDir,
    pub addr: SocketAddr,
    child: Child,
    log: PathBuf,
}

impl Registry {
    pub fn start(auth: Auth, tls: Option<&Tls>) -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let mut config = format!(
            "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\n\
             storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
             http:\n  addr: {addr}\n  secret: strata-tests\n",
            dir.path().join("data").display()
        );
        if let Some(tls) = tls {
            config += &format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                tls.server_cert.display(),
                tls.server_key.display()
            );
        }
        match auth {
            Auth::None => {}
            Auth::Htpasswd { user, password } => {
                let line = run(Command::new("htpasswd").args(["-Bbn", &user, &password]));
                let path = dir.path().join("htpasswd");
                std::fs::write(&path, line.trim()).unwrap();
                config += &format!(
                    "auth:\n  htpasswd:\n    realm: strata-test\n    path: {}\n",
                    path.display()
                );
            }
            Auth::Token {
                realm,
                service,
                issuer,
                cert,
            } => {
                config += &format!(
                    "auth:\n  token:\n    realm: {realm}\n    service: {service}\n    \
                     issuer: {issuer}\n    rootcertbundle: {}\n",
                    cert.display()
                );
            }
        }
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).unwrap();
        let log = dir.path().join("registry.log");
        let log_file = std::fs::File::create(&log).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file)
            .spawn()
            .expect("docker-registry (Debian package docker-registry, see .ci/setup)");
        let registry = Registry {
            dir,
            addr,
            child,
            log,
        };
        registry.wait_ready();
        registry
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(self.addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "registry did not start:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `127.0.0.1:PORT`, as a registry name.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// Everything the registry logged (access log included).
    pub fn log(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// Access-log request lines (`PATCH /v2/...`) seen so far.
    pub fn requests(&self) -> Vec<String> {
        self.log()
            .lines()
            .filter_map(|l| {
                let start = l.find("\"")? + 1;
                let rest = &l[start..];
                let end = rest.find(" HTTP/")?;
                let line = &rest[..end];
                ["GET ", "HEAD ", "POST ", "PUT ", "PATCH ", "DELETE "]
                    .iter()
                    .any(|m| line.starts_with(m))
                    .then(|| line.to_string())
            })
            .collect()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
