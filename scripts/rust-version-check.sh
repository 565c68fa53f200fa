#!/usr/bin/env bash
# The workspace's declared minimum Rust (`rust-version` in Cargo.toml, shared by the four packages)
# must be at least what every locked dependency declares, or a newcomer on the declared toolchain
# gets an error deep in the build. Run by .ci/run; needs only cargo, grep, sed and sort.
set -euo pipefail
cd "$(dirname "$0")/.."

# "1.88" and "1.88.0" are the same version; compare them with three parts.
three_parts() { awk -F. '{ printf "%d.%d.%d\n", $1, $2, ($3 == "" ? 0 : $3) }'; }

declared=$(sed -n 's/^rust-version *= *"\([0-9.]*\)".*/\1/p' Cargo.toml | head -n 1)
if [ -z "$declared" ]; then
  echo "rust-version-check: Cargo.toml declares no rust-version" >&2
  exit 1
fi
for member in crates/*/Cargo.toml; do
  if ! grep -q '^rust-version.workspace *= *true' "$member"; then
    echo "rust-version-check: $member must take rust-version from the workspace (rust-version.workspace = true)" >&2
    exit 1
  fi
done

# Every package in the lock file, for every platform, dev-dependencies included: what `cargo test`
# on the declared toolchain would compile.
metadata=$(cargo metadata --locked --format-version 1)
needed=$(printf '%s' "$metadata" | grep -o '"rust_version":"[0-9.]*"' | cut -d'"' -f4 | three_parts | sort -V | tail -n 1)
# The packages that set that floor, for the message: one line per package (a package object starts
# {"name":…,"version":…,"id":…; its dependencies' objects do not), then its own rust_version.
setters=$(printf '%s' "$metadata" \
  | sed 's/{"name":"\([^"]*\)","version":"\([^"]*\)","id":"/\n@@ \1 \2 /g' \
  | sed -n 's/^@@ \([^ ]*\) \([^ ]*\) registry.*"rust_version":"\([0-9.]*\)".*/\3 \1 \2/p' \
  | while read -r v name version; do
      if [ "$(echo "$v" | three_parts)" = "$needed" ]; then echo "$name $version"; fi
    done | sort -u | head -n 6 | paste -sd, - | sed 's/,/, /g' || true)

highest=$(printf '%s\n%s\n' "$(echo "$declared" | three_parts)" "$needed" | sort -V | tail -n 1)
if [ "$highest" != "$(echo "$declared" | three_parts)" ]; then
  echo "rust-version-check: Cargo.toml declares rust-version $declared, but the locked dependencies need $needed ($setters)." >&2
  echo "Raise rust-version in Cargo.toml (and the README's prerequisites) to $needed, or lock older dependencies." >&2
  exit 1
fi
echo "rust-version-check: declared $declared covers every locked dependency (highest: $needed${setters:+, from $setters})"
