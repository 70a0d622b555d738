#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# WebDAV-Push benchmark: 1,000 subscriptions (10 devices x 100 calendars) against the iCloud
# stand-in; upstream requests per poll period, and delivery latency after a write through the
# bridge and after a change made directly in iCloud (bench/push-bench.py).
#
#   bench/push.sh
#
# Prints a markdown table to stdout; progress to stderr. Not part of CI.
#
# Env: BENCH_DIR (target/bench-push)  BENCH_BIN (bridge binary; default cargo build --release)
#      BENCH_DEVICES (10)  BENCH_COLLECTIONS (100)  BENCH_PUSH_POLL (60)  BENCH_FRESH (30)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
cd "$ROOT"
# shellcheck source=../tests/interop/lib.sh
. "$ROOT/tests/interop/lib.sh"

BENCH_DIR="${BENCH_DIR:-target/bench-push}"
mkdir -p "$BENCH_DIR"
BENCH_DIR="$(cd "$BENCH_DIR" && pwd)"
DEVICES="${BENCH_DEVICES:-10}"
COLLECTIONS="${BENCH_COLLECTIONS:-100}"
POLL="${BENCH_PUSH_POLL:-60}"
FRESH="${BENCH_FRESH:-30}"
# The bridge checks at most every fresh_secs + 1 (each check must reach iCloud).
[ "$POLL" -gt "$FRESH" ] || POLL=$((FRESH + 1))
HOST="$INTEROP_HOST"

trap stop_all EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
blog() { echo "bench-push: $*" >&2; }
bdie() { echo "bench-push: ERROR: $*" >&2; exit 1; }

BIN="${BENCH_BIN:-}"
[ -n "$BIN" ] || BIN="$(cargo_bridge release)" || bdie "cargo build failed"

rm -rf "$BENCH_DIR"/run.*
RUN="$(mktemp -d "$BENCH_DIR/run.XXXXXX")"
blog "logs in $RUN"

spawn_split standin "$RUN/standin.json" "$RUN/standin.log" "$BIN" standin --seed
SI_PID="$SPAWN_PID"
wait_lines "$SI_PID" "$RUN/standin.json" 1 || bdie "stand-in did not start"
si() { python3 -c 'import json,sys; print(json.loads(open(sys.argv[1]).readline())[sys.argv[2]])' "$RUN/standin.json" "$1"; }

PUSH_PORT="$(free_port)"
BR_PORT="$(free_port)"
BR_CFG="$RUN/icloud-bridge.toml"
cat >"$BR_CFG" <<CONF
[server]
listen = "$HOST:$BR_PORT"
data_dir = "data"

[[account]]
name = "alice"
apple_id = "$(si apple_id)"

[cache]
fresh_secs = $FRESH

[upstream]
caldav = "$(si caldav)"
carddav = "$(si carddav)"

[push]
allow = ["127.0.0.1:$PUSH_PORT"]
poll_secs = $POLL
CONF
printf '%s\n' "$(si password)" | "$BIN" --config "$BR_CFG" reconnect --password-stdin >/dev/null 2>&1 \
  || bdie "storing the password failed"
: >"$RUN/logins"
for i in $(seq 1 "$DEVICES"); do
  echo "device$i $("$BIN" --config "$BR_CFG" client add "device$i" 2>/dev/null)" >>"$RUN/logins"
done
spawn bridge "$RUN/bridge.log" "$BIN" --config "$BR_CFG" serve
BR_PID="$SPAWN_PID"
wait_http "$BR_PID" "http://$HOST:$BR_PORT/healthz" || bdie "bridge did not start"

python3 "$HERE/push-bench.py" --bridge "http://$HOST:$BR_PORT/" --control "$(si control)" \
  --logins "$RUN/logins" --push-port "$PUSH_PORT" --collections "$COLLECTIONS" --period "$POLL"
rss="$(awk '/^VmRSS:/ {printf "%.1f", $2 / 1024}' "/proc/$BR_PID/status")"
echo "| bridge RSS after the run | $rss MB |"
