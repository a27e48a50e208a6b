#!/usr/bin/env bash
# The whole test suite: the format/lint/doc gate, Rust unit and integration
# tests (some start a real redis-server), the browser end-to-end tests in
# headless Chromium, the cluster tests (redis-server, two serve nodes behind
# haproxy, Chromium and the CLI), then the NAT lab.
# Installs what the tests need when it is missing (Debian packages via
# apt-get, npm packages via npm ci), so it works on a fresh machine.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n==> %s\n' "$*"; }

# Runs a command with a time limit, so that a test process that hangs (one
# once spun forever at exit in Node's handle cleanup) fails the run with a
# message instead of using up CI's time.
bounded() {
    local limit=$1 rc=0
    shift
    timeout --kill-after=30s "$limit" "$@" || rc=$?
    if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then echo "timed out after $limit: $*" >&2; fi
    return "$rc"
}

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
        echo "need root to run: $*" >&2; exit 1
    fi
}

# Debian packages the tests use, as "command:package" (tsc type-checks the
# npm package of the SDK, tests/e2e/sdk-package.test.mjs; systemd-analyze
# checks deploy/switchboard.service, tests/e2e/deploy.test.mjs; ffmpeg makes
# and checks the media fixtures of `play` and `record`).
missing=()
for pair in chromium:chromium node:nodejs npm:npm tsc:node-typescript systemd-analyze:systemd turnutils_uclient:coturn redis-server:redis-server haproxy:haproxy certutil:libnss3-tools openssl:openssl pebble:pebble ffmpeg:ffmpeg ffprobe:ffmpeg; do
    command -v "${pair%%:*}" >/dev/null || missing+=("${pair#*:}")
done
# PyJWT has no command: the access-token interop tests
# (crates/switchboard/tests/auth.rs) import it from Debian's python3.
/usr/bin/python3 -c 'import jwt' 2>/dev/null || missing+=(python3-jwt)
if [ ${#missing[@]} -gt 0 ]; then
    log "installing Debian packages: ${missing[*]}"
    as_root apt-get update -q
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

if [ ! -d tests/e2e/node_modules/playwright-core ]; then
    log "installing npm packages for tests/e2e"
    (cd tests/e2e && npm ci --no-audit --no-fund)
fi
if [ ! -d tests/cluster/node_modules/ws ]; then
    log "installing npm packages for tests/cluster"
    (cd tests/cluster && npm ci --no-audit --no-fund)
fi

# The hygiene gate runs first: drift in formatting, lints or docs fails the
# run before any test does.
if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
    log "installing rustfmt and clippy"
    rustup component add rustfmt clippy
fi
log "cargo fmt --check"
cargo fmt --all --check
log "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings
log "cargo doc"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked

log "building"
cargo build --workspace --all-targets --locked

log "Rust tests"
cargo test --workspace --locked

log "browser end-to-end tests (headless Chromium)"
export SWITCHBOARD_BIN="$PWD/target/debug/switchboard"
export SWITCHBOARD_MDNS_BIN="$PWD/target/debug/examples/mdns-resolve"
bounded 25m node --test --test-concurrency=1 tests/e2e/*.test.mjs

log "cluster tests (redis-server, two serve nodes behind haproxy, Chromium and the CLI)"
bounded 10m node --test --test-concurrency=1 tests/cluster/*.test.mjs

# Network namespaces need root; CI runs as root. The lab installs iproute2,
# iptables and conntrack when missing and fails loudly if the kernel lacks
# what it needs.
log "NAT lab (network namespaces)"
as_root env SWITCHBOARD_BIN="$SWITCHBOARD_BIN" tests/nat/lab.sh
