#!/usr/bin/env bash
# Registry benchmark: `strata push` / `strata pull` of a 1 GiB image against `skopeo copy` of the
# same image, to and from the Debian docker-registry on 127.0.0.1, in the same run.
# Usage: bench/registry.sh [RUNS]   (needs docker-registry, skopeo, hyperfine, python3)
#
# The image: 4 layers of 256 MiB of tar (2 of random bytes, 2 of zeros), each made by
# `strata import` of a tarball and stacked into one image through `strata save`/`strata load`.
# Every timed run starts from an empty registry (pushes) or an empty destination (pulls), so
# nothing is skipped; the page cache is warm.
#   push:  strata push 127.0.0.1:PORT/bench/image:1
#          skopeo copy oci:$STRATA_ROOT/oci:NAME docker://127.0.0.1:PORT/bench/image:1
#   pull:  strata pull 127.0.0.1:PORT/bench/image:1              (into an empty STRATA_ROOT)
#          skopeo copy docker://127.0.0.1:PORT/bench/image:1 oci:DIR:1   (into an empty DIR)
set -euo pipefail

runs=${1:-3}
repo=$(cd "$(dirname "$0")/.." && pwd)
data=${BENCH_DIR:-/var/tmp/strata-bench}/registry
mkdir -p "$data"
export STRATA_OFFLINE=1 # loopback only, whatever happens

(cd "$repo" && cargo build --release --quiet --bin strata)
strata=$repo/target/release/strata

# --- the image -------------------------------------------------------------------------------
src=$data/source-root
name=docker.io/bench/image:1 # never contacted: pushes and pulls go to a loopback name
if ! STRATA_ROOT=$src "$strata" inspect "$name" >/dev/null 2>&1; then
  rm -rf "$src" "$data/tars" && mkdir -p "$data/tars"
  for part in random-1 random-2 zeros-1 zeros-2; do
    mkdir -p "$data/tars/$part"
    case $part in
      random-*) head -c 256M /dev/urandom >"$data/tars/$part/data" ;;
      zeros-*) head -c 256M /dev/zero >"$data/tars/$part/data" ;;
    esac
    tar -C "$data/tars/$part" -cf "$data/tars/$part.tar" data
    rm -r "$data/tars/${part:?}"
    STRATA_ROOT=$src "$strata" import "$data/tars/$part.tar" "bench/$part" >/dev/null
    rm "$data/tars/$part.tar"
  done
  STRATA_ROOT=$src "$strata" save --format oci -o "$data/parts.tar" \
    bench/random-1 bench/random-2 bench/zeros-1 bench/zeros-2
  # Stack the four one-layer images into one four-layer image, as an OCI archive to load.
  python3 - "$data/parts.tar" "$data/image.tar" "$name" <<'PY'
import hashlib, io, json, sys, tarfile
src, dst, name = sys.argv[1:]
parts = tarfile.open(src)
blob = lambda d: parts.extractfile("blobs/sha256/" + d.split(":")[1]).read()
index = json.loads(parts.extractfile("index.json").read())
layers, diff_ids, config = [], [], None
for entry in index["manifests"]:
    manifest = json.loads(blob(entry["digest"]))
    config = json.loads(blob(manifest["config"]["digest"]))
    layers += manifest["layers"]
    diff_ids += config["rootfs"]["diff_ids"]
config["rootfs"]["diff_ids"] = diff_ids
config["history"] = [{"created": config["created"], "comment": "bench layer"}] * len(layers)
def put(out, data):
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    info = tarfile.TarInfo("blobs/sha256/" + digest.split(":")[1]); info.size = len(data)
    out.addfile(info, io.BytesIO(data))
    return {"digest": digest, "size": len(data)}
with tarfile.open(dst, "w") as out:
    cfg = put(out, json.dumps(config).encode()) | {"mediaType": "application/vnd.oci.image.config.v1+json"}
    man = put(out, json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                               "config": cfg, "layers": layers}).encode())
    for layer in layers:
        info = tarfile.TarInfo("blobs/sha256/" + layer["digest"].split(":")[1]); info.size = layer["size"]
        out.addfile(info, parts.extractfile("blobs/sha256/" + layer["digest"].split(":")[1]))
    for fname, data in [("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'),
                        ("index.json", json.dumps({"schemaVersion": 2, "manifests": [
                            man | {"mediaType": "application/vnd.oci.image.manifest.v1+json",
                                   "annotations": {"io.containerd.image.name": name,
                                                   "org.opencontainers.image.ref.name": name.rsplit(":", 1)[1]}}]}).encode())]:
        info = tarfile.TarInfo(fname); info.size = len(data); out.addfile(info, io.BytesIO(data))
PY
  STRATA_ROOT=$src "$strata" load -i "$data/image.tar" >/dev/null
  for part in random-1 random-2 zeros-1 zeros-2; do
    STRATA_ROOT=$src "$strata" rmi "bench/$part" >/dev/null
  done
  rm -f "$data/parts.tar" "$data/image.tar"
fi

# --- the registry ----------------------------------------------------------------------------
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
host=127.0.0.1:$port
target=$host/bench/image:1
cat >"$data/registry.yml" <<EOF
version: 0.1
log: {level: error, accesslog: {disabled: true}}
storage: {filesystem: {rootdirectory: $data/registry-data}, delete: {enabled: true}}
http: {addr: $host}
EOF
registry_pid=
start_registry() {
  docker-registry serve "$data/registry.yml" >>"$data/registry.log" 2>&1 &
  registry_pid=$!
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
    sleep 0.05
  done
  echo "registry did not start" >&2 && exit 1
}
stop_registry() {
  if [ -n "$registry_pid" ]; then kill "$registry_pid" 2>/dev/null || true; wait "$registry_pid" 2>/dev/null || true; fi
  registry_pid=
}
trap stop_registry EXIT
start_registry

# The source image for skopeo: strata's store is an OCI layout; the tag as index.json names it.
STRATA_ROOT=$src "$strata" tag "$name" "$target" >/dev/null
oci_source="oci:$src/oci:$target"

pull_root=$data/pull-root
pull_dir=$data/pull-oci
mkdir -p "$data/results"
echo "== push (registry emptied before each run)"
# The registry serves from its data dir; removing it between runs empties it (blobs and repos).
hyperfine --runs "$runs" --warmup 1 \
  --prepare "rm -rf $data/registry-data" \
  --export-json "$data/results/push.json" --export-markdown "$data/results/push.md" \
  -n "strata push" "STRATA_ROOT=$src $strata push -q $target" \
  -n "skopeo copy (push)" "skopeo copy --quiet --insecure-policy --dest-tls-verify=false $oci_source docker://$target"

echo "== pull (destination emptied before each run)"
STRATA_ROOT=$src "$strata" push -q "$target" >/dev/null
hyperfine --runs "$runs" --warmup 1 \
  --prepare "rm -rf $pull_root $pull_dir" \
  --export-json "$data/results/pull.json" --export-markdown "$data/results/pull.md" \
  -n "strata pull" "STRATA_ROOT=$pull_root $strata pull -q $target" \
  -n "skopeo copy (pull)" "skopeo copy --quiet --insecure-policy --src-tls-verify=false docker://$target oci:$pull_dir:1"

STRATA_ROOT=$src "$strata" rmi "$target" >/dev/null
rm -rf "$pull_root" "$pull_dir" "$data/registry-data"
python3 - "$data/results" <<'PY'
import json, sys
d = sys.argv[1]
for kind in ["push", "pull"]:
    r = {x["command"]: x for x in json.load(open(f"{d}/{kind}.json"))["results"]}
    s = next(v for k, v in r.items() if k.startswith("strata"))
    k = next(v for k, v in r.items() if k.startswith("skopeo"))
    t = lambda x: f"{x['mean']:.2f} s ± {x['stddev'] or 0:.2f} (user {x['user']:.1f} s, sys {x['system']:.1f} s)"
    print(f"{kind}: strata {t(s)} | skopeo {t(k)} | strata/skopeo {s['mean'] / k['mean']:.2f}")
PY
