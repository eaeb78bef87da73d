//! `strata debug run-bundle [--runtime R] [--network N] BUNDLE`: runs an OCI bundle like `runc run`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use strata_runtime::proxy::{PortMapping, PortProxy, Protocol};
use strata_runtime::spec::Network;
use strata_runtime::{ExternalRuntime, Sandbox, Spec, StdioSet};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Run with an external OCI runtime (runc, crun or a path) instead of strata's sandbox.
    #[arg(long)]
    runtime: Option<String>,
    /// Override the spec's network: host, none or private.
    #[arg(long, value_parser = ["host", "none", "private"])]
    network: Option<String>,
    /// Publish a container port: `[HOST_IP:]HOST_PORT:CONTAINER_PORT[/udp]` (TCP unless `/udp`,
    /// through the userspace proxy; HOST_IP defaults to 127.0.0.1).
    #[arg(short = 'p', long = "publish", value_parser = parse_publish)]
    publish: Vec<PortMapping>,
    /// Container id (external runtimes; cgroup name).
    #[arg(long, default_value = "strata-debug")]
    id: String,
    /// The bundle directory: config.json, and the rootfs it names.
    bundle: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let bundle = std::fs::canonicalize(&args.bundle)
        .with_context(|| format!("bundle {}", args.bundle.display()))?;
    let config = bundle.join("config.json");
    let text = std::fs::read(&config).with_context(|| format!("reading {}", config.display()))?;
    let mut spec: Spec =
        serde_json::from_slice(&text).with_context(|| format!("parsing {}", config.display()))?;
    if let Some(mut root) = spec.root().clone()
        && root.path().is_relative()
    {
        root.set_path(bundle.join(root.path()));
        spec.set_root(Some(root));
    }
    if let Some(network) = &args.network {
        let network = match network.as_str() {
            "host" => Network::Host,
            "none" => Network::None,
            _ => Network::Private,
        };
        strata_runtime::spec::set_network(&mut spec, network);
    }
    if let Some(runtime) = &args.runtime {
        let status = strata_runtime::run_external(
            &ExternalRuntime::parse(runtime),
            &spec,
            &bundle,
            &args.id,
        )?;
        return Ok(exit_code(status.code));
    }
    let sandbox = Sandbox::new("/proc/self/exe");
    let mut container = sandbox.spawn(&spec, StdioSet::inherit())?;
    let _proxy = match args.publish.is_empty() {
        true => None,
        false => Some(
            PortProxy::for_container(&sandbox, &container, &args.publish)
                .context("publishing ports")?,
        ),
    };
    let mut output = None;
    if let Some(pty) = container.pty.take() {
        // A terminal was asked for: relay it to our own stdio (no raw mode: a debugging aid).
        let mut input = pty.try_clone()?;
        std::thread::spawn(move || std::io::copy(&mut std::io::stdin().lock(), &mut input));
        output = Some(std::thread::spawn(move || {
            std::io::copy(&mut &pty, &mut std::io::stdout().lock())
        }));
    }
    let exit = container.wait()?;
    if let Some(output) = output {
        // Ends with EIO once the terminal's last user is gone.
        let _ = output.join();
    }
    for warning in &exit.warnings {
        eprintln!("strata: warning: {warning}");
    }
    if let Some(message) = &exit.exec_error {
        eprintln!("strata: {message}");
    }
    if exit.oom_killed {
        eprintln!("strata: the container ran out of memory (OOM killed)");
    }
    Ok(exit_code(exit.status.code))
}

fn exit_code(code: i32) -> ExitCode {
    ExitCode::from(u8::try_from(code).unwrap_or(255))
}

fn parse_publish(value: &str) -> Result<PortMapping, String> {
    let bad = || format!("expected [HOST_IP:]HOST_PORT:CONTAINER_PORT[/udp], got {value:?}");
    let (spec, protocol) = match value.strip_suffix("/udp") {
        Some(spec) => (spec, Protocol::Udp),
        None => (value, Protocol::Tcp),
    };
    let (host, container) = spec.rsplit_once(':').ok_or_else(bad)?;
    let container_port = container.parse().map_err(|_| bad())?;
    let host = match host.rsplit_once(':') {
        Some((ip, port)) => format!("{ip}:{port}"),
        None => format!("127.0.0.1:{host}"),
    };
    Ok(PortMapping {
        host: host.parse().map_err(|_| bad())?,
        container_port,
        protocol,
    })
}
