#!/usr/bin/env bash
# Supply-chain checks with cargo-deny, configured by deny.toml.
#
#   scripts/supply-chain.sh            bans, licences and sources; advisories too when the RustSec
#                                      database can be fetched (it is a git clone from the internet)
#   scripts/supply-chain.sh --no-advisories
#
# Kept out of .ci/run: building cargo-deny takes several minutes on two cores, and the advisory
# database cannot be fetched from the CI machines, which reach only the package registries.
set -euo pipefail
cd "$(dirname "$0")/.."
CARGO_DENY_VERSION=0.20.2
if ! cargo deny --version 2>/dev/null | grep -q "$CARGO_DENY_VERSION"; then
    cargo install --locked --version "$CARGO_DENY_VERSION" cargo-deny
fi
cargo deny check bans licenses sources
if [[ "${1:-}" == "--no-advisories" ]]; then
    echo "supply-chain: advisories skipped (--no-advisories)"
elif cargo deny fetch db >/dev/null 2>&1; then
    cargo deny check advisories
else
    echo "supply-chain: the advisory database could not be fetched; advisories NOT checked" >&2
    exit 3
fi
