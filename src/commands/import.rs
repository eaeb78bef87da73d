//! `strata import FILE|- [REF]`: a rootfs tarball becomes a one-layer image, as `docker import`.

use std::fs::File;
use std::io::{self, Read};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Args;
use serde_json::{Map, Value, json};
use strata_codec::{Compression, EncoderOptions};
use strata_store::Platform;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::image_output::open_store;

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The tarball (plain, gzip, zstd, xz or bzip2), or `-` for standard input.
    file: String,
    /// The name to give the image.
    reference: Option<String>,
    /// A Dockerfile instruction to apply to the config (CMD, ENTRYPOINT, ENV, EXPOSE, LABEL,
    /// USER, WORKDIR, VOLUME, STOPSIGNAL).
    #[arg(short, long = "change")]
    change: Vec<String>,
    /// A commit message for the history.
    #[arg(short, long)]
    message: Option<String>,
    /// The platform the image declares (default: this machine's).
    #[arg(long)]
    platform: Option<String>,
}

pub fn run(args: ImportArgs) -> anyhow::Result<ExitCode> {
    let name = args
        .reference
        .as_deref()
        .map(super::image_output::parse_new_name)
        .transpose()?;
    let platform = match &args.platform {
        Some(p) => Platform::parse(p)?,
        None => Platform::host(),
    };
    let mut container_config = Map::new();
    for c in &args.change {
        apply_change(&mut container_config, c).with_context(|| format!("--change {c:?}"))?;
    }
    if args.file.contains("://") {
        bail!("importing from a URL is not supported: download the file first");
    }
    let input: Box<dyn Read> = if args.file == "-" {
        Box::new(io::stdin().lock())
    } else {
        Box::new(File::open(&args.file).with_context(|| format!("opening {}", args.file))?)
    };

    let store = open_store()?;
    let lease = store.lease()?;
    let layer = store
        .import_layer(&lease, input, Compression::Gzip, EncoderOptions::default())
        .with_context(|| format!("importing {}", args.file))?;

    let created = created_time()?;
    let comment = args
        .message
        .clone()
        .unwrap_or_else(|| format!("Imported from {}", args.file));
    let mut config = json!({
        "architecture": platform.architecture,
        "os": platform.os,
        "created": created,
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id.to_string()]},
        "history": [{"created": created, "comment": comment}],
    });
    if let Some(v) = &platform.variant {
        config["variant"] = json!(v);
    }
    if !container_config.is_empty() {
        config["config"] = Value::Object(container_config);
    }
    let layer_desc = oci_spec::image::Descriptor::new(
        layer.media_type.as_str().into(),
        layer.size,
        layer.digest.clone(),
    );
    let names: Vec<_> = name.into_iter().collect();
    let image = store.create_image(&lease, &config, &[layer_desc], &names)?;
    println!("{}", image.id());
    Ok(ExitCode::SUCCESS)
}

/// `created` for new images: now, or `$SOURCE_DATE_EPOCH` when set (reproducible imports).
fn created_time() -> anyhow::Result<String> {
    let t = match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(s) if !s.is_empty() => {
            let secs: i64 = s.parse().context("SOURCE_DATE_EPOCH is not a number")?;
            OffsetDateTime::from_unix_timestamp(secs).context("SOURCE_DATE_EPOCH out of range")?
        }
        _ => OffsetDateTime::now_utc(),
    };
    Ok(t.format(&Rfc3339)?)
}

/// Applies one `--change` instruction to a Docker container config (`Cmd`, `Env`, ...).
///
/// A deliberately small parser for the instructions `docker import` accepts; the Dockerfile
/// frontend's parser replaces it once that crate lands.
pub(crate) fn apply_change(config: &mut Map<String, Value>, change: &str) -> anyhow::Result<()> {
    let change = change.trim();
    let (keyword, rest) = change
        .split_once(char::is_whitespace)
        .map_or((change, ""), |(k, r)| (k, r.trim()));
    match keyword.to_ascii_uppercase().as_str() {
        "CMD" => {
            config.insert("Cmd".into(), json!(exec_or_shell(rest)?));
        }
        "ENTRYPOINT" => {
            config.insert("Entrypoint".into(), json!(exec_or_shell(rest)?));
        }
        "ENV" => {
            let env = config
                .entry("Env")
                .or_insert_with(|| json!([]))
                .as_array_mut()
                .context("Env is not a list")?;
            for (k, v) in key_values(rest)? {
                let prefix = format!("{k}=");
                env.retain(|e| !e.as_str().is_some_and(|e| e.starts_with(&prefix)));
                env.push(json!(format!("{k}={v}")));
            }
        }
        "LABEL" => {
            let labels = config
                .entry("Labels")
                .or_insert_with(|| json!({}))
                .as_object_mut()
                .context("Labels is not a map")?;
            for (k, v) in key_values(rest)? {
                labels.insert(k, json!(v));
            }
        }
        "EXPOSE" => {
            let ports = config
                .entry("ExposedPorts")
                .or_insert_with(|| json!({}))
                .as_object_mut()
                .context("ExposedPorts is not a map")?;
            for p in rest.split_whitespace() {
                let p = if p.contains('/') {
                    p.to_ascii_lowercase()
                } else {
                    format!("{p}/tcp")
                };
                ports.insert(p, json!({}));
            }
        }
        "VOLUME" => {
            let list = match serde_json::from_str::<Vec<String>>(rest) {
                Ok(v) => v,
                Err(_) => rest.split_whitespace().map(str::to_string).collect(),
            };
            let volumes = config
                .entry("Volumes")
                .or_insert_with(|| json!({}))
                .as_object_mut()
                .context("Volumes is not a map")?;
            for v in list {
                volumes.insert(v, json!({}));
            }
        }
        "USER" => {
            config.insert("User".into(), json!(single(rest)?));
        }
        "WORKDIR" => {
            config.insert("WorkingDir".into(), json!(single(rest)?));
        }
        "STOPSIGNAL" => {
            config.insert("StopSignal".into(), json!(single(rest)?));
        }
        other => bail!(
            "{other} is not an instruction import accepts (CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, USER, WORKDIR, VOLUME, STOPSIGNAL)"
        ),
    }
    Ok(())
}

fn single(rest: &str) -> anyhow::Result<String> {
    if rest.is_empty() {
        bail!("needs an argument");
    }
    Ok(rest.to_string())
}

/// JSON (exec) form, or shell form wrapped in `/bin/sh -c` as Docker does.
fn exec_or_shell(rest: &str) -> anyhow::Result<Vec<String>> {
    if rest.starts_with('[')
        && let Ok(v) = serde_json::from_str::<Vec<String>>(rest)
    {
        return Ok(v);
    }
    if rest.is_empty() {
        bail!("needs a command");
    }
    Ok(vec!["/bin/sh".into(), "-c".into(), rest.into()])
}

/// `k=v k2="v 2"` pairs, or the legacy `k v with spaces` form.
fn key_values(rest: &str) -> anyhow::Result<Vec<(String, String)>> {
    let words = shell_words(rest)?;
    let Some(first) = words.first() else {
        bail!("needs at least one key and value");
    };
    if !first.contains('=') {
        let (key, value) = rest
            .split_once(char::is_whitespace)
            .context("needs a value after the key")?;
        return Ok(vec![(key.to_string(), value.trim().to_string())]);
    }
    words
        .into_iter()
        .map(|w| match w.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => bail!("{w:?} is not key=value"),
        })
        .collect()
}

/// Splits on unquoted whitespace, removing quotes and backslash escapes.
fn shell_words(s: &str) -> anyhow::Result<Vec<String>> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (None, c) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            (None, '"' | '\'') => {
                quote = Some(c);
                in_word = true;
            }
            (Some(q), c) if c == q => quote = None,
            (Some('\''), c) => word.push(c),
            (_, '\\') => {
                word.push(chars.next().unwrap_or('\\'));
                in_word = true;
            }
            (_, c) => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if quote.is_some() {
        bail!("unterminated quote");
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_become_config_fields() {
        let mut c = Map::new();
        for change in [
            r#"CMD ["/bin/sh", "-c", "echo hi"]"#,
            "ENTRYPOINT /bin/init --flag",
            r#"ENV A=1 B="two words""#,
            "ENV LEGACY some value",
            "EXPOSE 80 53/UDP",
            r#"LABEL a=b "c d"=e"#,
            "USER 1000:1000",
            "WORKDIR /srv",
            r#"VOLUME ["/data"]"#,
            "STOPSIGNAL SIGTERM",
        ] {
            apply_change(&mut c, change).unwrap();
        }
        let v = Value::Object(c);
        assert_eq!(v["Cmd"], json!(["/bin/sh", "-c", "echo hi"]));
        assert_eq!(
            v["Entrypoint"],
            json!(["/bin/sh", "-c", "/bin/init --flag"])
        );
        assert_eq!(v["Env"], json!(["A=1", "B=two words", "LEGACY=some value"]));
        assert_eq!(v["ExposedPorts"], json!({"80/tcp": {}, "53/udp": {}}));
        assert_eq!(v["Labels"], json!({"a": "b", "c d": "e"}));
        assert_eq!(v["User"], json!("1000:1000"));
        assert_eq!(v["WorkingDir"], json!("/srv"));
        assert_eq!(v["Volumes"], json!({"/data": {}}));
        assert_eq!(v["StopSignal"], json!("SIGTERM"));
        assert!(apply_change(&mut Map::new(), "RUN true").is_err());
        assert!(apply_change(&mut Map::new(), "ENV A=\"open").is_err());
    }
}
