#!/usr/bin/env bash
# Benchmark our function against the Python reference, with one command:
#   bench/run.sh [--rounds N] [--users N] [--latency-ms N] [--concurrency N] [--only ours|reference]
# Builds the release binary and the bench example, installs the reference's Python packages into a
# venv under the target directory on first use (from the reference's own requirements.txt), then
# runs the benchmark. Results: a table on stdout and JSON in <target>/bench/results.json.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
shared="${SHARED_DIR:-$root/../shared}"
target="${CARGO_TARGET_DIR:-$root/target}"
reference="$shared/reference"
venv="${REFERENCE_VENV:-$target/bench/reference-venv}"

cd "$root"
echo "bench: building (release)" >&2
cargo build --release --locked --bin oci-user-capabilities --example bench

# The same steps and marker file as the reference's run.sh, so run.sh finds the venv ready and
# the first measured start is not an install.
if [ ! -f "$venv/.installed" ]; then
  echo "bench: installing the reference's requirements into $venv (once, takes a few minutes)" >&2
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install -q -r "$reference/requirements.txt" >&2
  # Precompile everything: the reference runs with PYTHONDONTWRITEBYTECODE=1 (so nothing is written
  # beside its func.py) and must still find bytecode for its packages, as a built image would.
  env -u PYTHONDONTWRITEBYTECODE "$venv/bin/python" -m compileall -q -j 0 "$venv/lib" >/dev/null 2>&1 || true
  touch "$venv/.installed"
fi

exec "$target/release/examples/bench" \
  --binary "$target/release/oci-user-capabilities" \
  --reference "$reference/run.sh" \
  --reference-venv "$venv" \
  --out "$target/bench/results.json" \
  "$@"
