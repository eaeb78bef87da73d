//! `strata login` / `strata logout` against a real htpasswd registry on loopback.

#[path = "../registry-client/tests/common/registry.rs"]
mod registry;

use std::os::unix::fs::PermissionsExt;

use assert_cmd::Command;
use registry::{Auth, Registry};

const USER: &str = "bob";
const PASSWORD: &str = "l0gin-s3cret";

fn strata(config_home: &std::path::Path) -> Command {
    let mut cmd = Command::cargo_bin("strata").unwrap();
    cmd.env("XDG_CONFIG_HOME", config_home)
        .env_remove("REGISTRY_AUTH_FILE")
        .env_remove("DOCKER_CONFIG");
    cmd
}

fn output_text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn login_saves_checked_credentials_and_logout_removes_them() {
    let registry = Registry::start(
        Auth::Htpasswd {
            user: USER.into(),
            password: PASSWORD.into(),
        },
        None,
    );
    let host = registry.host();
    let home = tempfile::tempdir().unwrap();
    let file = home.path().join("strata/auth.json");

    // A wrong password is refused and nothing is saved.
    let out = strata(home.path())
        .args(["login", "-u", USER, "--password-stdin", &host])
        .write_stdin("wrong-pa55\n")
        .output()
        .unwrap();
    let text = output_text(&out);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("access denied"), "{text}");
    assert!(!text.contains("wrong-pa55"), "{text}");
    assert!(!file.exists());

    let out = strata(home.path())
        .args(["login", "-u", USER, "--password-stdin", &host])
        .write_stdin(format!("{PASSWORD}\n"))
        .output()
        .unwrap();
    let text = output_text(&out);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("Login Succeeded") && !text.contains(PASSWORD),
        "{text}"
    );
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let saved: serde_json::Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert!(saved["auths"][&host]["auth"].is_string(), "{saved}");

    let out = strata(home.path())
        .args(["logout", &host])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(output_text(&out).contains("Removed login credentials"));
    let saved: serde_json::Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert!(saved["auths"].as_object().unwrap().is_empty(), "{saved}");
    let out = strata(home.path())
        .args(["logout", &host])
        .output()
        .unwrap();
    assert!(output_text(&out).contains("Not logged in"));
}

#[test]
fn login_honours_registry_auth_file_and_offline() {
    let home = tempfile::tempdir().unwrap();
    let custom = home.path().join("elsewhere/auth.json");
    // STRATA_OFFLINE=1 comes from the cargo config: a public registry is refused by name.
    let out = strata(home.path())
        .env("REGISTRY_AUTH_FILE", &custom)
        .args(["login", "-u", USER, "-p", PASSWORD, "registry.example:5000"])
        .output()
        .unwrap();
    let text = output_text(&out);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("offline") && text.contains("registry.example:5000"),
        "{text}"
    );
    assert!(!text.contains(PASSWORD), "{text}");
    assert!(!custom.exists());

    let registry = Registry::start(Auth::None, None);
    let out = strata(home.path())
        .env("REGISTRY_AUTH_FILE", &custom)
        .args(["login", "-u", USER, "-p", PASSWORD])
        .arg(format!("http://{}/", registry.host()))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", output_text(&out));
    assert!(custom.exists());
    assert!(!home.path().join("strata/auth.json").exists());
}

/// Drives a command on a pseudo-terminal: answers each prompt, then prints everything the
/// terminal showed.
const PTY_DRIVER: &str = r#"
import os, pty, sys
answers = [("Username: ", sys.argv[1]), ("Password: ", sys.argv[2])]
pid, fd = pty.fork()
if pid == 0:
    os.execv(sys.argv[3], sys.argv[3:])
seen = b""
def read_some():
    global seen
    try:
        data = os.read(fd, 4096)
    except OSError:
        data = b""
    seen += data
    return data
for prompt, answer in answers:
    while prompt.encode() not in seen:
        if not read_some():
            sys.stdout.write(seen.decode(errors="replace")); sys.exit(3)
    os.write(fd, (answer + "\n").encode())
while read_some():
    pass
_, status = os.waitpid(pid, 0)
sys.stdout.write(seen.decode(errors="replace"))
sys.exit(os.waitstatus_to_exitcode(status))
"#;

#[test]
fn login_asks_on_a_terminal_without_echoing_the_password() {
    let registry = Registry::start(
        Auth::Htpasswd {
            user: USER.into(),
            password: PASSWORD.into(),
        },
        None,
    );
    let home = tempfile::tempdir().unwrap();
    let out = std::process::Command::new("python3")
        .args(["-c", PTY_DRIVER, USER, PASSWORD])
        .arg(assert_cmd::cargo::cargo_bin("strata"))
        .args(["login", &registry.host()])
        .env("XDG_CONFIG_HOME", home.path())
        .env_remove("REGISTRY_AUTH_FILE")
        .output()
        .unwrap();
    let screen = output_text(&out);
    assert!(out.status.success(), "{screen}");
    assert!(screen.contains("Login Succeeded"), "{screen}");
    // The user name is echoed as typed; the password is not.
    assert!(screen.contains(&format!("Username: {USER}")), "{screen}");
    assert!(!screen.contains(PASSWORD), "{screen}");
    assert!(home.path().join("strata/auth.json").exists());
}

#[test]
fn login_without_a_terminal_needs_the_flags() {
    let home = tempfile::tempdir().unwrap();
    for (args, message) in [
        (&["login", "127.0.0.1:1"][..], "no user name"),
        (&["login", "-u", USER, "127.0.0.1:1"][..], "no password"),
        (
            &["login", "--password-stdin", "127.0.0.1:1"][..],
            "needs --username",
        ),
    ] {
        let out = strata(home.path())
            .args(args)
            .write_stdin("")
            .output()
            .unwrap();
        assert!(!out.status.success());
        assert!(output_text(&out).contains(message), "{}", output_text(&out));
    }
}
