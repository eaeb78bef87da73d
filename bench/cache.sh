#!/usr/bin/env bash
# Build cache that follows CI (issue 9): strata next to BuildKit (dockerd's built-in BuildKit and
# its inline cache) in the same invocation, on a loopback docker-registry.
#
#   export   a cold build that exports its cache and pushes the image
#            strata: --cache-to type=registry,mode=max --push; BuildKit: BUILDKIT_INLINE_CACHE=1 + push
#   fresh    a fresh machine (empty store / fresh dockerd data root, busybox base loaded) builds
#            the same project with --cache-from: fully cached (image stored locally)
#   fresh+push  the same, pushing the image (strata mounts the cached layers; BuildKit pulls
#            them to build and the push finds them in the registry)
#   onefile  a fresh machine after one source file changed
#
# The project: a dependency stage (RUN making 2,000 files and 32 MiB, 2 s of work), an app stage
# copying it, a source COPY and a RUN. Prints the median of RUNS timed runs and strata/BuildKit.
#
# Usage: bench/cache.sh [RUNS]   (root; needs docker.io, docker-registry, jq)
set -euo pipefail

runs=${1:-3}
repo=$(cd "$(dirname "$0")/.." && pwd)
data=${BENCH_DIR:-/var/tmp/strata-bench}/cache
rm -rf "$data"
mkdir -p "$data"

cargo build --release --manifest-path "$repo/Cargo.toml" -q
strata=$repo/target/release/strata
docker_cli=/usr/bin/docker
sock=$data/docker.sock
export DOCKER_HOST=unix://$sock DOCKER_BUILDKIT=1

# The base image, as bench/build.sh makes it.
base=$(mktemp -d)
"$repo/bench/busybox-rootfs.sh" "$base"
tar -C "$base" -cf "$data/busybox.tar" .
rm -rf "$base"

# The project.
proj=$data/project
mkdir -p "$proj"
cat >"$proj/Dockerfile" <<'EOF'
FROM busybox AS deps
RUN mkdir /deps && for i in $(seq 2000); do echo "$i" > /deps/f$i; done \
 && head -c 33554432 /dev/urandom > /deps/blob && sleep 2
FROM busybox AS app
COPY --from=deps /deps /deps
COPY src.txt /src.txt
RUN sleep 1 && cat /src.txt > /app.out
EOF
echo v1 >"$proj/src.txt"

# The registry on loopback; stopped on exit with dockerd.
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
reg=127.0.0.1:$port
cat >"$data/registry.yml" <<EOF
version: 0.1
log:
  level: error
storage:
  filesystem:
    rootdirectory: $data/registry
http:
  addr: $reg
EOF
docker-registry serve "$data/registry.yml" >"$data/registry.log" 2>&1 &
registry_pid=$!
dockerd_pid=
stop_dockerd() {
  if [ -n "$dockerd_pid" ]; then kill "$dockerd_pid" 2>/dev/null; wait "$dockerd_pid" 2>/dev/null || true; fi
  dockerd_pid=
}
trap 'stop_dockerd; kill $registry_pid 2>/dev/null; wait $registry_pid 2>/dev/null; true' EXIT
for _ in $(seq 100); do curl -sf "http://$reg/v2/" >/dev/null && break; sleep 0.1; done

# A fresh machine for BuildKit: a new dockerd data root with the base loaded.
fresh_dockerd() {
  stop_dockerd
  rm -rf "$data/docker" "$data/docker-exec"
  dockerd --iptables=false --bridge=none --ip-forward=false --data-root "$data/docker" \
    --exec-root "$data/docker-exec" --pidfile "$data/docker.pid" -H "unix://$sock" >"$data/dockerd.log" 2>&1 &
  dockerd_pid=$!
  for _ in $(seq 100); do "$docker_cli" version >/dev/null 2>&1 && break; sleep 0.2; done
  "$docker_cli" import "$data/busybox.tar" busybox >/dev/null
}
# A fresh machine for strata: an empty store with the base loaded.
fresh_strata() {
  export STRATA_ROOT=$data/strata-root
  rm -rf "$STRATA_ROOT"
  SOURCE_DATE_EPOCH=0 "$strata" import "$data/busybox.tar" busybox:latest >/dev/null
}

# time_of CMD...: seconds the command took (it must succeed).
time_of() {
  local t0 t1
  t0=$(date +%s.%N)
  "$@" >>"$data/commands.log" 2>&1 || { echo "failed: $*" >&2; tail -20 "$data/commands.log" >&2; exit 1; }
  t1=$(date +%s.%N)
  echo "$t1 - $t0" | bc -l
}
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

s_cache="type=registry,ref=$reg/strata/cache:main"
s_export() { "$strata" build -q --network host -t "$reg/strata/app:v1" --push --cache-to "$s_cache,mode=max" "$proj"; }
s_fresh() { "$strata" build -q --network host -t app:v1 --cache-from "$s_cache" "$proj"; }
s_fresh_push() { "$strata" build -q --network host -t "$reg/strata/app:v2" --push --cache-from "$s_cache" "$proj"; }
d_export() {
  "$docker_cli" build -q --network=host --build-arg BUILDKIT_INLINE_CACHE=1 -t "$reg/docker/app:v1" "$proj" \
    && "$docker_cli" push -q "$reg/docker/app:v1"
}
d_fresh() { "$docker_cli" build -q --network=host --cache-from "$reg/docker/app:v1" -t app:v1 "$proj"; }
d_fresh_push() { d_fresh && "$docker_cli" tag app:v1 "$reg/docker/app:v2" && "$docker_cli" push -q "$reg/docker/app:v2"; }

declare -A times
record() { times[$1]="${times[$1]:-} $2"; }
for _ in $(seq "$runs"); do
  echo v1 >"$proj/src.txt"
  fresh_strata; record s_export "$(time_of s_export)"
  fresh_dockerd; record d_export "$(time_of d_export)"
  fresh_strata; record s_fresh "$(time_of s_fresh)"
  fresh_dockerd; record d_fresh "$(time_of d_fresh)"
  fresh_strata; record s_fresh_push "$(time_of s_fresh_push)"
  fresh_dockerd; record d_fresh_push "$(time_of d_fresh_push)"
  echo "v2 $RANDOM" >"$proj/src.txt"
  fresh_strata; record s_onefile "$(time_of s_fresh)"
  fresh_dockerd; record d_onefile "$(time_of d_fresh)"
done

echo "| scenario | strata | BuildKit | strata/BuildKit |"
echo "|---|---|---|---|"
for s in export fresh fresh_push onefile; do
  # shellcheck disable=SC2086
  st=$(median ${times[s_$s]})
  # shellcheck disable=SC2086
  dt=$(median ${times[d_$s]})
  printf '| %s | %.2f s | %.2f s | %.2f |\n' "${s/_/+}" "$st" "$dt" "$(echo "$st / $dt" | bc -l)"
done
