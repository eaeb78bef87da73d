#!/usr/bin/env bash
# Layer benchmark: strata's layer engine against tar + pigz, tar -xzf and sha256sum on the same
# data in the same run. Usage: bench/layers.sh [RUNS]  (root; needs hyperfine, pigz; ~10 min)
#
# Data (made once under $BENCH_DIR, default /var/tmp/strata-bench):
#   big/    1 GiB in 64 files of 16 MiB: half random bytes, half zeros
#   small/  20,000 files of 0.5-4 KiB of base64 text in 200 directories
# Every tool compresses at gzip level 6 on the same number of threads (all cores).
set -euo pipefail

runs=${1:-3}
repo=$(cd "$(dirname "$0")/.." && pwd)
data=${BENCH_DIR:-/var/tmp/strata-bench}
threads=$(nproc)
out=$data/out
results=$data/results
mkdir -p "$data" "$out" "$results"

if [ ! -d "$data/big" ]; then
  mkdir -p "$data/big.tmp"
  for i in $(seq -w 0 31); do
    head -c 16M /dev/urandom >"$data/big.tmp/random-$i"
    head -c 16M /dev/zero >"$data/big.tmp/zeros-$i"
  done
  mv "$data/big.tmp" "$data/big"
fi
if [ ! -d "$data/small" ]; then
  python3 - "$data/small.tmp" <<'PY'
import base64, os, random, sys
root = sys.argv[1]
rng = random.Random(20000)
for d in range(200):
    os.makedirs(f"{root}/d{d:03}", exist_ok=True)
    for f in range(100):
        raw = rng.randbytes(rng.randint(384, 3072))
        with open(f"{root}/d{d:03}/f{f:03}.txt", "wb") as fh:
            fh.write(base64.encodebytes(raw))
PY
  mv "$data/small.tmp" "$data/small"
fi

cargo build --release -p strata-snapshotter --example layer --manifest-path "$repo/Cargo.toml" >&2
layer=$repo/target/release/examples/layer

for set in big small; do
  hyperfine --runs "$runs" --warmup 1 --export-markdown "$results/create-$set.md" \
    -n "strata layer create (gzip -6, $threads threads)" \
    "$layer create $data/$set $out/$set-strata.tar.gz gzip $threads" \
    -n "tar -c | pigz -6 -p $threads" \
    "tar -C $data/$set -cf - . | pigz -6 -p $threads > $out/$set-pigz.tar.gz" \
    -n "sha256sum of the files" \
    "find $data/$set -type f -print0 | xargs -0 sha256sum > /dev/null"

  x=$out/$set-x
  hyperfine --runs "$runs" --warmup 1 --export-markdown "$results/extract-$set.md" \
    --prepare "rm -rf $x && mkdir -p $x" \
    -n "strata layer extract" "$layer extract $out/$set-strata.tar.gz $x" \
    -n "pigz -d | tar -x" "pigz -d < $out/$set-pigz.tar.gz | tar -C $x -xf -" \
    -n "tar -xzf" "tar -C $x -xzf $out/$set-pigz.tar.gz"
  rm -rf "$x"
done

echo "compressed sizes:" >&2
ls -l "$out"/*.tar.gz >&2
cat "$results"/create-big.md "$results"/extract-big.md "$results"/create-small.md "$results"/extract-small.md
