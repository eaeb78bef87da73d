#!/usr/bin/env bash
# Runtime benchmark: start and finish /bin/true (busybox) in strata's sandbox next to `runc run` of
# the same bundle (same config.json: Docker's defaults, private network), in the same run.
# Usage: bench/runtime.sh [runs]   (as root; needs hyperfine, runc, busybox-static)
set -euo pipefail
runs=${1:-100}
repo=$(cd "$(dirname "$0")/.." && pwd)
cargo build --release --manifest-path "$repo/Cargo.toml" -q
strata="$repo/target/release/strata"

work=$(mktemp -d /tmp/strata-bench-runtime.XXXXXX)
trap 'rm -rf "$work"' EXIT
"$repo/bench/busybox-rootfs.sh" "$work/rootfs"
"$strata" debug runtime-spec --rootfs "$work/rootfs" -- /bin/true > "$work/config.json"

# crun refuses cgroup v1 hybrid layouts; show whether it still does on this machine.
if command -v crun >/dev/null; then
  if crun_err=$(crun run --bundle "$work" "strata-bench-crun-$$" 2>&1); then
    crun_cmd="crun run --bundle $work strata-bench-crun"
  else
    echo "crun: $crun_err"
    crun_cmd=""
  fi
fi

hyperfine -N --warmup 10 --runs "$runs" --export-json "$work/result.json" \
  -n strata "$strata debug run-bundle $work" \
  -n runc "runc run --bundle $work strata-bench-runc" \
  ${crun_cmd:+-n crun "$crun_cmd"}

jq -r '.results[] | "\(.command): median \(.median * 1000 | . * 100 | round / 100) ms"' "$work/result.json"
jq -r '(.results[0].median / .results[1].median) as $r | "strata/runc median ratio: \($r * 1000 | round / 1000)"' "$work/result.json"
