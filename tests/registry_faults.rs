//! `strata pull` / `strata push` through a fault-injecting proxy, chunked uploads, credentials
//! from Docker's config.json (auths and a credential helper), and the offline switch.

mod registry_support;

use std::os::unix::fs::PermissionsExt;

use base64::Engine;
use registry_support::common::faults::{Fault, FaultProxy, Rule};
use registry_support::common::{Auth, Registry, run};
use registry_support::store_support::check_consistent;
use registry_support::{Strata, raw_manifest, requests_since, skopeo};
use strata_store::Platform;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn host_platform() -> String {
    Platform::host().to_string()
}

#[test]
fn pulls_through_faults_finish_or_fail_leaving_nothing_partial() {
    let rt = runtime();
    let registry = Registry::start(Auth::None, None);
    let proxy = rt.block_on(FaultProxy::start(registry.addr, Vec::new()));
    let source = Strata::new();
    let image = format!("{}/app:v1", proxy.host());
    source.import_busybox(&image, &host_platform());
    source.ok(&["push", &image]);
    let layer = source.store().resolve(&image).unwrap().manifest.layers()[0].clone();
    let layer_path = format!("/blobs/{}", layer.digest());

    // A 503 for the manifest, the layer's connection dropped mid-body, then a 429 for the
    // resumed request: the pull finishes with the right bytes.
    proxy.set_rules(vec![
        Rule::new("GET", "/manifests/", Fault::Status(503)),
        Rule::new("GET", &layer_path, Fault::DropResponseAfter(300_000)),
        Rule::new("GET", &layer_path, Fault::Status(429)),
    ]);
    let strata = Strata::new();
    let out = strata.ok(&["pull", &image]);
    assert!(out.contains("Pull complete"), "{out}");
    assert_eq!(proxy.applied().len(), 3, "{:?}", proxy.applied());
    assert_eq!(check_consistent(&strata.root()), 1);
    assert!(strata.ingest_files().is_empty());

    // A flipped byte in the layer fails the pull: no image, no layer blob, no leftovers.
    proxy.set_rules(vec![Rule::new(
        "GET",
        &layer_path,
        Fault::CorruptResponseByte(100_000),
    )]);
    let clean = Strata::new();
    let err = clean.fails(&["pull", &image]);
    assert!(err.contains(&layer.digest().to_string()), "{err}");
    assert!(err.contains("digest"), "{err}");
    assert_eq!(clean.ok(&["images", "-q"]), "");
    assert!(!clean.store().has_blob(layer.digest()));
    assert!(
        clean.ingest_files().is_empty(),
        "{:?}",
        clean.ingest_files()
    );
    // Once the fault is gone, the same pull works.
    clean.ok(&["pull", &image]);
    assert_eq!(check_consistent(&clean.root()), 1);
}

#[test]
fn pushes_through_faults_and_in_chunks() {
    let rt = runtime();
    let registry = Registry::start(Auth::None, None);
    let chunked_proxy = rt.block_on(FaultProxy::start(registry.addr, Vec::new()));
    let proxy = rt.block_on(FaultProxy::start(registry.addr, Vec::new()));
    let strata = Strata::new();
    // Uploads through the first proxy go in chunks of 64 KiB (registries.json).
    std::fs::write(
        strata.config_dir().join("registries.json"),
        serde_json::json!({"registries": {chunked_proxy.host(): {"chunk_size": 65536}}})
            .to_string(),
    )
    .unwrap();

    // Chunked, with the fourth chunk's connection cut mid-request: the upload asks the
    // registry where it stands and goes on from there.
    let chunked = format!("{}/chunked:v1", chunked_proxy.host());
    strata.import_busybox(&chunked, &host_platform());
    let local = strata.store().resolve(&chunked).unwrap();
    let layer = local.manifest.layers()[0].clone();
    chunked_proxy.set_rules(vec![
        Rule::new("PATCH", "/blobs/uploads/", Fault::DropRequestAfter(30_000)).skip(3),
    ]);
    let before = registry.requests().len();
    let out = strata.ok(&["push", &chunked]);
    assert!(out.contains(": Pushed"), "{out}");
    assert_eq!(chunked_proxy.applied().len(), 1);
    let patches = registry
        .requests()
        .iter()
        .skip(before)
        .filter(|r| r.starts_with("PATCH /v2/chunked/blobs/uploads/"))
        .count() as u64;
    assert!(patches >= layer.size() / 65536, "{patches} PATCH requests");
    let direct = format!("{}/chunked:v1", registry.host());
    assert_eq!(
        raw_manifest(&direct),
        strata
            .store()
            .read_blob(local.manifest_descriptor.digest())
            .unwrap()
    );
    let copy = tempfile::tempdir().unwrap();
    run(skopeo()
        .args(["copy", "--src-tls-verify=false"])
        .arg(format!("docker://{direct}"))
        .arg(format!("oci:{}:v1", copy.path().display())));

    // A recompressed layer streams up in chunks too (its digest is known only at the end).
    let zstd = format!("{}/chunked:zstd", chunked_proxy.host());
    strata.ok(&["tag", &chunked, &zstd]);
    let before = registry.requests().len();
    let out = strata.ok(&["push", "--compression", "zstd", &zstd]);
    // Streamed, not pushed again from the store after a failed stream.
    assert!(
        out.contains(": Pushed") && !out.contains("Retrying"),
        "{out}"
    );
    let requests = requests_since(&registry, before);
    assert!(
        requests
            .iter()
            .filter(|r| r.starts_with("PATCH /v2/chunked/blobs/uploads/"))
            .count()
            > 1,
        "{requests:?}"
    );
    let zstd_copy = tempfile::tempdir().unwrap();
    run(skopeo()
        .args(["copy", "--src-tls-verify=false"])
        .arg(format!("docker://{}/chunked:zstd", registry.host()))
        .arg(format!("oci:{}:zstd", zstd_copy.path().display())));

    // Monolithic, with a 503 on HEAD, the upload's body cut, a 429 on the manifest.
    let faulty = format!("{}/faulty:v1", proxy.host());
    strata.ok(&["tag", &chunked, &faulty]);
    proxy.set_rules(vec![
        Rule::new("HEAD", "/blobs/", Fault::Status(503)),
        Rule::new("PUT", "/blobs/uploads/", Fault::DropRequestAfter(200_000)),
        Rule::new("PUT", "/manifests/", Fault::Status(429)),
    ]);
    strata.ok(&["push", &faulty]);
    assert_eq!(proxy.applied().len(), 3, "{:?}", proxy.applied());
    assert_eq!(
        raw_manifest(&format!("{}/faulty:v1", registry.host())),
        raw_manifest(&direct)
    );

    // A registry that keeps failing: the push gives up with the registry's answer, and the
    // tag does not exist.
    let broken = format!("{}/broken:v1", proxy.host());
    strata.ok(&["tag", &chunked, &broken]);
    proxy.set_rules(vec![
        Rule::new("PUT", "/manifests/", Fault::Status(500)).times(100),
    ]);
    let err = strata.fails(&["push", &broken]);
    assert!(err.contains("500"), "{err}");
    let missing = skopeo()
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{}/broken:v1", registry.host()))
        .output()
        .unwrap();
    assert!(!missing.status.success());
}

const USER: &str = "carol";
const PASSWORD: &str = "pu11-s3cret";

#[test]
fn credentials_from_config_json_auths_and_a_helper() {
    let registry = Registry::start(
        Auth::Htpasswd {
            user: USER.into(),
            password: PASSWORD.into(),
        },
        None,
    );
    let host = registry.host();
    let image = format!("{host}/private:v1");

    let pusher = Strata::new();
    pusher.import_busybox(&image, &host_platform());
    let err = pusher.fails(&["push", &image]);
    assert!(err.contains("access denied"), "{err}");
    // `auths` in $DOCKER_CONFIG/config.json.
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"));
    std::fs::write(
        pusher.docker_config().join("config.json"),
        serde_json::json!({"auths": {host.clone(): {"auth": auth}}}).to_string(),
    )
    .unwrap();
    let out = pusher.ok(&["push", &image]);
    assert!(!out.contains(PASSWORD));

    // `credHelpers` naming a helper found on PATH.
    let mut puller = Strata::new();
    let bin = puller.dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let helper = bin.join("docker-credential-strata-test");
    std::fs::write(
        &helper,
        format!(
            "#!/bin/sh\n[ \"$1\" = get ] || exit 2\nread -r server\n\
             if [ \"$server\" = \"{host}\" ]; then\n\
             printf '{{\"ServerURL\":\"%s\",\"Username\":\"{USER}\",\"Secret\":\"{PASSWORD}\"}}' \"$server\"\n\
             else echo 'credentials not found in native keychain'; exit 1; fi\n"
        ),
    )
    .unwrap();
    std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(
        puller.docker_config().join("config.json"),
        serde_json::json!({"credHelpers": {host.clone(): "strata-test"}}).to_string(),
    )
    .unwrap();
    let err = puller.fails(&["pull", &image]);
    assert!(err.contains("docker-credential-strata-test"), "{err}");
    puller.path_dirs.push(bin);
    puller.ok(&["pull", &image]);
    assert_eq!(check_consistent(&puller.root()), 1);
}

#[test]
fn offline_never_contacts_a_remote_registry_and_names_the_image() {
    let strata = Strata::new();
    let remote = "registry.example.invalid/team/app:1";
    // STRATA_OFFLINE=1 comes from the cargo config.
    let err = strata.fails(&["pull", remote]);
    assert!(
        err.contains(&format!(
            "offline: this needs {remote} from the registry registry.example.invalid"
        )),
        "{err}"
    );
    // The flag alone does the same.
    let out = strata
        .command()
        .env_remove("STRATA_OFFLINE")
        .args(["--offline", "pull", remote])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(registry_support::text(&out).contains("offline: this needs"));
    strata.import_busybox(remote, &host_platform());
    let err = strata.fails(&["push", remote]);
    assert!(err.contains("offline: this needs"), "{err}");
    assert!(strata.ingest_files().is_empty());
}
