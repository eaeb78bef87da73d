//! The image config as BuildKit writes it: Docker's config fields over OCI's, `omitempty`
//! everywhere (so `CMD []` leaves no `Cmd`), and history entries in BuildKit's words.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use strata_frontend::go_quote;
use strata_frontend::instructions::{CommandLine, HealthConfig, Healthcheck};

/// The history comment BuildKit's Dockerfile frontend writes.
pub const HISTORY_COMMENT: &str = "buildkit.dockerfile.v0";

/// The default `SHELL` on Linux.
pub fn default_shell() -> Vec<String> {
    vec!["/bin/sh".into(), "-c".into()]
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// An image config (the parts BuildKit keeps: unknown fields of a base config are dropped, as
/// BuildKit's typed config drops them).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ImageConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(
        rename = "os.version",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub os_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    #[serde(default)]
    pub config: ContainerConfig,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(default)]
    pub history: Vec<History>,
    #[serde(default)]
    pub rootfs: RootFs,
}

/// `rootfs`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RootFs {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub diff_ids: Vec<String>,
}

impl Default for RootFs {
    fn default() -> Self {
        RootFs {
            kind: "layers".into(),
            diff_ids: Vec::new(),
        }
    }
}

/// An empty JSON object, the value of `ExposedPorts` and `Volumes` entries.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Empty {}

/// The `config` object.
#[allow(non_snake_case)]
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ContainerConfig {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub User: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ExposedPorts: BTreeMap<String, Empty>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub Env: Vec<String>,
    #[serde(default, skip_serializing_if = "none_or_empty")]
    pub Entrypoint: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "none_or_empty")]
    pub Cmd: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub Volumes: BTreeMap<String, Empty>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub WorkingDir: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub Labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub StopSignal: String,
    #[serde(default, skip_serializing_if = "is_false")]
    pub ArgsEscaped: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub Healthcheck: Option<HealthcheckConfig>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub OnBuild: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub Shell: Vec<String>,
}

/// Docker's `HealthConfig` (durations in nanoseconds).
#[allow(non_snake_case)]
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct HealthcheckConfig {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub Test: Vec<String>,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub Interval: i64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub Timeout: i64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub StartPeriod: i64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub StartInterval: i64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub Retries: i64,
}

/// Go's `omitempty` on a slice: `CMD []` leaves no `Cmd`, as in BuildKit's images.
fn none_or_empty(v: &Option<Vec<String>>) -> bool {
    v.as_ref().is_none_or(Vec::is_empty)
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}

/// One history entry.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct History {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub created_by: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub author: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub comment: String,
    #[serde(default, skip_serializing_if = "is_false")]
    pub empty_layer: bool,
}

impl ContainerConfig {
    /// The value of `name` in `Env`, if set.
    pub fn env(&self, name: &str) -> Option<&str> {
        self.Env.iter().rev().find_map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv.as_str(), ""));
            (k == name).then_some(v)
        })
    }

    /// The shell for shell-form commands.
    pub fn shell(&self) -> Vec<String> {
        if self.Shell.is_empty() {
            default_shell()
        } else {
            self.Shell.clone()
        }
    }
}

fn nanos(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

impl HealthcheckConfig {
    /// The config of a `HEALTHCHECK` instruction.
    pub fn from_instruction(h: &Healthcheck) -> HealthcheckConfig {
        match h {
            Healthcheck::None => HealthcheckConfig {
                Test: vec!["NONE".into()],
                ..Default::default()
            },
            Healthcheck::Check(HealthConfig {
                test,
                interval,
                timeout,
                start_period,
                start_interval,
                retries,
            }) => HealthcheckConfig {
                Test: test.clone(),
                Interval: nanos(*interval),
                Timeout: nanos(*timeout),
                StartPeriod: nanos(*start_period),
                StartInterval: nanos(*start_interval),
                Retries: i64::from(*retries),
            },
        }
    }

    /// Go's `%q` of BuildKit's `*HealthcheckConfig`: `&{["CMD-SHELL" "x"] "5m0s" "3s" "0s" "0s" '\x03'}`.
    pub fn history_form(&self) -> String {
        format!(
            "&{{{} {} {} {} {} {}}}",
            go_quote_list(&self.Test),
            go_quote(&go_duration(self.Interval)),
            go_quote(&go_duration(self.Timeout)),
            go_quote(&go_duration(self.StartPeriod)),
            go_quote(&go_duration(self.StartInterval)),
            go_quote_rune(self.Retries),
        )
    }
}

/// The words a command runs: the shell prepended to a shell-form command (BuildKit's
/// `withShell`).
pub fn command_args(cmd: &CommandLine, shell: &[String]) -> Vec<String> {
    if cmd.shell_form {
        let mut args = shell.to_vec();
        args.extend(cmd.args.iter().cloned());
        args
    } else {
        cmd.args.clone()
    }
}

/// Go's `%q` of a `[]string`: `["a" "b"]`.
pub fn go_quote_list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| go_quote(s)).collect();
    format!("[{}]", quoted.join(" "))
}

/// Go's `%v` of a `[]string`: `[a b]`.
pub fn go_list(items: &[String]) -> String {
    format!("[{}]", items.join(" "))
}

/// Go's `%q` of an integer: a quoted rune.
fn go_quote_rune(v: i64) -> String {
    match u32::try_from(v).ok().and_then(char::from_u32) {
        Some(c) if (c as u32) >= 0x20 && c != '\x7f' && c != '\'' && c != '\\' => format!("'{c}'"),
        Some('\'') => "'\\''".into(),
        Some('\\') => "'\\\\'".into(),
        _ => format!("'\\x{:02x}'", v & 0xff),
    }
}

/// Go's `time.Duration.String()`.
pub fn go_duration(nanos: i64) -> String {
    if nanos == 0 {
        return "0s".into();
    }
    let neg = nanos < 0;
    let n = nanos.unsigned_abs();
    let body = if n < 1_000 {
        format!("{n}ns")
    } else if n < 1_000_000 {
        format!("{}µs", trim_fraction(n, 1_000))
    } else if n < 1_000_000_000 {
        format!("{}ms", trim_fraction(n, 1_000_000))
    } else {
        let total_secs = n / 1_000_000_000;
        let frac = n % 1_000_000_000;
        let h = total_secs / 3600;
        let m = (total_secs % 3600) / 60;
        let s = total_secs % 60;
        let secs = trim_fraction(s * 1_000_000_000 + frac, 1_000_000_000);
        if h > 0 {
            format!("{h}h{m}m{secs}s")
        } else if m > 0 {
            format!("{m}m{secs}s")
        } else {
            format!("{secs}s")
        }
    };
    if neg { format!("-{body}") } else { body }
}

fn trim_fraction(value: u64, unit: u64) -> String {
    let whole = value / unit;
    let frac = value % unit;
    if frac == 0 {
        return whole.to_string();
    }
    let digits = unit.ilog10() as usize;
    let f = format!("{frac:0digits$}");
    format!("{whole}.{}", f.trim_end_matches('0'))
}

/// `ONBUILD`-style removal of leading tabs of each line (`<<-` heredocs).
pub fn chomp_heredoc(data: &str) -> String {
    data.split_inclusive('\n')
        .map(|l| l.trim_start_matches('\t'))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_formats() {
        assert_eq!(
            go_quote_list(&["/bin/sh".into(), "-c".into(), "echo \"x\"".into()]),
            r#"["/bin/sh" "-c" "echo \"x\""]"#
        );
        assert_eq!(go_duration(300_000_000_000), "5m0s");
        assert_eq!(go_duration(3_000_000_000), "3s");
        assert_eq!(go_duration(1_500_000_000), "1.5s");
        assert_eq!(go_duration(3_723_000_000_000), "1h2m3s");
        assert_eq!(go_duration(2_000_000), "2ms");
        assert_eq!(go_quote_rune(3), "'\\x03'");
        assert_eq!(go_quote_rune(0), "'\\x00'");
        assert_eq!(chomp_heredoc("\t\ta\n\tb\n"), "a\nb\n");
    }

    #[test]
    fn empty_values_are_omitted() {
        let c = ContainerConfig {
            Cmd: None,
            Env: vec!["A=1".into()],
            ..Default::default()
        };
        assert_eq!(serde_json::to_string(&c).unwrap(), r#"{"Env":["A=1"]}"#);
    }
}
