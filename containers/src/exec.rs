//! `exec`: one more process in a running container, set up as its command is (the spec the
//! monitor used) except for what the options change.

use std::os::fd::AsFd;
use std::path::Path;

use strata_runtime::spec::{DEFAULT_CAPABILITIES, set_user};
use strata_runtime::user::resolve_user;
use strata_runtime::{Container, Sandbox, Spec, StdioSet};

use crate::error::{Error, Result};
use crate::fsutil::read_json;
use crate::options::merge_env;
use crate::process::open_pidfd;
use crate::record::Status;
use crate::registry::Containers;
use crate::spec::process_env;

/// What `exec` runs.
#[derive(Debug, Clone, Default)]
pub struct ExecOptions {
    pub cmd: Vec<String>,
    /// `K=V` entries over the container's environment.
    pub env: Vec<String>,
    /// The container's user unless given.
    pub user: Option<String>,
    /// The container's working directory unless given.
    pub workdir: Option<String>,
    /// A terminal (`-t`).
    pub tty: bool,
    /// The caller's terminal size (rows, columns): the exec'd terminal starts at it.
    pub tty_size: Option<(u16, u16)>,
}

impl Containers {
    /// Starts `options.cmd` inside running container `name_or_id`: it joins the container's
    /// namespaces and cgroup. [`Container::wait`] gives its exit status.
    pub fn exec(
        &self,
        name_or_id: &str,
        options: &ExecOptions,
        stdio: StdioSet,
    ) -> Result<Container> {
        let record = self.get(name_or_id)?;
        let id = &record.config.id;
        let not_running = || Error::Invalid(format!("container {id} is not running"));
        if record.state.status != Status::Running {
            return Err(not_running());
        }
        if record.config.host.runtime.is_some() {
            return Err(Error::Invalid(format!(
                "container {id} runs under an external runtime: exec it with that runtime"
            )));
        }
        if options.cmd.is_empty() {
            return Err(Error::Invalid("exec needs a command".into()));
        }
        let rootfs = record.state.rootfs.clone().ok_or_else(not_running)?;
        let mut spec: Spec = read_json(&self.spec_path(id))?;
        let mut process = spec.process().clone().unwrap_or_default();
        process.set_args(Some(options.cmd.clone()));
        let mut env = process_env(&record.config);
        if options.tty {
            merge_env(&mut env, &["TERM=xterm".to_string()]);
        }
        merge_env(&mut env, &options.env);
        process.set_env(Some(env));
        process.set_terminal(Some(options.tty));
        if let Some(size) = options.tty_size.filter(|_| options.tty) {
            crate::spec::set_console_size(&mut process, size);
        }
        if let Some(w) = &options.workdir {
            if !w.starts_with('/') {
                return Err(Error::Invalid(format!(
                    "the working directory '{w}' is invalid, it needs to be an absolute path"
                )));
            }
            process.set_cwd(w.into());
        }
        // Docker's default capabilities again: the container's user may have had them dropped.
        if let Some(mut caps) = process.capabilities().clone() {
            let defaults = DEFAULT_CAPABILITIES
                .iter()
                .filter_map(|c| c.strip_prefix("CAP_").and_then(|c| c.parse().ok()))
                .collect::<std::collections::HashSet<_>>();
            caps.set_bounding(Some(defaults.clone()));
            caps.set_effective(Some(defaults.clone()));
            caps.set_permitted(Some(defaults));
            process.set_capabilities(Some(caps));
        }
        spec.set_process(Some(process));
        let user = options
            .user
            .as_deref()
            .unwrap_or(&record.config.config.user);
        let resolved =
            resolve_user(Path::new(&rootfs), user).map_err(|e| Error::Invalid(e.to_string()))?;
        set_user(&mut spec, &resolved);
        let pidfd = open_pidfd(record.state.pid, record.state.pid_start).ok_or_else(not_running)?;
        Ok(Sandbox::new(self.exe()).exec(pidfd.as_fd(), &spec, stdio)?)
    }
}
