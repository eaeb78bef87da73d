//! `RUN --mount=...` values: BuildKit's `parseMount`, typed.
//!
//! As in BuildKit, a mount is checked twice: when the Dockerfile is parsed (only what needs no
//! variables: the CSV syntax, `from=` without `$`, a secret without `from`), and fully when the
//! stage is evaluated, after each value is expanded with the environment of that step.

use crate::golang::{parse_bool, parse_uint, quote, ram_in_bytes, suggest};
use crate::instructions::MountSpec;

/// The mount types BuildKit supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MountType {
    /// `type=bind` (default): a read-only view of a stage, image or the context.
    Bind,
    /// `type=cache`: a persistent cache directory.
    Cache,
    /// `type=tmpfs`.
    Tmpfs,
    /// `type=secret`: a build secret as a file (or an environment variable).
    Secret,
    /// `type=ssh`: an SSH agent socket.
    Ssh,
}

impl MountType {
    /// The name used in `type=`.
    pub fn as_str(self) -> &'static str {
        match self {
            MountType::Bind => "bind",
            MountType::Cache => "cache",
            MountType::Tmpfs => "tmpfs",
            MountType::Secret => "secret",
            MountType::Ssh => "ssh",
        }
    }
}

/// `sharing=` of a cache mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sharing {
    /// Concurrent builds share the cache (default).
    Shared,
    /// Each concurrent build gets its own copy.
    Private,
    /// Concurrent builds wait for each other.
    Locked,
}

/// One typed, expanded `--mount`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// `type=`.
    pub kind: MountType,
    /// `from=`: stage name or index, or image, to mount from (bind and cache).
    pub from: Option<String>,
    /// `source=`/`src=`: the path inside `from` (or the secret id for secrets).
    pub source: Option<String>,
    /// `target=`/`dst=`/`destination=`: where it is mounted (relative to the working directory).
    pub target: Option<String>,
    /// `ro`/`rw`. Defaults as BuildKit: cache and tmpfs writable, others read-only.
    pub read_only: bool,
    /// `size=` of a tmpfs, in bytes.
    pub size_limit: Option<i64>,
    /// `id=`: the cache id, secret id or SSH agent id.
    pub id: Option<String>,
    /// `sharing=` of a cache.
    pub sharing: Option<Sharing>,
    /// `required` of a secret or ssh mount.
    pub required: bool,
    /// `mode=` (octal) of a cache, secret or ssh mount.
    pub mode: Option<u32>,
    /// `uid=`.
    pub uid: Option<u32>,
    /// `gid=`.
    pub gid: Option<u32>,
    /// `env=`: expose a secret as this environment variable.
    pub env: Option<String>,
}

impl Mount {
    /// The id and target BuildKit uses for a secret mount: the id defaults to the target's base
    /// name, the target to `/run/secrets/<id>` (unless the secret goes to `env` only).
    pub fn secret_id_and_target(&self) -> Option<(String, Option<String>)> {
        let id = self
            .source
            .clone()
            .or_else(|| self.id.clone())
            .or_else(|| self.target.as_deref().map(crate::golang::base_name))?;
        let target = match (&self.target, &self.env) {
            (Some(t), _) => Some(t.clone()),
            (None, Some(_)) => None,
            (None, None) => Some(format!("/run/secrets/{}", crate::golang::base_name(&id))),
        };
        Some((id, target))
    }
}

const ALL_KEYS: &[&str] = &[
    "type",
    "from",
    "source",
    "target",
    "readonly",
    "id",
    "sharing",
    "required",
    "size",
    "mode",
    "uid",
    "gid",
    "src",
    "dst",
    "destination",
    "ro",
    "rw",
    "readwrite",
    "env",
];

/// Splits one CSV record as Go's `encoding/csv` does (`""` escapes a quote inside quotes).
fn csv_fields(val: &str) -> Result<Vec<String>, String> {
    let err = |column: usize, what: &str| {
        format!("failed to parse csv mounts: parse error on line 1, column {column}: {what}")
    };
    if val.is_empty() {
        return Err("failed to parse csv mounts: EOF".into());
    }
    let chars: Vec<char> = val.chars().collect();
    let mut fields = Vec::new();
    let mut i = 0;
    loop {
        let mut field = String::new();
        if chars.get(i) == Some(&'"') {
            i += 1;
            loop {
                match chars.get(i) {
                    None => return Err(err(i + 1, "extraneous or missing \" in quoted-field")),
                    Some('"') if chars.get(i + 1) == Some(&'"') => {
                        field.push('"');
                        i += 2;
                    }
                    Some('"') => {
                        i += 1;
                        match chars.get(i) {
                            None | Some(',') => break,
                            Some(_) => {
                                return Err(err(i + 1, "extraneous or missing \" in quoted-field"));
                            }
                        }
                    }
                    Some(c) => {
                        field.push(*c);
                        i += 1;
                    }
                }
            }
        } else {
            while let Some(&c) = chars.get(i) {
                if c == ',' {
                    break;
                }
                if c == '"' {
                    return Err(err(i + 1, "bare \" in non-quoted-field"));
                }
                field.push(c);
                i += 1;
            }
        }
        fields.push(field);
        if chars.get(i) == Some(&',') {
            i += 1;
            continue;
        }
        return Ok(fields);
    }
}

/// The parse-time check of a `--mount` value (BuildKit's `parseMount` without an expander).
pub(crate) fn pre_check(raw: &str) -> Result<MountSpec, String> {
    let fields = csv_fields(raw)?;
    let mut from = None;
    let mut kind_is_secret = false;
    for field in &fields {
        let Some((key, value)) = field.split_once('=') else {
            continue;
        };
        match key.to_lowercase().as_str() {
            "from" => {
                if let Some(idx) = value.find('$')
                    && idx != value.len() - 1
                {
                    return Err(
                        "'from' doesn't support variable expansion, define alias stage instead"
                            .into(),
                    );
                }
                from = Some(value.to_string());
            }
            "type" if value.eq_ignore_ascii_case("secret") => kind_is_secret = true,
            _ => {}
        }
    }
    if kind_is_secret && from.is_some() {
        return Err("secret mount should not have a from".into());
    }
    Ok(MountSpec {
        raw: raw.to_string(),
        from,
    })
}

fn invalid_value(key: &str, value: &str) -> String {
    format!("invalid value for {key}: {value}")
}

fn parse_id(value: &str, key: &str) -> Result<u32, String> {
    parse_uint(value, 10, 32)
        .map(|v| v as u32)
        .map_err(|_| format!("invalid value {value} for {key}"))
}

/// BuildKit's `parseMount` with an expander: every value is expanded, then validated.
pub fn parse_mount(
    raw: &str,
    expand: &mut dyn FnMut(&str) -> Result<String, crate::Error>,
) -> Result<Mount, crate::Error> {
    let fail = |m: String| crate::Error::new(crate::ErrorKind::Instruction, m);
    let fields = csv_fields(raw).map_err(fail)?;
    let mut m = Mount {
        kind: MountType::Bind,
        from: None,
        source: None,
        target: None,
        read_only: false,
        size_limit: None,
        id: None,
        sharing: None,
        required: false,
        mode: None,
        uid: None,
        gid: None,
        env: None,
    };
    let mut ro_auto = true;
    let allows_required = |m: &Mount| matches!(m.kind, MountType::Secret | MountType::Ssh);
    for field in &fields {
        let (key, value) = match field.split_once('=') {
            Some((k, v)) => (k.to_lowercase(), Some(v)),
            None => (field.to_lowercase(), None),
        };
        let Some(value) = value else {
            match key.as_str() {
                "readonly" | "ro" => {
                    m.read_only = true;
                    ro_auto = false;
                }
                "readwrite" | "rw" => {
                    m.read_only = false;
                    ro_auto = false;
                }
                "required" if allows_required(&m) => m.required = true,
                "required" => {
                    return Err(fail(format!(
                        "unexpected key '{key}' for mount type '{}'",
                        m.kind.as_str()
                    )));
                }
                _ => {
                    return Err(fail(format!(
                        "invalid field '{field}' must be a key=value pair"
                    )));
                }
            }
            continue;
        };
        let value = expand(value)?;
        let bool_value = |value: &str| parse_bool(value).ok_or_else(|| invalid_value(&key, value));
        match key.as_str() {
            "type" => {
                m.kind = match value.to_lowercase().as_str() {
                    "bind" => MountType::Bind,
                    "cache" => MountType::Cache,
                    "tmpfs" => MountType::Tmpfs,
                    "secret" => MountType::Secret,
                    "ssh" => MountType::Ssh,
                    _ => {
                        return Err(fail(suggest(
                            format!("unsupported mount type {}", quote(&value)),
                            &value,
                            &["bind", "cache", "tmpfs", "secret", "ssh"],
                            true,
                        )));
                    }
                }
            }
            "from" => m.from = Some(value),
            "source" | "src" => m.source = Some(value),
            "target" | "dst" | "destination" => m.target = Some(value),
            "readonly" | "ro" => {
                m.read_only = bool_value(&value).map_err(fail)?;
                ro_auto = false;
            }
            "readwrite" | "rw" => {
                m.read_only = !bool_value(&value).map_err(fail)?;
                ro_auto = false;
            }
            "required" if allows_required(&m) => m.required = bool_value(&value).map_err(fail)?,
            "size" if m.kind == MountType::Tmpfs => {
                m.size_limit =
                    Some(ram_in_bytes(&value).map_err(|_| fail(invalid_value(&key, &value)))?)
            }
            "required" | "size" => {
                return Err(fail(format!(
                    "unexpected key '{key}' for mount type '{}'",
                    m.kind.as_str()
                )));
            }
            "id" => m.id = Some(value),
            "sharing" => {
                m.sharing = Some(match value.to_lowercase().as_str() {
                    "shared" => Sharing::Shared,
                    "private" => Sharing::Private,
                    "locked" => Sharing::Locked,
                    _ => {
                        return Err(fail(suggest(
                            format!("unsupported sharing value {}", quote(&value)),
                            &value,
                            &["shared", "private", "locked"],
                            true,
                        )));
                    }
                })
            }
            "mode" => {
                m.mode = Some(
                    parse_uint(&value, 8, 32)
                        .map(|v| v as u32)
                        .map_err(|_| fail(format!("invalid value {value} for mode")))?,
                )
            }
            "uid" => m.uid = Some(parse_id(&value, "uid").map_err(fail)?),
            "gid" => m.gid = Some(parse_id(&value, "gid").map_err(fail)?),
            "env" => m.env = Some(value),
            _ => {
                return Err(fail(suggest(
                    format!("unexpected key '{key}' in '{field}'"),
                    &key,
                    ALL_KEYS,
                    true,
                )));
            }
        }
    }
    validate(&mut m, ro_auto).map_err(fail)?;
    Ok(m)
}

/// BuildKit's `validateMount`.
fn validate(m: &mut Mount, ro_auto: bool) -> Result<(), String> {
    let file_info_allowed = matches!(
        m.kind,
        MountType::Secret | MountType::Ssh | MountType::Cache
    );
    if !file_info_allowed {
        let kind = quote(m.kind.as_str());
        if m.mode.is_some() {
            return Err(format!("mode not allowed for {kind} type mounts"));
        }
        if m.uid.is_some() {
            return Err(format!("uid not allowed for {kind} type mounts"));
        }
        if m.gid.is_some() {
            return Err(format!("gid not allowed for {kind} type mounts"));
        }
    }
    if ro_auto {
        m.read_only = !matches!(m.kind, MountType::Cache | MountType::Tmpfs);
    }
    if m.kind == MountType::Secret {
        if m.from.is_some() {
            return Err("secret mount should not have a from".into());
        }
        if m.sharing.is_some() {
            return Err("secret mount should not define sharing".into());
        }
        if m.source.is_none() && m.target.is_none() && m.id.is_none() {
            return Err("invalid secret mount. one of source, target required".into());
        }
        if m.source.is_some() && m.id.is_some() {
            return Err("both source and id can't be set".into());
        }
    }
    if m.sharing.is_some() && m.kind != MountType::Cache {
        return Err(format!(
            "invalid cache sharing set for {} mount",
            m.kind.as_str()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &str) -> Result<Mount, String> {
        parse_mount(raw, &mut |v| Ok(v.to_string())).map_err(|e| e.message().to_string())
    }

    #[test]
    fn cache_mount_options() {
        let m =
            parse("type=cache,target=/root/.cache,id=go,sharing=locked,mode=0700,uid=1").unwrap();
        assert_eq!(m.kind, MountType::Cache);
        assert_eq!(m.target.as_deref(), Some("/root/.cache"));
        assert_eq!(m.sharing, Some(Sharing::Locked));
        assert_eq!(m.mode, Some(0o700));
        assert!(!m.read_only);
    }

    #[test]
    fn secret_defaults() {
        let m = parse("type=secret,id=npmrc,required").unwrap();
        assert!(m.required);
        assert!(m.read_only);
        assert_eq!(
            m.secret_id_and_target(),
            Some(("npmrc".into(), Some("/run/secrets/npmrc".into())))
        );
    }

    #[test]
    fn errors_match_buildkit() {
        assert_eq!(
            parse("type=bind,mode=0700").unwrap_err(),
            "mode not allowed for \"bind\" type mounts"
        );
        assert_eq!(
            parse("type=cahce").unwrap_err(),
            "unsupported mount type \"cahce\" (did you mean cache?)"
        );
        assert_eq!(
            parse("type=bind,tagret=/x").unwrap_err(),
            "unexpected key 'tagret' in 'tagret=/x' (did you mean target?)"
        );
        assert_eq!(
            parse("type=tmpfs,size=lots").unwrap_err(),
            "invalid value for size: lots"
        );
        assert!(pre_check("type=bind,from=$X").is_err());
        assert!(pre_check("type=secret,from=a").is_err());
        assert_eq!(csv_fields("\"a=b,c\",d").unwrap(), vec!["a=b,c", "d"]);
        assert!(csv_fields("a=\"b\"").is_err());
    }
}
