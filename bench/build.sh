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
#        bench/build.sh --fresh strata|docker|buildah   (what a cold run's --prepare calls)
set -euo pipefail

fresh_only=
if [ "${1:-}" = --fresh ]; then fresh_only=$2; set --; fi
runs=${1:-3}
shift || true
only=("$@")
repo=$(cd "$(dirname "$0")/.." && pwd)
self=$repo/bench/build.sh
data=${BENCH_DIR:-/var/tmp/strata-bench}/build
make_scenarios=${MAKE_SCENARIOS:-$repo/../shared/bench/make-scenarios.sh}
[ -f "$make_scenarios" ] || make_scenarios=/work/shared/bench/make-scenarios.sh
results=$data/results
mkdir -p "$data" "$results"

[ -n "$fresh_only" ] || cargo build --release --manifest-path "$repo/Cargo.toml" -q
strata=$repo/target/release/strata
docker_cli=/usr/bin/docker # the docker.io client that goes with its dockerd
sock=$data/docker.sock
export DOCKER_HOST=unix://$sock DOCKER_BUILDKIT=1

# The scenarios and the base image, made once.
[ -d "$data/scen" ] || bash "$make_scenarios" "$data/scen" >/dev/null
if [ ! -f "$data/busybox.tar" ]; then
  base=$(mktemp -d)
  "$repo/bench/busybox-rootfs.sh" "$base"
  tar -C "$base" -cf "$data/busybox.tar" .
  rm -rf "$base"
fi

# Every tool keeps its state on its own loop-mounted ext4 filesystem, made anew before every cold
# run: on this VM's ext4, creating files where many were just deleted (the previous run's store)
# is several times slower than on a fresh filesystem (the inode allocator skips recently freed
# inodes), and which tool ran after a deletion would decide the result. A CI machine is fresh.
fresh_fs() { # NAME: a new, empty filesystem at $data/fs/NAME
  local dir=$data/fs/$1
  mkdir -p "$dir"
  if mountpoint -q "$dir"; then umount -R "$dir"; fi
  rm -f "$dir.img"
  truncate -s 48G "$dir.img"
  mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0 "$dir.img"
  mount -o loop "$dir.img" "$dir"
}
export STRATA_ROOT=$data/fs/strata/root
buildah=(buildah --root "$data/fs/buildah/root" --runroot "$data/fs/buildah/run" --storage-driver overlay)
podman=(podman --root "$data/fs/buildah/root" --runroot "$data/fs/buildah/run" --storage-driver overlay)

# dockerd, as the shared bench README starts it, its data root on its own filesystem. A cold run
# restarts it on a fresh one and builds a one-line Dockerfile first, so BuildKit's own start-up is
# not timed (strata has no daemon to start).
stop_dockerd() {
  local pid
  pid=$(cat "$data/docker.pid" 2>/dev/null) || return 0
  kill "$pid" 2>/dev/null || true
  while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
  # Containerd shims or mounts left behind would keep the filesystem busy.
  umount -R "$data/fs/docker" 2>/dev/null || true
}
fresh_docker() {
  stop_dockerd
  fresh_fs docker
  mkdir -p "$data/warm"
  printf 'FROM busybox\nLABEL warm=1\n' >"$data/warm/Dockerfile"
  dockerd --iptables=false --bridge=none --ip-forward=false --data-root "$data/fs/docker/root" \
    --exec-root "$data/docker-exec" --pidfile "$data/docker.pid" -H "unix://$sock" \
    </dev/null >>"$data/dockerd.log" 2>&1 &
  for _ in $(seq 150); do "$docker_cli" version >/dev/null 2>&1 && break; sleep 0.2; done
  "$docker_cli" import "$data/busybox.tar" busybox >/dev/null
  "$docker_cli" build -q --network=host -t warm "$data/warm" >/dev/null
}
fresh_strata() {
  fresh_fs strata
  "$strata" import "$data/busybox.tar" busybox:latest >/dev/null
}
# The floor: the scenario's RUN commands run directly in a chroot of the base on a fresh
# filesystem, stages at once: what no engine can beat, so that each engine's own cost shows.
fresh_floor() {
  fresh_fs floor
  mkdir -p "$data/fs/floor/root"
  tar -C "$data/fs/floor/root" -xf "$data/busybox.tar"
  mkdir -p "$data/fs/floor/root/dev" # /dev/urandom, /dev/zero and /dev/null, as every engine has
  mount --bind /dev "$data/fs/floor/root/dev"
}
floor_script() { # SCENARIO: writes $data/floor-SCENARIO.sh from its Dockerfile
  python3 - "$data/scen/$1/Dockerfile" "$data/fs/floor/root" >"$data/floor-$1.sh" <<'PY'
import shlex, sys
stages = []
for line in open(sys.argv[1]):
    word, _, rest = line.strip().partition(" ")
    if word.upper() == "FROM":
        stages.append([])
    elif word.upper() == "RUN":
        stages[-1].append(rest)
print("#!/bin/sh\nset -e\npids=")
for runs in stages:
    if runs:
        chain = " && ".join(f"chroot {shlex.quote(sys.argv[2])} /bin/sh -c {shlex.quote(r)}" for r in runs)
        print(f"( {chain} ) & pids=\"$pids $!\"")
print("for p in $pids; do wait $p; done")
PY
}
fresh_buildah() {
  fresh_fs buildah
  "${podman[@]}" import -q "$data/busybox.tar" busybox >/dev/null
}
if [ -n "$fresh_only" ]; then
  "fresh_$fresh_only"
  exit 0
fi
trap 'stop_dockerd' EXIT
fresh_strata
fresh_docker
fresh_buildah
cold_strata="$self --fresh strata"
cold_docker="$self --fresh docker"
cold_buildah="$self --fresh buildah"

build_strata() { echo "$strata build -q --network host ${strata_args:-} -t bench $data/scen/$1"; }
build_docker() { echo "$docker_cli build -q --network=host -t bench $data/scen/$1"; }
build_buildah() { echo "${buildah[*]} build -q --layers --runtime=runc --network=host -t bench $data/scen/$1"; }

wanted() { [ ${#only[@]} -eq 0 ] || [[ " ${only[*]} " == *" $1 "* ]]; }

# bench NAME SCENARIO PREPARE_SUFFIX: one hyperfine run of the three tools.
# PREPARE is "cold" (no cache before each run), "noop" (warm-up builds, nothing changes) or
# "onefile" (warm-up builds, one file of the context changes before each run).
bench() {
  local name=$1 scen=$2 mode=$3 floor=()
  # Only where RUN is all the work: a COPY from the context has no such floor.
  if [ "$mode" = cold ] && grep -q '^RUN' "$data/scen/$scen/Dockerfile" &&
    ! grep -Eq '^(COPY|ADD) +[^-]' "$data/scen/$scen/Dockerfile"; then
    floor_script "$scen"
    floor=(--prepare "$self --fresh floor" -n floor "sh $data/floor-$scen.sh")
  fi
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
    --prepare "$prep_b" -n buildah "$(build_buildah "$scen")" \
    "${floor[@]}" >"$results/$name.log"
  jq -r --arg name "$name" '
    def s: . * 100 | round / 100;
    (.results | map({(.command): .median}) | add) as $m
    | "| \($name) | \($m.strata | s) s | \($m.buildkit | s) s | \($m.buildah | s) s | \($m.strata / $m.buildkit | s) | \($m.strata / $m.buildah | s) | \(if $m.floor then "\($m.floor | s) s | \(($m.floor / $m.buildkit) | s)" else "- | -" end) |"' \
    "$results/$name.json"
}

echo "| scenario | strata | BuildKit | Buildah | strata/BuildKit | strata/Buildah | floor | floor/BuildKit |"
echo "|---|---|---|---|---|---|---|---|"
if wanted ctx20k; then
  bench ctx20k-cold ctx20k cold
  bench ctx20k-noop ctx20k noop
  bench ctx20k-onefile ctx20k onefile
fi
for s in runfiles biglayer parallel steps; do
  if wanted "$s"; then bench "$s-cold" "$s" cold; fi
done
# --jobs defaults to the core count (issue 6); BuildKit runs all four stages at once.
if wanted parallel; then strata_args="--jobs 4" bench parallel-jobs4-cold parallel cold; fi
