#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Cache benchmark: what the bridge's cache saves a household, against the iCloud stand-in
# with 100 ms added to every upstream answer (iCloud is far away).
#
#   bench/cache.sh
#
# Starts the stand-in (`icloud-bridge standin --seed`, driven through its control port),
# seeds a 1,000-event calendar and 500 vCards, starts the bridge (defaults: cache on,
# fresh_secs 30), sets the stand-in's latency_ms, then:
#   1. a first vdirsyncer client syncs the calendar and the address book (discover + sync),
#      then a second client (another bridge login, empty local dirs) does the same: wall time
#      and upstream requests of each (target: second >= 10x faster, <= 5 % of the requests);
#      then the same with two DAVx5-pattern clients (PROPFIND listing, then multigets of 10
#      and of 25 objects, one request at a time), after the cache has gone stale; then two
#      python-caldav clients (objects_by_sync_token(load_objects=True): a sync-collection
#      REPORT, then one GET per object; the second starts when most of the first's fetches
#      are past fresh_secs, so the listing fresh from iCloud is what vouches for them);
#   2. 50 clients poll the calendar's ctag once a second for BENCH_POLL_SECS (60) seconds:
#      upstream requests per fresh_secs window (target <= 2);
#   3. the bridge's RSS idle (after start, and after the syncs) and its peak under the
#      polling load (target: idle <= 20 MB; loaded <= 64 MB + cache.max_bytes).
# Prints markdown tables to stdout; progress to stderr. Not part of CI. Cache-hit GET and
# PROPFIND against nginx are in bench/dav.sh (the "bridge" rows).
#
# Env: BENCH_DIR (target/bench-cache)  BENCH_BIN (bridge binary; default cargo build --release)
#      BENCH_EVENTS (1000)  BENCH_VCARDS (500)  BENCH_LATENCY_MS (100)  BENCH_FRESH (30)
#      BENCH_POLLERS (50)  BENCH_POLL_SECS (60)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
cd "$ROOT"
# shellcheck source=../tests/interop/lib.sh
. "$ROOT/tests/interop/lib.sh"

BENCH_DIR="${BENCH_DIR:-target/bench-cache}"
mkdir -p "$BENCH_DIR"
BENCH_DIR="$(cd "$BENCH_DIR" && pwd)"
EVENTS="${BENCH_EVENTS:-1000}"
VCARDS="${BENCH_VCARDS:-500}"
LATENCY="${BENCH_LATENCY_MS:-100}"
FRESH="${BENCH_FRESH:-30}"
POLLERS="${BENCH_POLLERS:-50}"
POLL_SECS="${BENCH_POLL_SECS:-60}"
HOST="$INTEROP_HOST"

trap stop_all EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
blog() { echo "bench-cache: $*" >&2; }
bdie() { echo "bench-cache: ERROR: $*" >&2; exit 1; }

# vdirsyncer and python-caldav in a throwaway venv (the interop one when it is there)
has_clients() { [ -x "$1/bin/vdirsyncer" ] && "$1/bin/python" -c 'import caldav' 2>/dev/null; }
VENV="$ROOT/target/interop/venv"
if ! has_clients "$VENV"; then
  VENV="$BENCH_DIR/venv"
  if ! has_clients "$VENV"; then
    blog "setting up $VENV (vdirsyncer==0.21.0, caldav==3.6.0)"
    python3 -m venv "$VENV" || bdie "python3 -m venv failed (Debian: apt-get install python3-venv)"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check vdirsyncer==0.21.0 caldav==3.6.0 >&2 \
      || bdie "pip install vdirsyncer caldav failed"
  fi
fi
PY="$VENV/bin/python"

BIN="${BENCH_BIN:-}"
[ -n "$BIN" ] || BIN="$(cargo_bridge release)" || bdie "cargo build failed"

rm -rf "$BENCH_DIR"/run.*
RUN="$(mktemp -d "$BENCH_DIR/run.XXXXXX")"
blog "logs in $RUN"

spawn_split standin "$RUN/standin.json" "$RUN/standin.log" "$BIN" standin --seed
SI_PID="$SPAWN_PID"
wait_lines "$SI_PID" "$RUN/standin.json" 1 || bdie "stand-in did not start"
si() { python3 -c 'import json,sys; print(json.loads(open(sys.argv[1]).readline())[sys.argv[2]])' "$RUN/standin.json" "$1"; }
CTL="$(si control)"; SI_USER="$(si apple_id)"; SI_PASS="$(si password)"
CAL_HOME="$(python3 "$HERE/seed.py" home --front "$(si caldav)" --user "$SI_USER" --password "$SI_PASS")"
CARD_HOME="$(python3 "$HERE/seed.py" cardhome --front "$(si carddav)" --user "$SI_USER" --password "$SI_PASS")"
blog "seeding $EVENTS events and $VCARDS vCards"
python3 "$HERE/seed.py" fill --url "${CAL_HOME}bench/" --user "$SI_USER" --password "$SI_PASS" \
  --count "$EVENTS" --prefix ev >&2
python3 "$HERE/seed.py" fill --vcard --url "${CARD_HOME}card/" --user "$SI_USER" \
  --password "$SI_PASS" --count "$VCARDS" --prefix vc >&2

BR_DIR="$RUN/bridge"
mkdir -p "$BR_DIR"
BR_PORT="$(free_port)"
BR_CFG="$BR_DIR/icloud-bridge.toml"
cat >"$BR_CFG" <<CONF
[server]
listen = "$HOST:$BR_PORT"
data_dir = "data"

[[account]]
name = "alice"
apple_id = "$SI_USER"

[cache]
fresh_secs = $FRESH

[upstream]
caldav = "$(si caldav)"
carddav = "$(si carddav)"
CONF
printf '%s\n' "$SI_PASS" | "$BIN" --config "$BR_CFG" reconnect --password-stdin >/dev/null 2>&1 \
  || bdie "storing the password failed"
P1="$("$BIN" --config "$BR_CFG" client add first 2>/dev/null)"
P2="$("$BIN" --config "$BR_CFG" client add second 2>/dev/null)"
P3="$("$BIN" --config "$BR_CFG" client add poller 2>/dev/null)"
P4="$("$BIN" --config "$BR_CFG" client add phone 2>/dev/null)"
P5="$("$BIN" --config "$BR_CFG" client add tablet 2>/dev/null)"
P6="$("$BIN" --config "$BR_CFG" client add script 2>/dev/null)"
P7="$("$BIN" --config "$BR_CFG" client add notebook 2>/dev/null)"
spawn bridge "$BR_DIR/bridge.log" "$BIN" --config "$BR_CFG" serve
BR_PID="$SPAWN_PID"
BR="http://$HOST:$BR_PORT/"
wait_http "$BR_PID" "${BR}healthz" || bdie "bridge did not start"
sleep 1
rss() { awk '/^VmRSS:/ {printf "%.1f", $2 / 1024}' "/proc/$BR_PID/status"; }
RSS_IDLE_START="$(rss)"

curl -fs -X POST "${CTL}switch?name=latency_ms&value=$LATENCY" >/dev/null
blog "first client (latency $LATENCY ms per upstream answer)"
read -r T1 U1 N1 < <("$PY" "$HERE/cache-clients.py" sync --bridge "$BR" --user first \
  --password "$P1" --control "$CTL" --work "$RUN/first")
blog "second client"
read -r T2 U2 N2 < <("$PY" "$HERE/cache-clients.py" sync --bridge "$BR" --user second \
  --password "$P2" --control "$CTL" --work "$RUN/second")
[ "$N1" = "$N2" ] || bdie "the clients got different item counts: $N1 vs $N2"
# The same with a fresh cache for the DAVx5-pattern clients: a write invalidates nothing
# here, so wait out fresh_secs instead and let the first one find everything stale.
blog "waiting $((FRESH + 1)) s for the cache to go stale"
sleep $((FRESH + 1))
blog "DAVx5-pattern clients (PROPFIND + multigets of 10, one request at a time)"
read -r T3 U3 N3 < <("$PY" "$HERE/cache-clients.py" davx5 --bridge "$BR" --user phone \
  --password "$P4" --control "$CTL")
read -r T4 U4 N4 < <("$PY" "$HERE/cache-clients.py" davx5 --bridge "$BR" --user tablet \
  --password "$P5" --control "$CTL" --batch 25)
[ "$N3" = "$N4" ] || bdie "the DAVx5-pattern clients got different item counts: $N3 vs $N4"
blog "python-caldav clients (objects_by_sync_token(load_objects=True): one GET per object)"
read -r T5 U5 N5 < <("$PY" "$HERE/cache-clients.py" caldav --bridge "$BR" --user script \
  --password "$P6" --control "$CTL")
read -r T6 U6 N6 < <("$PY" "$HERE/cache-clients.py" caldav --bridge "$BR" --user notebook \
  --password "$P7" --control "$CTL")
[ "$N5" = "$N6" ] && [ "$N5" = "$EVENTS" ] \
  || bdie "the python-caldav clients got $N5 and $N6 events, expected $EVENTS"
sleep 1
RSS_IDLE_FULL="$(rss)"

blog "$POLLERS clients polling the ctag every second for $POLL_SECS s"
read -r PREQ PERR PUP PPEAK < <("$PY" "$HERE/cache-clients.py" poll --bridge "$BR" --user poller \
  --password "$P3" --control "$CTL" --clients "$POLLERS" --secs "$POLL_SECS" --pid "$BR_PID")

f2() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.1f", a / b; else print "n/a" }'; }
pct() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.1f %%", 100 * a / b; else print "n/a" }'; }
windows=$(awk -v s="$POLL_SECS" -v f="$FRESH" 'BEGIN { w = s / f; if (w < 1) w = 1; printf "%.1f", w }')
per_window=$(awk -v u="$PUP" -v w="$windows" 'BEGIN { printf "%.1f", u / w }')

echo
echo "## Cache: two clients, one household ($EVENTS events + $VCARDS vCards, +$LATENCY ms per upstream answer, fresh_secs $FRESH)"
echo
echo "| client | vdirsyncer discover + sync, s | upstream requests | items |"
echo "|---|---:|---:|---:|"
echo "| first | $T1 | $U1 | $N1 |"
echo "| second | $T2 | $U2 | $N2 |"
echo "| **second vs first** | **$(f2 "$T1" "$T2")x faster** | **$(pct "$U2" "$U1")** | |"
echo
echo "| DAVx5-pattern client (one request at a time) | sync, s | upstream requests | items |"
echo "|---|---:|---:|---:|"
echo "| first (multigets of 10) | $T3 | $U3 | $N3 |"
echo "| second (multigets of 25: other groupings) | $T4 | $U4 | $N4 |"
echo "| **second vs first** | **$(f2 "$T3" "$T4")x faster** | **$(pct "$U4" "$U3")** | |"
echo
echo "| python-caldav client (calendar only: it has no CardDAV) | sync, s | upstream requests | events |"
echo "|---|---:|---:|---:|"
echo "| first | $T5 | $U5 | $N5 |"
echo "| second (after the first's fetches went past fresh_secs) | $T6 | $U6 | $N6 |"
echo "| **second vs first** | **$(f2 "$T5" "$T6")x faster** | **$(pct "$U6" "$U5")** | |"
echo
echo "## Cache: $POLLERS clients polling one calendar's ctag every second for $POLL_SECS s"
echo
echo "| client requests | errors | upstream requests | per fresh_secs window ($FRESH s) |"
echo "|---:|---:|---:|---:|"
echo "| $PREQ | $PERR | $PUP | $per_window |"
echo
echo "## Bridge memory (cache.max_bytes 64 MiB)"
echo
echo "| when | VmRSS MB |"
echo "|---|---:|"
echo "| idle after start | $RSS_IDLE_START |"
echo "| idle after the syncs (cache filled) | $RSS_IDLE_FULL |"
echo "| peak under the $POLLERS-client polling load | $(awk -v k="$PPEAK" 'BEGIN {printf "%.1f", k / 1024}') |"
echo
echo "Command: bench/cache.sh (BENCH_EVENTS=$EVENTS BENCH_VCARDS=$VCARDS BENCH_LATENCY_MS=$LATENCY BENCH_FRESH=$FRESH BENCH_POLLERS=$POLLERS BENCH_POLL_SECS=$POLL_SECS); raw output in $RUN"
