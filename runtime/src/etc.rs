//! Generated `/etc/hosts`, `/etc/resolv.conf` and `/etc/hostname`: written to a state directory
//! on the host and bind-mounted, never written into the rootfs (so a RUN step's diff holds none
//! of them; mount points that had to be created are removed after the run, as BuildKit does).

use std::path::Path;

use oci_spec::runtime::Spec;

use crate::spec::{Network, add_bind};

/// What to generate.
#[derive(Debug, Clone)]
pub struct EtcFiles {
    pub hostname: String,
    /// `--add-host name:ip` lines.
    pub extra_hosts: Vec<(String, std::net::IpAddr)>,
    pub network: Network,
    /// Also `/etc/hostname` (Docker containers have it; BuildKit's RUN does not).
    pub hostname_file: bool,
    /// Bind read-only (BuildKit's RUN) or read-write (Docker containers).
    pub readonly: bool,
}

/// `/etc/hosts`: loopback names and the hostname (BuildKit's form), then the extra hosts.
pub fn hosts_content(files: &EtcFiles) -> String {
    let mut s = format!(
        "127.0.0.1\tlocalhost {}\n::1\tlocalhost ip6-localhost ip6-loopback\n",
        files.hostname
    );
    for (name, ip) in &files.extra_hosts {
        s.push_str(&format!("{ip}\t{name}\n"));
    }
    s
}

/// `/etc/resolv.conf` from the host's: as is for the host network; otherwise without loopback
/// nameservers (unreachable from another namespace), falling back to Docker's public defaults.
pub fn resolv_conf_content(host: &str, network: Network) -> String {
    if network == Network::Host {
        return host.to_string();
    }
    let mut out = String::new();
    let mut nameservers = 0;
    for line in host.lines() {
        let mut words = line.split_whitespace();
        if words.next() == Some("nameserver") {
            let addr = words.next().unwrap_or_default();
            if addr
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
            {
                continue;
            }
            nameservers += 1;
        }
        out.push_str(line);
        out.push('\n');
    }
    if nameservers == 0 {
        out.push_str("nameserver 8.8.8.8\nnameserver 8.8.4.4\n");
    }
    out
}

/// Where the generated files are mounted in a container.
pub const MOUNTED_FILES: [&str; 3] = ["/etc/hosts", "/etc/resolv.conf", "/etc/hostname"];

/// Writes the files into `state_dir` and adds their bind mounts to `spec`.
pub fn mount_etc_files(spec: &mut Spec, state_dir: &Path, files: &EtcFiles) -> std::io::Result<()> {
    std::fs::create_dir_all(state_dir)?;
    let host_resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let [hosts, resolv_conf, hostname] = MOUNTED_FILES;
    let mut generated = vec![
        ("hosts", hosts_content(files), hosts),
        (
            "resolv.conf",
            resolv_conf_content(&host_resolv, files.network),
            resolv_conf,
        ),
    ];
    if files.hostname_file {
        generated.push(("hostname", format!("{}\n", files.hostname), hostname));
    }
    for (name, content, destination) in generated {
        let path = state_dir.join(name);
        std::fs::write(&path, content)?;
        add_bind(spec, &path, Path::new(destination), files.readonly);
    }
    if spec.hostname().is_none() {
        spec.set_hostname(Some(files.hostname.clone()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_drops_loopback_nameservers() {
        let host = "search example\nnameserver 127.0.0.53\nnameserver 10.0.0.2\n";
        assert_eq!(
            resolv_conf_content(host, Network::Private),
            "search example\nnameserver 10.0.0.2\n"
        );
        assert!(resolv_conf_content("nameserver 127.0.0.1\n", Network::None).contains("8.8.8.8"));
        assert_eq!(resolv_conf_content(host, Network::Host), host);
    }
}
