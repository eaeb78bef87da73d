//! Everything the store writes validates against the OCI image-spec JSON schemas (draft-04) plus
//! the extra checks of `validator-map.json`, and the spec's own examples validate and round-trip
//! through the oci-spec types we use.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use oci_spec::image::{Descriptor, ImageConfiguration, ImageIndex, ImageManifest, OciLayout};
use serde_json::{Value, json};
use strata_codec::{Compression, EncoderOptions};
use strata_store::{ArchiveFormat, Store, reference::parse_docker_ref};

fn conformance() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../testdata/conformance/image-spec")
}

/// Serves the schema files under the URIs validator-map.json says they are known by.
struct InMemory(HashMap<String, Value>);

impl jsonschema::Retrieve for InMemory {
    fn retrieve(
        &self,
        uri: &jsonschema::Uri<String>,
    ) -> Result<Value, Box<dyn std::error::Error + Send + Sync>> {
        self.0
            .get(uri.as_str())
            .cloned()
            .ok_or_else(|| format!("schema {uri} is not registered").into())
    }
}

struct Schemas {
    by_media_type: HashMap<String, jsonschema::Validator>,
}

impl Schemas {
    fn load() -> Schemas {
        let dir = conformance().join("schema");
        let map: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("validator-map.json")).unwrap())
                .unwrap();
        let read = |f: &str| -> Value {
            serde_json::from_str(&std::fs::read_to_string(dir.join(f)).unwrap()).unwrap()
        };
        let mut schemas = HashMap::new();
        for (aliased, uris) in map["aliases_to_register"].as_object().unwrap() {
            for uri in uris.as_array().unwrap() {
                schemas.insert(uri.as_str().unwrap().to_string(), read(aliased));
            }
        }
        let mut by_media_type = HashMap::new();
        for (media_type, file) in map["schema_for_mediatype"].as_object().unwrap() {
            let validator = jsonschema::draft4::options()
                .should_validate_formats(true)
                .with_retriever(InMemory(schemas.clone()))
                .build(&read(file.as_str().unwrap()))
                .unwrap_or_else(|e| panic!("schema {file}: {e}"));
            by_media_type.insert(media_type.clone(), validator);
        }
        Schemas { by_media_type }
    }

    /// The schema errors plus the extra checks; empty when the document is valid.
    fn problems(&self, media_type: &str, doc: &Value) -> Vec<String> {
        let validator = self
            .by_media_type
            .get(media_type)
            .unwrap_or_else(|| panic!("no schema for {media_type}"));
        let mut out: Vec<String> = validator
            .iter_errors(doc)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        extra_checks(doc, &mut out);
        match media_type {
            "application/vnd.oci.image.manifest.v1+json" => {
                if let Err(e) = serde_json::from_value::<ImageManifest>(doc.clone()) {
                    out.push(format!("does not unmarshal as a manifest: {e}"));
                }
            }
            "application/vnd.oci.image.index.v1+json" => {
                if let Err(e) = serde_json::from_value::<ImageIndex>(doc.clone()) {
                    out.push(format!("does not unmarshal as an index: {e}"));
                }
            }
            "application/vnd.oci.image.config.v1+json" => {
                if let Err(e) = serde_json::from_value::<ImageConfiguration>(doc.clone()) {
                    out.push(format!("does not unmarshal as a config: {e}"));
                }
                for env in doc["config"]["Env"].as_array().into_iter().flatten() {
                    let env = env.as_str().unwrap_or("");
                    if env.split_once('=').is_none_or(|(k, _)| k.is_empty()) {
                        out.push(format!("Env entry {env:?} is not NAME=value"));
                    }
                }
            }
            _ => {}
        }
        out
    }
}

/// validator-map.json's checks beyond the schema, on every descriptor-shaped object: digests
/// parse (length checked for sha256/sha512), `urls` are absolute URIs, `data` is padded base64.
fn extra_checks(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            if let (Some(Value::String(d)), Some(_)) = (map.get("digest"), map.get("mediaType")) {
                check_digest(d, out);
            }
            if let Some(Value::Array(urls)) = map.get("urls") {
                for u in urls {
                    let u = u.as_str().unwrap_or("");
                    let scheme_ok = u.split_once(':').is_some_and(|(s, _)| {
                        s.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
                            && s.chars()
                                .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
                    });
                    if !scheme_ok {
                        out.push(format!("url {u:?} is not an absolute URI"));
                    }
                }
            }
            if let Some(Value::String(data)) = map.get("data") {
                let valid_chars = data
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '+' || c == '/' || c == '=');
                if !valid_chars || data.len() % 4 != 0 {
                    out.push(format!("data {data:?} is not padded base64"));
                }
            }
            map.values().for_each(|v| extra_checks(v, out));
        }
        Value::Array(items) => items.iter().for_each(|v| extra_checks(v, out)),
        _ => {}
    }
}

fn check_digest(d: &str, out: &mut Vec<String>) {
    let Some((alg, hex)) = d.split_once(':') else {
        out.push(format!("digest {d:?} has no algorithm"));
        return;
    };
    let want = match alg {
        "sha256" => Some(64),
        "sha512" => Some(128),
        _ => None,
    };
    if let Some(n) = want
        && (hex.len() != n
            || !hex
                .chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()))
    {
        out.push(format!("digest {d:?} is malformed"));
    }
}

#[test]
fn spec_examples_validate_and_round_trip() {
    let schemas = Schemas::load();
    let dir = conformance().join("spec-examples");
    let index = std::fs::read_to_string(dir.join("index.jsonl")).unwrap();
    let mut checked = 0;
    for line in index.lines().filter(|l| !l.trim().is_empty()) {
        let case: Value = serde_json::from_str(line).unwrap();
        let file = case["file"].as_str().unwrap();
        let media_type = case["mediatype"].as_str().unwrap();
        let doc: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join(file)).unwrap()).unwrap();
        let problems = schemas.problems(media_type, &doc);
        assert_eq!(
            problems.is_empty(),
            case["expect_valid"].as_bool().unwrap(),
            "{file}: {problems:?}"
        );
        let round_tripped = match media_type {
            "application/vnd.oci.image.manifest.v1+json" => {
                serde_json::to_value(serde_json::from_value::<ImageManifest>(doc.clone()).unwrap())
            }
            "application/vnd.oci.image.index.v1+json" => {
                serde_json::to_value(serde_json::from_value::<ImageIndex>(doc.clone()).unwrap())
            }
            "application/vnd.oci.image.config.v1+json" => serde_json::to_value(
                serde_json::from_value::<ImageConfiguration>(doc.clone()).unwrap(),
            ),
            "application/vnd.oci.layout.header.v1+json" => {
                serde_json::to_value(serde_json::from_value::<OciLayout>(doc.clone()).unwrap())
            }
            _ => serde_json::to_value(serde_json::from_value::<Descriptor>(doc.clone()).unwrap()),
        }
        .unwrap();
        assert_eq!(round_tripped, doc, "{file} does not round-trip");
        checked += 1;
    }
    assert!(checked >= 10);
}

#[test]
fn the_schemas_reject_what_they_should() {
    let schemas = Schemas::load();
    let manifest = "application/vnd.oci.image.manifest.v1+json";
    let config = "application/vnd.oci.image.config.v1+json";
    let good_digest = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    let bad = [
        (
            manifest,
            json!({"schemaVersion": 2, "config": {"mediaType": "a/b", "size": "1", "digest": good_digest}, "layers": []}),
        ),
        (
            manifest,
            json!({"schemaVersion": 2, "config": {"mediaType": "a/b", "size": 1, "digest": "sha256:abc"}, "layers": []}),
        ),
        (
            manifest,
            json!({"schemaVersion": 2, "config": {"mediaType": "a/b", "size": 1, "digest": good_digest, "urls": ["value"]}, "layers": []}),
        ),
        (
            config,
            json!({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}, "config": {"Env": ["NOEQUALS"]}}),
        ),
    ];
    for (media_type, doc) in bad {
        assert!(
            !schemas.problems(media_type, &doc).is_empty(),
            "{doc} was accepted"
        );
    }
}

fn tiny_tar() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    h.set_path("etc/hello").unwrap();
    h.set_size(6);
    h.set_mode(0o644);
    h.set_cksum();
    b.append(&h, &b"hello\n"[..]).unwrap();
    b.into_inner().unwrap()
}

fn validate_layout(schemas: &Schemas, dir: &Path) -> usize {
    let mut checked = 0;
    let layout: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("oci-layout")).unwrap()).unwrap();
    let p = schemas.problems("application/vnd.oci.layout.header.v1+json", &layout);
    assert!(p.is_empty(), "oci-layout: {p:?}");
    let index: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("index.json")).unwrap()).unwrap();
    let p = schemas.problems("application/vnd.oci.image.index.v1+json", &index);
    assert!(p.is_empty(), "index.json: {p:?}");
    // Walk from the index: every manifest and config we point at.
    let mut stack: Vec<Value> = index["manifests"].as_array().unwrap().clone();
    let mut seen = std::collections::HashSet::new();
    while let Some(d) = stack.pop() {
        let media_type = d["mediaType"].as_str().unwrap().to_string();
        let digest = d["digest"].as_str().unwrap();
        if !seen.insert(digest.to_string()) {
            continue;
        }
        let path = dir
            .join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:"));
        if !media_type.ends_with("+json") {
            continue;
        }
        let doc: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let p = schemas.problems(&media_type, &doc);
        assert!(p.is_empty(), "{media_type} {digest}: {p:?}");
        checked += 1;
        if media_type.ends_with("manifest.v1+json") {
            stack.push(doc["config"].clone());
            stack.extend(doc["layers"].as_array().unwrap().iter().cloned());
        }
    }
    checked
}

#[test]
fn what_the_store_writes_validates() {
    let schemas = Schemas::load();
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path().join("root")).unwrap();
    let lease = store.lease().unwrap();
    let layer = store
        .import_layer(
            &lease,
            &tiny_tar()[..],
            Compression::Gzip,
            EncoderOptions::default(),
        )
        .unwrap();
    let config = json!({
        "architecture": "amd64", "os": "linux", "created": "2024-01-02T03:04:05Z",
        "config": {"Env": ["PATH=/bin"], "Cmd": ["sh"], "ExposedPorts": {"80/tcp": {}}, "Labels": {"a": "b"}},
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id.to_string()]},
        "history": [{"created": "2024-01-02T03:04:05Z", "comment": "test"}],
    });
    let layer_desc = Descriptor::new(
        layer.media_type.as_str().into(),
        layer.size,
        layer.digest.clone(),
    );
    let names = [
        parse_docker_ref("busybox").unwrap(),
        parse_docker_ref("localhost:5000/a/b:v1").unwrap(),
    ];
    store
        .create_image(&lease, &config, std::slice::from_ref(&layer_desc), &names)
        .unwrap();
    // An untagged image too.
    let other = json!({"architecture": "arm64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": [layer.diff_id.to_string()]}});
    store
        .create_image(&lease, &other, &[layer_desc], &[])
        .unwrap();
    drop(lease);
    assert_eq!(validate_layout(&schemas, &store.layout_dir()), 4);

    // A classic docker-archive (no manifest in it): load writes the manifest itself.
    let layer_tar = tiny_tar();
    let classic_config = json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Env": ["A=1"]},
        "rootfs": {"type": "layers", "diff_ids": [strata_codec::sha256_digest(&layer_tar).to_string()]},
    })
    .to_string();
    let mut archive = tar::Builder::new(Vec::new());
    let manifest_json =
        r#"[{"Config":"c.json","RepoTags":["classic:v1"],"Layers":["l1/layer.tar"]}]"#;
    for (path, bytes) in [
        ("c.json", classic_config.as_bytes()),
        ("l1/layer.tar", &layer_tar[..]),
        ("manifest.json", manifest_json.as_bytes()),
    ] {
        let mut h = tar::Header::new_ustar();
        h.set_path(path).unwrap();
        h.set_size(bytes.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        archive.append(&h, bytes).unwrap();
    }
    let loaded = store.load(&archive.into_inner().unwrap()[..]).unwrap();
    assert_eq!(loaded[0].names, [parse_docker_ref("classic:v1").unwrap()]);
    assert_eq!(validate_layout(&schemas, &store.layout_dir()), 6);

    for (format, name) in [
        (ArchiveFormat::Docker, "docker.tar"),
        (ArchiveFormat::Oci, "oci.tar"),
    ] {
        let path = tmp.path().join(name);
        let mut f = std::fs::File::create(&path).unwrap();
        store
            .save(&["busybox".to_string()], format, &mut f)
            .unwrap();
        f.flush().unwrap();
        let out = tmp.path().join(format!("{name}.d"));
        std::fs::create_dir(&out).unwrap();
        tar::Archive::new(std::fs::File::open(&path).unwrap())
            .unpack(&out)
            .unwrap();
        assert_eq!(validate_layout(&schemas, &out), 2, "{name}");
    }
}
