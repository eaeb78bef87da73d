//! Helpers shared by the build tests: a store with the busybox base (one tarball per test
//! binary), `strata build` invocations, JSON progress events, and a description of a built
//! image in imgtree's terms (config fields, history, layer count, merged filesystem) with
//! imgtree's comparison rules.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use serde_json::{Map, Value, json};
use strata_codec::{Decoder, HashingWriter};
use strata_store::Store;

/// A store root of its own, removed on drop.
pub struct Root {
    pub dir: tempfile::TempDir,
}

impl Root {
    /// A new store with `busybox:latest` imported.
    pub fn with_busybox() -> Root {
        let root = Root {
            dir: tempfile::tempdir().expect("temp dir"),
        };
        let out = root
            .strata()
            .args(["import", busybox_tar().to_str().unwrap(), "busybox:latest"])
            .output()
            .unwrap();
        assert!(out.status.success(), "import: {}", text(&out.stderr));
        root
    }

    pub fn path(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    /// `strata` with `STRATA_ROOT` pointing here.
    pub fn strata(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_strata"));
        c.env("STRATA_ROOT", self.path());
        c.stdin(Stdio::null());
        c
    }

    pub fn store(&self) -> Store {
        Store::open(self.path()).unwrap()
    }

    /// `strata build --progress=json ARGS`; returns the output.
    pub fn build_json(&self, args: &[&str]) -> Output {
        self.strata()
            .arg("build")
            .arg("--progress=json")
            .args(args)
            .output()
            .unwrap()
    }
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The JSON events on stdout.
pub fn events(out: &Output) -> Vec<Value> {
    text(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Names of the steps that ran (`started`), in order.
pub fn started(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["event"] == "started")
        .map(|e| e["name"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// Names of the steps that came from the cache.
pub fn cached(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["event"] == "cached")
        .map(|e| e["name"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// The reason a step (by name prefix match) ran.
pub fn reason_of<'a>(events: &'a [Value], name_contains: &str) -> &'a Value {
    events
        .iter()
        .find(|e| {
            e["event"] == "started"
                && e["name"]
                    .as_str()
                    .is_some_and(|n| n.contains(name_contains))
        })
        .map(|e| &e["reason"])
        .unwrap_or_else(|| panic!("no started step named like {name_contains:?} in {events:#?}"))
}

/// A tar of a busybox rootfs (as the goldens' base): /bin/busybox, a symlink per applet,
/// /etc/passwd, /etc/group, empty /tmp and /root. Built once under Cargo's target tmp dir.
pub fn busybox_tar() -> &'static Path {
    static TAR: OnceLock<PathBuf> = OnceLock::new();
    TAR.get_or_init(|| {
        let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("build-tests");
        std::fs::create_dir_all(&cache).unwrap();
        let tar = cache.join(format!("busybox-{}.tar", std::process::id()));
        let rootfs = tempfile::tempdir().unwrap();
        let r = rootfs.path();
        for d in ["bin", "etc", "tmp", "root"] {
            std::fs::create_dir(r.join(d)).unwrap();
        }
        std::fs::copy("/bin/busybox", r.join("bin/busybox")).unwrap();
        let list = Command::new("/bin/busybox").arg("--list").output().unwrap();
        for applet in text(&list.stdout).split_whitespace() {
            if applet != "busybox" {
                std::os::unix::fs::symlink("busybox", r.join("bin").join(applet)).unwrap();
            }
        }
        std::fs::write(r.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
        std::fs::write(r.join("etc/group"), "root:x:0:\n").unwrap();
        let status = Command::new("tar")
            .args(["-C", r.to_str().unwrap(), "-cf", tar.to_str().unwrap(), "."])
            .status()
            .unwrap();
        assert!(status.success());
        tar
    })
}

// ------------------------------------------------------------------------------------------
// Describing an image (imgtree's format)
// ------------------------------------------------------------------------------------------

/// Config keys imgtree reports from `config`, then the top-level image fields.
pub const CONFIG_KEYS: &[&str] = &[
    "Env",
    "Cmd",
    "Entrypoint",
    "WorkingDir",
    "User",
    "Labels",
    "ExposedPorts",
    "Volumes",
    "StopSignal",
    "Healthcheck",
    "OnBuild",
    "Shell",
];
pub const IMAGE_KEYS: &[&str] = &["author", "os", "architecture", "variant"];
/// Keys whose "" and null mean the same.
pub const STRING_KEYS: &[&str] = &["WorkingDir", "User", "StopSignal", "author", "variant"];

#[derive(Debug, Clone)]
struct Node {
    kind: &'static str,
    mode: u32,
    uid: u64,
    gid: u64,
    size: Option<u64>,
    sha256: Option<String>,
    linkname: Option<String>,
    dev: Option<(u32, u32)>,
    xattrs: BTreeMap<String, String>,
    inode: Option<u64>,
}

enum Record {
    Whiteout(String),
    Opaque(String),
    Entry(String, Node),
    Hardlink(String, Node, String),
}

/// `posixpath.normpath("/" + name)`.
fn norm_path(name: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    for c in name.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    format!("/{}", out.join("/"))
}

fn parent(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &path[..i],
    }
}

fn xattr_text(v: &[u8]) -> String {
    match std::str::from_utf8(v) {
        Ok(s) => s.to_string(),
        Err(_) => {
            let mut s = String::from("base64:");
            s.push_str(&base64_encode(v));
            s
        }
    }
}

fn base64_encode(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn read_layer(reader: impl Read) -> Vec<Record> {
    let (_, decoder) = Decoder::detect(std::io::BufReader::new(reader)).expect("layer compression");
    let mut archive = tar::Archive::new(decoder);
    let mut records = Vec::new();
    for entry in archive.entries().expect("layer tar") {
        let mut entry = entry.expect("layer entry");
        let path = norm_path(&text(&entry.path_bytes()));
        let base = path.rsplit('/').next().unwrap_or("").to_string();
        let dir = parent(&path).to_string();
        if base == ".wh..wh..opq" {
            records.push(Record::Opaque(dir));
            continue;
        }
        if base.starts_with(".wh..wh.") {
            continue;
        }
        if let Some(name) = base.strip_prefix(".wh.") {
            records.push(Record::Whiteout(norm_path(&format!("{dir}/{name}"))));
            continue;
        }
        let mut xattrs = BTreeMap::new();
        if let Ok(Some(exts)) = entry.pax_extensions() {
            for ext in exts.flatten() {
                if let Some(name) = ext.key().ok().and_then(|k| k.strip_prefix("SCHILY.xattr.")) {
                    xattrs.insert(name.to_string(), xattr_text(ext.value_bytes()));
                }
            }
        }
        let h = entry.header();
        let mut node = Node {
            kind: "file",
            mode: h.mode().unwrap_or(0) & 0o7777,
            uid: h.uid().unwrap_or(0),
            gid: h.gid().unwrap_or(0),
            size: None,
            sha256: None,
            linkname: None,
            dev: None,
            xattrs,
            inode: None,
        };
        let et = h.entry_type();
        let link = entry
            .link_name_bytes()
            .map(|l| text(&l))
            .unwrap_or_default();
        if et.is_hard_link() {
            records.push(Record::Hardlink(path, node, norm_path(&link)));
            continue;
        }
        if et.is_dir() {
            node.kind = "dir";
        } else if et.is_symlink() {
            node.kind = "symlink";
            node.linkname = Some(link);
        } else if et.is_character_special() || et.is_block_special() {
            node.kind = if et.is_character_special() {
                "char"
            } else {
                "block"
            };
            node.dev = Some((
                h.device_major().ok().flatten().unwrap_or(0),
                h.device_minor().ok().flatten().unwrap_or(0),
            ));
        } else if et.is_fifo() {
            node.kind = "fifo";
        } else {
            let mut w = HashingWriter::new(std::io::sink());
            let n = std::io::copy(&mut entry, &mut w).expect("layer content");
            let (_, digest, _) = w.finish();
            node.size = Some(n);
            node.sha256 = Some(digest.digest().to_string());
        }
        records.push(Record::Entry(path, node));
    }
    records
}

#[derive(Default)]
struct Tree {
    nodes: BTreeMap<String, Node>,
    next_inode: u64,
}

impl Tree {
    fn remove(&mut self, path: &str) {
        self.nodes.remove(path);
        self.remove_children(path);
    }

    fn remove_children(&mut self, path: &str) {
        let prefix = format!("{}/", path.trim_end_matches('/'));
        self.nodes.retain(|p, _| !p.starts_with(&prefix));
    }

    fn ensure_parents(&mut self, path: &str) {
        let mut missing = Vec::new();
        let mut p = parent(path).to_string();
        while p != "/" {
            match self.nodes.get(&p) {
                Some(n) if n.kind == "dir" => break,
                Some(_) => self.remove(&p.clone()),
                None => {}
            }
            missing.push(p.clone());
            p = parent(&p).to_string();
        }
        for m in missing.into_iter().rev() {
            self.nodes.insert(
                m,
                Node {
                    kind: "dir",
                    mode: 0o755,
                    uid: 0,
                    gid: 0,
                    size: None,
                    sha256: None,
                    linkname: None,
                    dev: None,
                    xattrs: BTreeMap::new(),
                    inode: None,
                },
            );
        }
    }

    fn apply(&mut self, records: Vec<Record>) {
        for r in &records {
            match r {
                Record::Whiteout(p) => self.remove(p),
                Record::Opaque(p) => self.remove_children(p),
                _ => {}
            }
        }
        for r in records {
            let (path, mut node) = match r {
                Record::Entry(p, n) => (p, n),
                Record::Hardlink(p, n, target) => match self.nodes.get_mut(&target) {
                    Some(t) if t.kind != "dir" => {
                        if t.inode.is_none() {
                            self.next_inode += 1;
                            t.inode = Some(self.next_inode);
                        }
                        (p, t.clone())
                    }
                    _ => {
                        let mut n = n;
                        n.kind = "hardlink";
                        n.linkname = Some(target);
                        self.next_inode += 1;
                        n.inode = Some(self.next_inode);
                        (p, n)
                    }
                },
                _ => continue,
            };
            if path == "/" {
                continue;
            }
            self.ensure_parents(&path);
            if let Some(existing) = self.nodes.get(&path) {
                if existing.kind == "dir" && node.kind == "dir" {
                    self.nodes.insert(path, node);
                    continue;
                }
                self.remove(&path.clone());
            }
            if node.inode.is_none() && node.kind != "dir" {
                self.next_inode += 1;
                node.inode = Some(self.next_inode);
            }
            self.nodes.insert(path, node);
        }
    }

    fn entries(&self) -> Vec<Value> {
        let mut groups: HashMap<u64, Vec<&String>> = HashMap::new();
        for (p, n) in &self.nodes {
            if let Some(i) = n.inode {
                groups.entry(i).or_default().push(p);
            }
        }
        let mut leader: HashMap<&String, &String> = HashMap::new();
        for paths in groups.values() {
            if paths.len() > 1 {
                let first = *paths.iter().min().unwrap();
                for p in paths {
                    if *p != first {
                        leader.insert(p, first);
                    }
                }
            }
        }
        let mut out = Vec::new();
        for (path, n) in &self.nodes {
            let mut e = Map::new();
            e.insert("path".into(), json!(path));
            let kind = if leader.contains_key(path) {
                "hardlink"
            } else {
                n.kind
            };
            e.insert("type".into(), json!(kind));
            e.insert("mode".into(), json!(format!("{:04o}", n.mode)));
            e.insert("uid".into(), json!(n.uid));
            e.insert("gid".into(), json!(n.gid));
            if let (Some(size), Some(sha)) = (n.size, &n.sha256) {
                e.insert("size".into(), json!(size));
                e.insert("sha256".into(), json!(sha));
            }
            if let Some(l) = leader.get(path) {
                e.insert("linkname".into(), json!(l));
            } else if let Some(l) = &n.linkname {
                e.insert("linkname".into(), json!(l));
            }
            if let Some((ma, mi)) = n.dev {
                e.insert("devmajor".into(), json!(ma));
                e.insert("devminor".into(), json!(mi));
            }
            if !n.xattrs.is_empty() {
                e.insert("xattrs".into(), json!(n.xattrs));
            }
            out.push(Value::Object(e));
        }
        out
    }
}

/// imgtree's description of the image `reference` in `store`.
pub fn describe(store: &Store, reference: &str) -> Value {
    let image = store.resolve(reference).expect("built image");
    let cfg = &image.config_json;
    let mut config = Map::new();
    for k in CONFIG_KEYS {
        config.insert(
            k.to_string(),
            cfg["config"].get(*k).cloned().unwrap_or(Value::Null),
        );
    }
    for k in IMAGE_KEYS {
        config.insert(k.to_string(), cfg.get(*k).cloned().unwrap_or(Value::Null));
    }
    let history: Vec<Value> = cfg["history"]
        .as_array()
        .map(|h| {
            h.iter()
                .map(|e| {
                    json!({
                        "created_by": e["created_by"].as_str().unwrap_or(""),
                        "empty_layer": e["empty_layer"].as_bool().unwrap_or(false),
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    let mut tree = Tree::default();
    for layer in image.manifest.layers() {
        let blob = store.open_blob(layer.digest()).expect("layer blob");
        tree.apply(read_layer(blob));
    }
    json!({
        "format": "imgtree/1",
        "config": config,
        "history": history,
        "layer_count": image.manifest.layers().len(),
        "filesystem": tree.entries(),
    })
}

/// What a comparison leaves out.
#[derive(Debug, Default, Clone)]
pub struct DiffOptions {
    pub skip_paths: Vec<String>,
    pub skip_attrs: HashMap<String, Vec<String>>,
    pub ignore_history: bool,
    pub loose_empty: bool,
}

impl DiffOptions {
    /// judge.py's flags: `--ignore-history --skip /dev --skip /proc --skip /sys --loose-empty`,
    /// plus the case's `fs_skip` (buildah's format) and `skip_paths`.
    pub fn judge(case: &Value) -> DiffOptions {
        let mut o = DiffOptions {
            skip_paths: vec!["/dev".into(), "/proc".into(), "/sys".into()],
            ignore_history: true,
            loose_empty: true,
            ..Default::default()
        };
        for spec in case["fs_skip"].as_array().into_iter().flatten() {
            let Some(spec) = spec.as_str() else { continue };
            if !spec.starts_with("(dir):") {
                continue;
            }
            let parts: Vec<&str> = spec.split(':').collect();
            let mut comps = Vec::new();
            let mut i = 0;
            while i + 1 < parts.len() && parts[i] == "(dir)" {
                comps.push(parts[i + 1]);
                i += 2;
            }
            let path = format!("/{}", comps.join("/"));
            if i >= parts.len() {
                o.skip_paths.push(path);
            } else {
                o.skip_attrs
                    .entry(path)
                    .or_default()
                    .push(parts[i..].join(":"));
            }
        }
        for p in case["skip_paths"].as_array().into_iter().flatten() {
            if let Some(p) = p.as_str() {
                o.skip_paths.push(norm_path(p));
            }
        }
        o
    }
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    }
}

/// imgtree's `diff`: the differences between descriptions `a` and `b`, one line each.
pub fn diff(a: &Value, b: &Value, o: &DiffOptions) -> Vec<String> {
    let mut lines = Vec::new();
    let empty = Map::new();
    let ca = a["config"].as_object().unwrap_or(&empty);
    let cb = b["config"].as_object().unwrap_or(&empty);
    let mut keys: Vec<&String> = ca.keys().chain(cb.keys()).collect();
    keys.sort();
    keys.dedup();
    for k in keys {
        let va = ca.get(k).unwrap_or(&Value::Null);
        let vb = cb.get(k).unwrap_or(&Value::Null);
        if va == vb {
            continue;
        }
        let blank = |v: &Value| v.is_null() || v == "";
        if STRING_KEYS.contains(&k.as_str()) && blank(va) && blank(vb) {
            continue;
        }
        if o.loose_empty && is_empty(va) && is_empty(vb) {
            continue;
        }
        lines.push(format!("config.{k}: {va} != {vb}"));
    }
    if !o.ignore_history {
        if a["history"] != b["history"] {
            lines.push(format!("history: {} != {}", a["history"], b["history"]));
        }
        if a["layer_count"] != b["layer_count"] {
            lines.push(format!(
                "layer_count: {} != {}",
                a["layer_count"], b["layer_count"]
            ));
        }
    }
    let skipped = |p: &str| {
        o.skip_paths
            .iter()
            .any(|s| p == s || p.starts_with(&format!("{}/", s.trim_end_matches('/'))))
    };
    let index = |d: &Value| -> BTreeMap<String, Value> {
        d["filesystem"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| Some((e["path"].as_str()?.to_string(), e.clone())))
            .collect()
    };
    let (fa, fb) = (index(a), index(b));
    for (p, e) in &fa {
        if !fb.contains_key(p) && !skipped(p) {
            lines.push(format!("only in A: {p} ({})", e["type"]));
        }
    }
    for (p, e) in &fb {
        if !fa.contains_key(p) && !skipped(p) {
            lines.push(format!("only in B: {p} ({})", e["type"]));
        }
    }
    for (p, ea) in &fa {
        let Some(eb) = fb.get(p) else { continue };
        if skipped(p) {
            continue;
        }
        let mut attrs: Vec<&String> = ea
            .as_object()
            .unwrap()
            .keys()
            .chain(eb.as_object().unwrap().keys())
            .filter(|k| *k != "path" && *k != "mtime")
            .collect();
        attrs.sort();
        attrs.dedup();
        for attr in attrs {
            if o.skip_attrs.get(p).is_some_and(|s| s.contains(attr)) {
                continue;
            }
            let (mut va, mut vb) = (ea[attr].clone(), eb[attr].clone());
            if attr == "xattrs" {
                if va.is_null() {
                    va = json!({});
                }
                if vb.is_null() {
                    vb = json!({});
                }
            }
            if va != vb {
                lines.push(format!("changed: {p}: {attr} {va} -> {vb}"));
            }
        }
    }
    lines
}

// ------------------------------------------------------------------------------------------
// Running a built image (what the golden checks call `docker run --rm --network=none`)
// ------------------------------------------------------------------------------------------

/// Runs image `reference` as `docker run --rm --network=none IMAGE ARGS` does, through
/// `strata run`. Returns (exit code, stdout, stdout + stderr).
pub fn run_image(root: &Root, reference: &str, args: &[String]) -> (i32, String, String) {
    let output = root
        .strata()
        .args(["run", "--rm", "--network", "none", reference])
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("running strata run");
    let out = String::from_utf8_lossy(&output.stdout).into_owned();
    let err = String::from_utf8_lossy(&output.stderr).into_owned();
    let code = output.status.code().unwrap_or(-1);
    (code, out.clone(), format!("{out}{err}"))
}

/// Writes `content` to `dir/name`, making parent directories.
pub fn write(dir: &Path, name: &str, content: &str) {
    let p = dir.join(name);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, content).unwrap();
}

/// The json events of a build that must have succeeded (else the failure, with its output).
pub fn ok(out: &Output) -> Vec<Value> {
    assert!(
        out.status.success(),
        "build failed:\n{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    events(out)
}
