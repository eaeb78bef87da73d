#!/usr/bin/env bash
# Build benchmark: strata next to BuildKit (dockerd from the docker.io package) and Buildah, in
# the same invocation, on the shared scenarios (../shared/bench/make-scenarios.sh):
#   ctx20k    20,000-file context: cold build, no-op rebuild, rebuild after one file changed
#   runfiles  a RUN writing 20,000 small files          (cold)
#   biglayer  a RUN writing 1 GiB, half random, half 0s  (cold)
#   parallel  four independent 2-second stages          (cold)
#   steps     ten trivial RUN steps                      (cold)
# Every tool has the same local busybox base and builds with the host network; "cold" means no
# build cache (the base image is kept). Prints hyperfine medians and strata's ratios.
#
# Usage: bench/build.sh [RUNS] [SCENARIO...]   (root; needs hyperfine, jq, docker.io, buildah,
#        podman; data and stores under $BENCH_DIR, default /var/tmp/strata-bench)
set -euo pipefail

runs=${1:-3}
shift || true
only=("$@")
repo=$(cd "$(dirname "$0")/.." && pwd)
data=${BENCH_DIR:-/var/tmp/strata-bench}/build
make_scenarios=${MAKE_SCENARIOS:-$repo/../shared/bench/make-scenarios.sh}
[ -f "$make_scenarios" ] || make_scenarios=/work/shared/bench/make-scenarios.sh
results=$data/results
mkdir -p "$data" "$results"

cargo build --release --manifest-path "$repo/Cargo.toml" -q
strata=$repo/target/release/strata
export STRATA_ROOT=$data/strata-root
docker_cli=/usr/bin/docker # the docker.io client that goes with its dockerd
sock=$data/docker.sock
export DOCKER_HOST=unix://$sock DOCKER_BUILDKIT=1
buildah=(buildah --root "$data/buildah-root" --runroot "$data/buildah-run" --storage-driver overlay)
podman=(podman --root "$data/buildah-root" --runroot "$data/buildah-run" --storage-driver overlay)

# The scenarios and the base image, made once.
[ -d "$data/scen" ] || bash "$make_scenarios" "$data/scen" >/dev/null
if [ ! -f "$data/busybox.tar" ]; then
  base=$(mktemp -d)
  mkdir -p "$base/bin" "$base/etc" "$base/tmp" "$base/root"
  cp /bin/busybox "$base/bin/"
  for a in $(/bin/busybox --list); do [ "$a" = busybox ] || ln -s busybox "$base/bin/$a"; done
  echo 'root:x:0:0:root:/root:/bin/sh' >"$base/etc/passwd"
  echo 'root:x:0:' >"$base/etc/group"
  tar -C "$base" -cf "$data/busybox.tar" .
  rm -rf "$base"
fi

# dockerd, as the shared bench README starts it; stopped on exit.
dockerd --iptables=false --bridge=none --ip-forward=false --data-root "$data/docker" \
  --exec-root "$data/docker-exec" --pidfile "$data/docker.pid" -H "unix://$sock" >"$data/dockerd.log" 2>&1 &
dockerd_pid=$!
trap 'kill $dockerd_pid 2>/dev/null; wait $dockerd_pid 2>/dev/null; true' EXIT
for _ in $(seq 100); do "$docker_cli" version >/dev/null 2>&1 && break; sleep 0.2; done

base_strata="rm -rf $STRATA_ROOT && $strata import $data/busybox.tar busybox:latest >/dev/null"
base_docker="$docker_cli image inspect busybox >/dev/null 2>&1 || $docker_cli import $data/busybox.tar busybox >/dev/null"
base_buildah="${podman[*]} image exists busybox || ${podman[*]} import -q $data/busybox.tar busybox >/dev/null"
eval "$base_strata"
eval "$base_docker"
eval "$base_buildah"

cold_strata=$base_strata
cold_docker="$docker_cli rmi -f bench >/dev/null 2>&1; $docker_cli builder prune -af >/dev/null; $base_docker"
cold_buildah="${buildah[*]} rmi -af >/dev/null 2>&1; $base_buildah"

build_strata() { echo "$strata build -q --network host -t bench $data/scen/$1"; }
build_docker() { echo "$docker_cli build -q --network=host -t bench $data/scen/$1"; }
build_buildah() { echo "${buildah[*]} build -q --layers --runtime=runc --network=host -t bench $data/scen/$1"; }

wanted() { [ ${#only[@]} -eq 0 ] || [[ " ${only[*]} " == *" $1 "* ]]; }

# bench NAME SCENARIO PREPARE_SUFFIX: one hyperfine run of the three tools.
# PREPARE is "cold" (no cache before each run), "noop" (warm-up builds, nothing changes) or
# "onefile" (warm-up builds, one file of the context changes before each run).
bench() {
  local name=$1 scen=$2 mode=$3
  local prep_s prep_d prep_b touch="echo \$RANDOM >> $data/scen/ctx20k/src/pkg123/file07.txt"
  case $mode in
    cold) prep_s=$cold_strata prep_d=$cold_docker prep_b=$cold_buildah ;;
    noop) prep_s=true prep_d=true prep_b=true ;;
    onefile) prep_s=$touch prep_d=$touch prep_b=$touch ;;
  esac
  local warmup=1
  [ "$mode" = cold ] && warmup=0
  hyperfine --runs "$runs" --warmup "$warmup" --export-json "$results/$name.json" \
    --prepare "$prep_s" -n strata "$(build_strata "$scen")" \
    --prepare "$prep_d" -n buildkit "$(build_docker "$scen")" \
    --prepare "$prep_b" -n buildah "$(build_buildah "$scen")" >"$results/$name.log"
  jq -r --arg name "$name" '
    (.results | map({(.command): .median}) | add) as $m
    | "| \($name) | \($m.strata * 100 | round / 100) s | \($m.buildkit * 100 | round / 100) s | \($m.buildah * 100 | round / 100) s | \($m.strata / $m.buildkit * 100 | round / 100) | \($m.strata / $m.buildah * 100 | round / 100) |"' \
    "$results/$name.json"
}

echo "| scenario | strata | BuildKit | Buildah | strata/BuildKit | strata/Buildah |"
echo "|---|---|---|---|---|---|"
if wanted ctx20k; then
  bench ctx20k-cold ctx20k cold
  bench ctx20k-noop ctx20k noop
  bench ctx20k-onefile ctx20k onefile
fi
for s in runfiles biglayer parallel steps; do
  if wanted "$s"; then bench "$s-cold" "$s" cold; fi
done
