#!/usr/bin/env bash
# The whole test suite, on a fresh machine or a laptop: README's test command, and what CI runs.
#
# - Python tools go into a virtual environment under ~/.cache (nothing installed system-wide):
#   the twilio package, whose RequestValidator our signature fixture is checked against, and
#   moto, whose server the AWS adapters' tests run against (the same SDK calls production makes).
# - Debian's Chromium and its WebDriver, with apt-get when they are missing, and axe-core from
#   the npm registry, for the CRM's browser test.
# - Cargo builds where `cargo run --release` builds, the clone's target/ (one folder to find and
#   to clean), unless CARGO_TARGET_DIR says otherwise (CI sets a shared one outside the clone).
#   The suite's debug build cannot reuse the release build's compiled crates (Cargo keeps one
#   set per profile), only the crates both downloaded.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
VENV="${CALLKEEPER_VENV:-$HOME/.cache/callkeeper-venv}"

if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
"$VENV/bin/pip" install --quiet --disable-pip-version-check -r scripts/requirements-test.txt

echo "== signature fixture matches twilio-python's RequestValidator"
fresh="$(mktemp)"
trap 'rm -f "$fresh"' EXIT
"$VENV/bin/python" core/tests/fixtures/gen_signature_vectors.py > "$fresh"
if ! cmp -s "$fresh" core/tests/fixtures/signature_vectors.json; then
  echo "core/tests/fixtures/signature_vectors.json differs from what twilio-python generates now;" >&2
  echo "regenerate it: $VENV/bin/python core/tests/fixtures/gen_signature_vectors.py > core/tests/fixtures/signature_vectors.json" >&2
  exit 1
fi

echo "== mu-law fixtures match CPython's audioop (the CCITT G.711 reference coder)"
tables="$(mktemp -d)"
trap 'rm -f "$fresh"; rm -rf "$tables"' EXIT
if "$VENV/bin/python" -W ignore -c 'import audioop' 2>/dev/null; then
  "$VENV/bin/python" -W ignore core/tests/fixtures/gen_mulaw_tables.py "$tables"
  for f in mulaw_decode.json mulaw_encode.bin; do
    cmp -s "$tables/$f" "core/tests/fixtures/$f" || { echo "core/tests/fixtures/$f differs from audioop's" >&2; exit 1; }
  done
else
  echo "   (not checked: this Python has no audioop, which left CPython in 3.13; the committed tables are still replayed)"
fi

echo "== sample Lambda events match events/gen_events.py (signed by twilio-python)"
events="$(mktemp -d)"
trap 'rm -f "$fresh"; rm -rf "$tables" "$events"' EXIT
"$VENV/bin/python" events/gen_events.py "$events"
for f in "$events"/*.json; do
  cmp -s "$f" "events/$(basename "$f")" || { echo "events/$(basename "$f") differs from what events/gen_events.py writes; regenerate: $VENV/bin/python events/gen_events.py events/" >&2; exit 1; }
done

echo "== infra/template.yaml: cfn-lint, and sam validate --lint"
"$VENV/bin/cfn-lint" infra/template.yaml
# SAM CLI has its own environment: its pinned boto3 and moto's would fight.
SAM_VENV="${CALLKEEPER_SAM_VENV:-$HOME/.cache/callkeeper-sam-venv}"
if [ ! -x "$SAM_VENV/bin/sam" ]; then
  python3 -m venv "$SAM_VENV"
  "$SAM_VENV/bin/pip" install --quiet --disable-pip-version-check -r scripts/requirements-sam.txt
fi
# Offline: no AWS account is asked anything; a region is all it needs.
AWS_DEFAULT_REGION=eu-west-1 AWS_ACCESS_KEY_ID=offline AWS_SECRET_ACCESS_KEY=offline SAM_CLI_TELEMETRY=0 \
  "$SAM_VENV/bin/sam" validate --lint --config-file samconfig.toml

echo "== Chromium and chromium-driver, for the CRM's pages in a real browser (tests/api/crm_pages.rs)"
if ! command -v chromedriver >/dev/null || ! command -v chromium >/dev/null; then
  as_root=""
  [ "$(id -u)" = 0 ] || as_root="sudo"
  $as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $as_root apt-get install -y -qq chromium chromium-driver >/dev/null
fi
echo "   $(chromium --version 2>/dev/null | head -1)"

echo "== axe-core (npm), which the CRM's browser test runs on every page"
AXE_VERSION=4.14.1
NPM_DIR="${CALLKEEPER_NPM:-$HOME/.cache/callkeeper-npm}"
if ! grep -qs "\"version\": \"$AXE_VERSION\"" "$NPM_DIR/node_modules/axe-core/package.json"; then
  if ! command -v npm >/dev/null; then
    as_root=""
    [ "$(id -u)" = 0 ] || as_root="sudo"
    $as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $as_root apt-get install -y -qq npm >/dev/null
  fi
  mkdir -p "$NPM_DIR"
  npm install --silent --no-audit --no-fund --save-exact --prefix "$NPM_DIR" "axe-core@$AXE_VERSION"
fi
export CALLKEEPER_TEST_AXE="$NPM_DIR/node_modules/axe-core/axe.min.js"
echo "   axe-core $AXE_VERSION"

echo "== moto_server (DynamoDB, SQS, S3, SSM, ELBv2 emulated) for the AWS adapters' tests"
port="$("$VENV/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
# One request at a time: see scripts/moto_serial.py.
"$VENV/bin/python" scripts/moto_serial.py 127.0.0.1 "$port" > "${TMPDIR:-/tmp}/callkeeper-moto.log" 2>&1 &
moto_pid=$!
trap 'rm -f "$fresh"; rm -rf "$tables" "$events"; kill "$moto_pid" 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
  if "$VENV/bin/python" -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/moto-api/')" 2>/dev/null; then break; fi
  sleep 0.1
done
export CALLKEEPER_TEST_AWS_ENDPOINT="http://127.0.0.1:$port"
echo "   at $CALLKEEPER_TEST_AWS_ENDPOINT"

echo "== the functions' binary, for tests/api/lambda_events.rs to run under cargo-lambda's emulator"
cargo build --locked --quiet -p callkeeper-functions --bins
export CALLKEEPER_TEST_CARGO_LAMBDA="$VENV/bin/cargo-lambda"
# tests/api/twiml_conformance.rs rebuilds every TwiML document with twilio-python's VoiceResponse.
export CALLKEEPER_TEST_PYTHON="$VENV/bin/python"

# Every Realtime event crossing the fake server's socket, either way, one per shape, is kept here
# (src/fake_realtime.rs) and read after the tests by the openai package's own GA types.
wire="$(mktemp -d)"
trap 'rm -f "$fresh"; rm -rf "$tables" "$events" "$wire"; kill "$moto_pid" 2>/dev/null || true' EXIT
export CALLKEEPER_REALTIME_WIRE_LOG="$wire"

echo "== cargo test"
cargo test --workspace --locked "$@"

echo "== every Realtime event of the suite, read by the openai package's GA types"
# A filtered run may have opened no Realtime session; the whole suite must have.
[ "$#" -eq 0 ] || allow_empty="--allow-empty"
"$VENV/bin/python" scripts/realtime_conformance.py ${allow_empty:-} "$wire"/*.jsonl
