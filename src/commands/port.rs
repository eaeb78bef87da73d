//! `strata port CONTAINER [PRIVATE_PORT[/PROTO]]`: where a running container's ports are
//! published on the host, as Docker prints it (`80/tcp -> 0.0.0.0:8080`).

use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Args;

use super::container_output::{host_address, open_containers};

#[derive(Debug, Args)]
pub struct PortArgs {
    container: String,
    /// Only this container port (`80`, `53/udp`): its host addresses alone.
    private_port: Option<String>,
}

pub fn run(args: PortArgs) -> anyhow::Result<ExitCode> {
    let containers = open_containers()?;
    let record = containers.get(&args.container)?;
    let mut ports = record.state.ports;
    ports.sort_by(|a, b| {
        (a.container_port, &a.protocol, &a.host_ip, a.host_port).cmp(&(
            b.container_port,
            &b.protocol,
            &b.host_ip,
            b.host_port,
        ))
    });
    let Some(wanted) = args.private_port else {
        for p in &ports {
            println!("{}/{} -> {}", p.container_port, p.protocol, host_address(p));
        }
        return Ok(ExitCode::SUCCESS);
    };
    let (number, protocol) = wanted.split_once('/').unwrap_or((&wanted, "tcp"));
    let number: u16 = number
        .parse()
        .with_context(|| format!("invalid port {number:?}"))?;
    let protocol = protocol.to_ascii_lowercase();
    let matching: Vec<_> = ports
        .iter()
        .filter(|p| p.container_port == number && p.protocol == protocol)
        .collect();
    if matching.is_empty() {
        bail!(
            "No public port '{number}/{protocol}' published for {}",
            args.container
        );
    }
    for p in matching {
        println!("{}", host_address(p));
    }
    Ok(ExitCode::SUCCESS)
}
