#!/usr/bin/env bash
# Capture the status page as a phone sees it (412x915) in each state, to docs/status-<state>.png.
# Runs the bridge against the stand-in (`icloud-bridge standin --seed`, driven through its
# HTTP control port); installs Debian's chromium if it is missing. Needs curl and python3.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v chromium >/dev/null; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -q && $SUDO apt-get install -y -q --no-install-recommends chromium
fi
cargo build -q
BIN="${CARGO_TARGET_DIR:-target}/debug/icloud-bridge"
WORK="$(mktemp -d)"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT

json() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$1" "$2"; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_for() { for _ in $(seq 100); do eval "$1" && return 0; sleep 0.1; done; echo "timed out: $1" >&2; exit 1; }

# start_pair DIR: a seeded stand-in and a bridge (no password stored yet) with an admin login.
start_pair() {
    local d="$1"; mkdir -p "$d"
    "$BIN" standin --seed >"$d/standin.json" 2>"$d/standin.log" & PIDS+=($!); STANDIN=$!
    wait_for "[ -s '$d/standin.json' ]"
    CONTROL="$(json "$d/standin.json" control)"; ASP="$(json "$d/standin.json" password)"
    PORT="$(free_port)"; BASE="http://127.0.0.1:$PORT"
    cat >"$d/cfg.toml" <<EOF
[server]
listen = "127.0.0.1:$PORT"
data_dir = "data"
[[account]]
name = "alice"
apple_id = "$(json "$d/standin.json" apple_id)"
[upstream]
caldav = "$(json "$d/standin.json" caldav)"
carddav = "$(json "$d/standin.json" carddav)"
timeout_secs = 3
EOF
    CFG="$d/cfg.toml"
    LOGIN_PW="$("$BIN" --config "$CFG" client add shots --admin)"
    "$BIN" --config "$CFG" serve 2>"$d/bridge.log" & PIDS+=($!)
    wait_for "curl -fs '$BASE/healthz' >/dev/null"
}
reconnect() { printf '%s\n' "$1" | "$BIN" --config "$CFG" reconnect --password-stdin >/dev/null; sleep 1.5; }
n=0
write() { # a PUT always needs iCloud
    n=$((n + 1))
    curl -s -o /dev/null -u "shots:$LOGIN_PW" -X PUT -H 'Content-Type: text/calendar' \
        --data-binary $'BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//shots//EN\r\nBEGIN:VEVENT\r\nUID:shot-'"$n"$'\r\nDTSTAMP:20260101T000000Z\r\nDTSTART:20260102T100000Z\r\nDTEND:20260102T110000Z\r\nSUMMARY:shot\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n' \
        "$BASE/dav/alice/calendars/home/shot-$n.ics" || true
}
shoot() {
    chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=412,915 \
        --screenshot="docs/status-$1.png" "$BASE/status" 2>/dev/null
    echo "docs/status-$1.png"
}

start_pair "$WORK/a"
shoot unconfigured
reconnect "$ASP"; write; shoot ok
curl -fs -X POST "${CONTROL}revoke-all" >/dev/null; write; shoot auth_rejected
reconnect "$(curl -fs -X POST "${CONTROL}generate-asp?label=shots")"
kill "$STANDIN"; write; shoot unreachable

start_pair "$WORK/b"
reconnect "$ASP"
curl -fs -X POST "${CONTROL}switch?name=rate.limit_after&value=0" >/dev/null; write; shoot rate_limited
