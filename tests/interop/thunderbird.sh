#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Thunderbird (Debian's ESR, under Xvfb, driven through Marionette) against the bridge.
#
#   tests/interop/thunderbird.sh [--shots DIR] [--no-expect] [demo] [refused]
#
# Installs what is missing: Debian's thunderbird, xvfb and imagemagick (apt-get, as root or
# with sudo) and marionette-driver (pip, into the interop venv that run.sh uses). Parts
# (both by default):
#   demo     `icloud-bridge demo`: Thunderbird's own calendar detection, a CardDAV address
#            book and an IMAP account, from the root URL and the demo login only; what
#            Thunderbird shows (calendars, tasks, contacts as the contact pane shows them,
#            birthdays, photos, lists, every dialog and alert) goes to $INTEROP_DIR/tb/demo.json,
#            every DAV request to demo-requests.jsonl; screenshots with --shots DIR.
#   refused  `icloud-bridge serve` in front of `icloud-bridge standin --seed` (IMAP too):
#            the same set-up, then the stand-in revokes the password and Thunderbird
#            refreshes the calendars, syncs the address book and checks mail once;
#            refused.json has the calendars' state, the task list and the alerts and prompts.
# Prints PASS/FAIL per part (the checks of issue 12, see thunderbird.py --expect; with
# --no-expect only that Thunderbird ran) and exits 1 if one failed. Everything listens on
# 127.0.0.1; every process it starts is stopped on exit.
#
# Env: INTEROP_DIR (default target/interop), ICLOUD_BRIDGE_BIN, PYTHON, INTEROP_TB_TIMEOUT
#      (seconds per part, default 300).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
cd "$ROOT"
# shellcheck source=lib.sh
. "$HERE/lib.sh"

SHOTS=""
EXPECT=(--expect)
PARTS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --shots) SHOTS="$2"; shift 2 ;;
    --no-expect) EXPECT=(); shift ;;
    demo|refused) PARTS+=("$1"); shift ;;
    *) idie "unknown argument $1 (see the comment at the top of $0)" ;;
  esac
done
[ ${#PARTS[@]} -gt 0 ] || PARTS=(demo refused)

INTEROP_DIR="${INTEROP_DIR:-target/interop}"
mkdir -p "$INTEROP_DIR"
INTEROP_DIR="$(cd "$INTEROP_DIR" && pwd)"
VENV="$INTEROP_DIR/venv"
PY="$VENV/bin/python"
TB_DIR="$INTEROP_DIR/tb"
TB_TIMEOUT="${INTEROP_TB_TIMEOUT:-300}"
HOST="$INTEROP_HOST"
MARIONETTE_PIN="marionette-driver==3.7.1"

on_exit() {
  local rc=$?
  stop_all
  exit "$rc"
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# tb_install: the Debian packages and the pip package, when missing.
tb_install() {
  local missing=()
  command -v thunderbird >/dev/null || missing+=(thunderbird)
  command -v Xvfb >/dev/null || missing+=(xvfb)
  command -v import >/dev/null || missing+=(imagemagick)
  if [ ${#missing[@]} -gt 0 ]; then
    local sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    ilog "installing ${missing[*]}"
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null \
      || idie "apt-get update failed"
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
      "${missing[@]}" >/dev/null || idie "apt-get install ${missing[*]} failed"
  fi
  if [ ! -x "$PY" ]; then
    "${PYTHON:-python3}" -m venv "$VENV" \
      || idie "'${PYTHON:-python3} -m venv' failed (on Debian: apt-get install python3-venv)"
  fi
  if ! "$PY" -c 'import marionette_driver' 2>/dev/null; then
    ilog "pip install $MARIONETTE_PIN"
    "$PY" -m pip install -q --disable-pip-version-check "$MARIONETTE_PIN" \
      || idie "pip install $MARIONETTE_PIN failed"
  fi
}

tb_build() {
  if [ -n "${ICLOUD_BRIDGE_BIN:-}" ]; then
    BIN="$ICLOUD_BRIDGE_BIN"
  else
    cargo build --quiet --bin icloud-bridge || idie "cargo build failed"
    BIN="$(cargo metadata --format-version 1 --no-deps \
      | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')/debug/icloud-bridge"
  fi
  [ -x "$BIN" ] || idie "bridge binary $BIN missing"
}

FAILED=0
# tb_run NAME ARGS...: thunderbird.py run with a time limit; JSON to $TB_DIR/NAME.json.
tb_run() {
  local name="$1" rc=0 t0=$SECONDS
  shift
  timeout --kill-after=15 "$TB_TIMEOUT" "$PY" "$HERE/thunderbird.py" run --work "$TB_DIR/$name" \
    --record "$TB_DIR/$name-requests.jsonl" "${EXPECT[@]}" "$@" \
    >"$TB_DIR/$name.json" 2>"$TB_DIR/$name.log" || rc=$?
  if [ "$rc" -eq 0 ]; then
    echo "PASS  thunderbird: $name ($((SECONDS - t0)) s; $TB_DIR/$name.json)"
  else
    FAILED=$((FAILED + 1))
    echo "FAIL  thunderbird: $name (exit $rc after $((SECONDS - t0)) s; $TB_DIR/$name.json)"
    grep -E '^(FAIL|ok) ' "$TB_DIR/$name.log" | sed 's/^/  | /' || true
    grep -vE '^(ok|FAIL|tb:) ' "$TB_DIR/$name.log" | tail -n 8 | sed 's/^/  | /' || true
  fi
}

# ---------------------------------------------------------------------------
tb_install
tb_build
rm -rf "$TB_DIR"
mkdir -p "$TB_DIR"
ilog "thunderbird $(thunderbird --version 2>/dev/null | head -n1); binary $BIN; logs in $TB_DIR"

for part in "${PARTS[@]}"; do
  case "$part" in
  demo)
    spawn_split demo "$TB_DIR/demo.out" "$TB_DIR/demo-bridge.log" "$BIN" demo --listen "$HOST:0"
    pid="$SPAWN_PID"
    if wait_lines "$pid" "$TB_DIR/demo.out" 3 && wait_http "$pid" "$(field "$TB_DIR/demo.out" url)healthz"; then
      imap="$(sed -n 's/.*demo mail:.* imap=\([0-9.]*:[0-9]*\).*/\1/p' "$TB_DIR/demo-bridge.log" | head -n1)"
      args=(--url "$(field "$TB_DIR/demo.out" url)" --user "$(field "$TB_DIR/demo.out" user)"
        --password "$(field "$TB_DIR/demo.out" password)")
      [ -n "$imap" ] && args+=(--imap "$imap")
      [ -n "$SHOTS" ] && args+=(--shots "$SHOTS")
      tb_run demo "${args[@]}"
    else
      FAILED=$((FAILED + 1))
      echo "FAIL  thunderbird: demo (icloud-bridge demo did not start)"
      show_log "$TB_DIR/demo-bridge.log" 20 2>&1
    fi
    stop_pid "$pid"
    ;;
  refused)
    d="$TB_DIR/refused-bridge"
    mkdir -p "$d"
    spawn_split standin "$d/standin.json" "$d/standin.log" "$BIN" standin --seed
    si="$SPAWN_PID"
    if ! wait_lines "$si" "$d/standin.json" 1; then
      FAILED=$((FAILED + 1))
      echo "FAIL  thunderbird: refused (the stand-in did not start)"
      continue
    fi
    sj() { python3 -c 'import json,sys; print(json.loads(open(sys.argv[1]).readline())[sys.argv[2]])' "$d/standin.json" "$1"; }
    sj ca_pem >"$d/ca.pem"
    http_port="$(free_port)"
    imap_port="$(free_port)"
    cat >"$d/icloud-bridge.toml" <<CONF
[server]
listen = "$HOST:$http_port"
imap_listen = "$HOST:$imap_port"
data_dir = "data"
certs_dir = "certs"

[[account]]
name = "alice"
apple_id = "$(sj apple_id)"

[upstream]
caldav = "$(sj caldav)"
carddav = "$(sj carddav)"
imap = "$(sj imap)"
smtp = "$(sj smtp)"
ca_file = "ca.pem"
CONF
    sj password | "$BIN" --config "$d/icloud-bridge.toml" reconnect --password-stdin \
      >"$d/reconnect.log" 2>&1 || true
    pass="$("$BIN" --config "$d/icloud-bridge.toml" client add thunderbird 2>"$d/client-add.log" || true)"
    RUST_LOG="${RUST_LOG:-info}" spawn bridge "$d/bridge.log" "$BIN" --config "$d/icloud-bridge.toml" serve
    br="$SPAWN_PID"
    if [ -n "$pass" ] && wait_http "$br" "http://$HOST:$http_port/healthz"; then
      args=(--url "http://$HOST:$http_port/" --user thunderbird --password "$pass"
        --imap "$HOST:$imap_port" --control "$(sj control)")
      [ -n "$SHOTS" ] && args+=(--refused-shot "$SHOTS")
      tb_run refused "${args[@]}"
    else
      FAILED=$((FAILED + 1))
      echo "FAIL  thunderbird: refused (the bridge did not start)"
      show_log "$d/reconnect.log" 10 2>&1
      show_log "$d/bridge.log" 20 2>&1
    fi
    stop_pid "$br"
    stop_pid "$si"
    ;;
  esac
done

stop_all
[ "$FAILED" -eq 0 ]
