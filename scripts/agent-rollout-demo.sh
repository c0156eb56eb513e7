#!/usr/bin/env bash
# One rollout through dom0 agents over mutual TLS, with the operator's commands only (docs/agent.md,
# "A rollout through agents"): an emulated fleet of HOSTS hypervisors, the fleet CA and a worker
# certificate, each host enrolled (hosts enroll -> join token -> agent enroll -> POST /api/enroll)
# and its `fleetpatch agent` started on the doubles of xen-livepatch and xl over its emulated
# host, then a signed payload rolled out (rollout start --with-worker) and its status, and the
# first host's own journal of the upload and the apply.
#
# Needs DATABASE_URL (PostgreSQL) and either TEMPORAL_ADDRESS or TEMPORAL_CLI (a `temporal`
# binary: a dev server is started for the demo). Everything else lives in a temporary directory,
# removed at the end (KEEP=1 keeps it), and every process started here is stopped by its pid.
set -euo pipefail
cd "$(dirname "$0")/.."
HOSTS=${HOSTS:-3}
ROOT=$(mktemp -d "${TMPDIR:-/tmp}/fleetpatch-agent-demo.XXXXXX")
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  [ -n "${KEEP:-}" ] && echo "kept $ROOT" || rm -rf "$ROOT"
}
trap cleanup EXIT
: "${DATABASE_URL:?set DATABASE_URL to a PostgreSQL database}"
fp() { node bin/fleetpatch.js "$@"; }
show() { printf '\n$ fleetpatch %s\n' "$*"; fp "$@"; }
free_port() { node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'; }
wait_for() { # FILE TEXT: until the log FILE holds TEXT (60 s)
  for _ in $(seq 600); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done
  echo "timed out waiting for '$2' in $1:" >&2; cat "$1" >&2; return 1
}

export FLEETPATCH_DATA_DIR=$ROOT/control LOG_LEVEL=${LOG_LEVEL:-warn}
export TEMPORAL_TASK_QUEUE=agent-demo-$$
export FLEETPATCH_TRUSTED_KEYS=$ROOT/control/trusted-keys
# The control plane knows no fleet file: its hosts are the enrolled ones, reached over mTLS only.
export FLEETPATCH_FLEET_FILE=$ROOT/control/no-fleet-file.json
mkdir -p "$FLEETPATCH_DATA_DIR" "$FLEETPATCH_TRUSTED_KEYS"

if [ -z "${TEMPORAL_ADDRESS:-}" ]; then
  : "${TEMPORAL_CLI:?set TEMPORAL_ADDRESS, or TEMPORAL_CLI to a temporal binary}"
  TPORT=$(free_port)
  "$TEMPORAL_CLI" server start-dev --headless --ip 127.0.0.1 --port "$TPORT" --ui-port "$(free_port)" >"$ROOT/temporal.log" 2>&1 &
  PIDS+=($!)
  export TEMPORAL_ADDRESS=127.0.0.1:$TPORT
  for _ in $(seq 600); do (echo >"/dev/tcp/127.0.0.1/$TPORT") 2>/dev/null && break; sleep 0.1; done
fi

# The emulated hypervisors (their fleet file is for the doubles only).
EPORT=$(free_port)
fp emulate --hosts "$HOSTS" --port "$EPORT" --fleet-file "$ROOT/emulator/fleet.json" >"$ROOT/emulate.log" 2>&1 &
PIDS+=($!)
wait_for "$ROOT/emulator/fleet.json" '"hosts"'

# The control plane: the fleet CA, the worker's certificate, the API (for POST /api/enroll).
show ca init
show ca issue --worker demo
APORT=$(free_port)
fp api --listen 127.0.0.1 --port "$APORT" >"$ROOT/api.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 600); do (echo >"/dev/tcp/127.0.0.1/$APORT") 2>/dev/null && break; sleep 0.1; done
CONTROL=http://127.0.0.1:$APORT

# The payload signer: the control plane and every host trust its public key.
fp payload keygen --out "$ROOT/signer" >/dev/null
cp "$ROOT/signer.pub" "$FLEETPATCH_TRUSTED_KEYS/signer.pub"

for i in $(seq 0 $((HOSTS - 1))); do
  ID=$(printf 'host-%04d' "$i")
  DIR=$ROOT/hosts/$ID
  mkdir -p "$DIR"
  # This host's "Xen tools": the doubles over its emulated hypervisor.
  npx tsx scripts/install-doubles.ts "$ROOT/emulator/fleet.json" "$ID" "$DIR/bin" >/dev/null
  TOKEN=$(fp hosts enroll "$ID" --label demo=yes --control "$CONTROL" --json | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(JSON.parse(s).joinToken))')
  PORT=$(free_port)
  echo
  echo "\$ fleetpatch hosts enroll $ID --label demo=yes  # -> a one-time join token, given to the host"
  echo "\$ fleetpatch agent enroll --join-token ${TOKEN:0:12}… --control $CONTROL --dir $DIR --address https://127.0.0.1:$PORT --xl $DIR/bin/xl   # on the host"
  fp agent enroll --join-token "$TOKEN" --control "$CONTROL" --dir "$DIR" --address "https://127.0.0.1:$PORT" --xl "$DIR/bin/xl"
  node -e 'const fs=require("fs");fs.writeFileSync(process.argv[2], JSON.stringify([JSON.parse(fs.readFileSync(process.argv[1],"utf8"))]))' "$ROOT/signer.pub" "$DIR/trusted-keys.json"
  fp agent --dir "$DIR" --listen "127.0.0.1:$PORT" --xen-livepatch "$DIR/bin/xen-livepatch" --xl "$DIR/bin/xl" --tool-timeout 60000 >"$DIR/agent.out" 2>&1 &
  PIDS+=($!)
done
for i in $(seq 0 $((HOSTS - 1))); do ID=$(printf 'host-%04d' "$i"); wait_for "$ROOT/hosts/$ID/agent.out" "fleetpatch agent: host $ID at"; done
sed -n 1p "$ROOT/hosts/host-0000/agent.out"
show hosts list

# A signed payload and its plan.
cat >"$ROOT/fix.yaml" <<EOF
name: fix
funcs:
  - target: xen_extra_version
    returns: "-fix"
EOF
fp payload build --spec "$ROOT/fix.yaml" --out "$ROOT/fix.livepatch" --image default >/dev/null
fp payload sign "$ROOT/fix.livepatch" --key "$ROOT/signer.key" >/dev/null
cat >"$ROOT/plan.yaml" <<EOF
name: fix-through-agents
payloads:
  - file: fix.livepatch
waves:
  - name: canary
    hosts: 1
  - name: rest
    hosts: 100%
concurrency: 2
verify:
  call: xen_extra_version
  expect: "-fix"
EOF
show rollout start "$ROOT/plan.yaml" --id agents-demo-1 --by demo --reason "a rollout through agents" --with-worker --watch
show rollout status agents-demo-1
echo
echo "\$ fleetpatch agent journal --dir $ROOT/hosts/host-0000   # the host's own account"
fp agent journal --dir "$ROOT/hosts/host-0000" | grep -E 'livepatch/fix|xen-livepatch (upload|apply)'
