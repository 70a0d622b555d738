# shellcheck shell=bash
# Helpers shared by tests/interop/run.sh and bench/dav.sh. Source it; do not execute it.
#
# Every process started with `spawn` is remembered and stopped by `stop_all`
# (TERM, then KILL after 5 s); callers install `trap stop_all EXIT`.
# Everything listens on 127.0.0.1 only, on ports the kernel hands out.

INTEROP_HOST="${INTEROP_HOST:-127.0.0.1}"
INTEROP_WAIT="${INTEROP_WAIT:-30}"   # seconds to wait for a server to answer
SPAWNED_PIDS=()
SPAWNED_NAMES=()

ilog() { echo "interop: $*" >&2; }
idie() { echo "interop: ERROR: $*" >&2; exit 1; }

# cargo_bridge PROFILE(release|debug): builds the bridge binary with cargo and prints its
# path (the target directory as cargo reports it, so CARGO_TARGET_DIR is honoured).
cargo_bridge() {
  cargo_built "$1" --bin icloud-bridge
}

# cargo_built PROFILE(release|debug) --bin NAME | --example NAME: builds that target with
# cargo and prints the path of its executable.
cargo_built() {
  local flag=() tdir sub=""
  [ "$1" = release ] && flag=(--release)
  [ "$2" = --example ] && sub="examples/"
  echo "interop: cargo build $2 $3${flag[*]:+ ${flag[*]}}" >&2
  cargo build "${flag[@]}" --quiet "$2" "$3" >&2 || return 1
  tdir="$(cargo metadata --format-version 1 --no-deps \
    | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')" || return 1
  echo "$tdir/$1/$sub$3"
}

# free_port -> a TCP port on $INTEROP_HOST that was free a moment ago.
free_port() {
  python3 - "$INTEROP_HOST" <<'PY'
import socket, sys
s = socket.socket()
s.bind((sys.argv[1], 0))
print(s.getsockname()[1])
s.close()
PY
}

# spawn NAME LOGFILE CMD... : start CMD in the background (stdin from /dev/null,
# stdout+stderr to LOGFILE); sets SPAWN_PID.
spawn() {
  local name="$1" logf="$2"; shift 2
  "$@" </dev/null >"$logf" 2>&1 &
  SPAWN_PID=$!
  SPAWNED_PIDS+=("$SPAWN_PID")
  SPAWNED_NAMES+=("$name")
}

# spawn_split NAME OUTFILE ERRFILE CMD... : like spawn, stdout and stderr apart.
spawn_split() {
  local name="$1" outf="$2" errf="$3"; shift 3
  "$@" </dev/null >"$outf" 2>"$errf" &
  SPAWN_PID=$!
  SPAWNED_PIDS+=("$SPAWN_PID")
  SPAWNED_NAMES+=("$name")
}

# stop_pid PID: TERM, wait up to 5 s, then KILL.
stop_pid() {
  local pid="$1" i
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 50); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
}

stop_all() {
  local i
  for ((i = ${#SPAWNED_PIDS[@]} - 1; i >= 0; i--)); do
    stop_pid "${SPAWNED_PIDS[$i]}"
  done
  SPAWNED_PIDS=()
  SPAWNED_NAMES=()
}

# wait_http PID URL [curl args...]: wait until URL answers with any HTTP status
# while PID lives. Returns non-zero on timeout or if PID exited.
wait_http() {
  local pid="$1" url="$2"; shift 2
  local i=0 max=$((INTEROP_WAIT * 10)) code
  while [ "$i" -lt "$max" ]; do
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$@" "$url" 2>/dev/null || true)
    if [ -n "$code" ] && [ "$code" != "000" ]; then return 0; fi
    kill -0 "$pid" 2>/dev/null || { ilog "process $pid exited while waiting for $url"; return 1; }
    sleep 0.1
    i=$((i + 1))
  done
  ilog "no answer at $url within ${INTEROP_WAIT}s"
  return 1
}

# wait_lines PID FILE N: wait until FILE holds N lines while PID lives.
wait_lines() {
  local pid="$1" f="$2" n="$3" i=0 max=$((INTEROP_WAIT * 10))
  while [ "$i" -lt "$max" ]; do
    if [ -f "$f" ] && [ "$(wc -l <"$f")" -ge "$n" ]; then return 0; fi
    kill -0 "$pid" 2>/dev/null || { ilog "process $pid exited before printing $n lines"; return 1; }
    sleep 0.1
    i=$((i + 1))
  done
  ilog "process $pid printed fewer than $n lines within ${INTEROP_WAIT}s"
  return 1
}

# field FILE KEY -> value of the line "KEY: value"
field() {
  sed -n "s/^$2: //p" "$1" | head -n1
}

# start_radicale DIR PORT USER PASS: start Radicale (htpasswd plain, owner_only)
# with the venv's radicale, wait for it and create USER's calendar/ and contacts/.
# Needs $VENV. Sets RADICALE_PID.
start_radicale() {
  local dir="$1" port="$2" user="$3" pass="$4"
  mkdir -p "$dir/collections"
  printf '%s:%s\n' "$user" "$pass" >"$dir/users"
  cat >"$dir/config" <<CONF
[server]
hosts = $INTEROP_HOST:$port
max_connections = 64

[auth]
type = htpasswd
htpasswd_filename = $dir/users
htpasswd_encryption = plain
delay = 0

[rights]
type = owner_only

[storage]
filesystem_folder = $dir/collections

[web]
type = none

[logging]
level = warning
mask_passwords = True
CONF
  spawn radicale "$dir/radicale.log" "$VENV/bin/radicale" -C "$dir/config"
  RADICALE_PID="$SPAWN_PID"
  wait_http "$RADICALE_PID" "http://$INTEROP_HOST:$port/.well-known/caldav" || return 1
  mkcollections "http://$INTEROP_HOST:$port/$user/" "$user" "$pass"
}

# mkcollections BASE USER PASS [CAL] [BOOK]: MKCALENDAR BASE/CAL/ and
# extended MKCOL BASE/BOOK/ (existing ones are accepted).
mkcollections() {
  local base="${1%/}/" user="$2" pass="$3" cal="${4:-calendar}" book="${5:-contacts}" code
  code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 -u "$user:$pass" -X MKCALENDAR \
    -H 'Content-Type: application/xml; charset=utf-8' --data-binary '<?xml version="1.0" encoding="utf-8"?>
<C:mkcalendar xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav"
  xmlns:I="http://apple.com/ns/ical/"><D:set><D:prop>
  <D:displayname>Test Calendar</D:displayname>
  <I:calendar-color>#FF2968FF</I:calendar-color>
  <C:supported-calendar-component-set><C:comp name="VEVENT"/><C:comp name="VTODO"/></C:supported-calendar-component-set>
</D:prop></D:set></C:mkcalendar>' "$base$cal/")
  case "$code" in 201|405|409) ;; *) ilog "MKCALENDAR $base$cal/ -> HTTP $code"; return 1;; esac
  code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 -u "$user:$pass" -X MKCOL \
    -H 'Content-Type: application/xml; charset=utf-8' --data-binary '<?xml version="1.0" encoding="utf-8"?>
<D:mkcol xmlns:D="DAV:" xmlns:CR="urn:ietf:params:xml:ns:carddav"><D:set><D:prop>
  <D:resourcetype><D:collection/><CR:addressbook/></D:resourcetype>
  <D:displayname>Test Contacts</D:displayname>
</D:prop></D:set></D:mkcol>' "$base$book/")
  case "$code" in 201|405|409) ;; *) ilog "MKCOL $base$book/ -> HTTP $code"; return 1;; esac
}

# show_log FILE [LINES]: print the tail of a log, indented, to stderr.
show_log() {
  local f="$1" n="${2:-25}"
  [ -s "$f" ] || return 0
  echo "  --- last $n lines of $f" >&2
  tail -n "$n" "$f" | sed 's/^/  | /' >&2
}
