#!/usr/bin/env bash
# Builds .device/ (git-ignored) for benchmarks/device_check.sh: what the GPU machine of the
# `device` tool lacks and cannot fetch (it reaches no registry). Run here, where pip works:
#   bash benchmarks/device_bundle.sh
# - wheels/: polars for that machine's Python 3.12. Its image holds torch, numpy, pyarrow,
#   pyyaml and pytest but not polars. 1.0.0 is our tested lower bound (pyproject.toml), and its
#   one 31 MB wheel keeps the call's working tree under 64 MiB. polars 2.x needs a second,
#   54 MB runtime wheel, which would not fit.
# - data/: the authors' Beauty.txt and Beauty_item2attributes.json from ../shared/data/s3rec,
#   which does not travel with the checkout.
set -euo pipefail
cd "$(dirname "$0")/.."
POLARS=${POLARS:-1.0.0}
SOURCE=${SOURCE:-../shared/data/s3rec}
LIMIT_MIB=64

for file in Beauty.txt Beauty_item2attributes.json; do
  [ -f "$SOURCE/$file" ] || { echo "device_bundle: $SOURCE/$file is missing (set SOURCE=<folder with it>)" >&2; exit 1; }
done
rm -rf .device.tmp && mkdir -p .device.tmp/wheels .device.tmp/data
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d .device.tmp/wheels "polars==$POLARS"
cp "$SOURCE/Beauty.txt" "$SOURCE/Beauty_item2attributes.json" .device.tmp/data/
rm -rf .device && mv .device.tmp .device

# What travels: tracked files, untracked files git does not ignore, and .device (carried).
tree=$( { git ls-files -z --cached --others --exclude-standard | xargs -0 -r du -cb 2>/dev/null | tail -1 | cut -f1; } )
bundle=$(du -sb .device | cut -f1)
total_mib=$(( (tree + bundle) / 1048576 ))
echo "device_bundle: .device $(( bundle / 1048576 )) MiB + working tree $(( tree / 1048576 )) MiB = $total_mib MiB (limit $LIMIT_MIB)"
ls -l .device/wheels .device/data
[ "$total_mib" -lt "$LIMIT_MIB" ] || { echo "device_bundle: over the device tool's $LIMIT_MIB MiB" >&2; exit 1; }
