#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# DAV benchmark: the bridge side by side with nginx and with the upstream itself.
#
#   bench/dav.sh            (from anywhere; root on Debian installs nginx and wrk if missing)
#
# Builds the release binary, starts the iCloud stand-in (`icloud-bridge standin`),
# seeds a 1,000-event calendar and a ~100 MB calendar (48k events of ~1.7 KB)
# straight into the stand-in, starts nginx as a reverse proxy that injects a fixed
# Authorization header, and hyper-proxy (examples/ref_proxy.rs: the bridge's own hyper server
# and pooled client doing the same, to show what that stack costs by itself), starts the
# bridge (kind = "icloud", the stand-in as upstream), then measures with wrk:
#   GET of one .ics, and PROPFIND Depth 1 of the 1,000-event and of a 500-event calendar,
#   each direct / through nginx / through hyper-proxy / through the bridge (as shipped, with
#   its cache) / through the bridge with the cache off: req/s, p50, p99; in three rounds: 50 connections with all
#   cores shared, 50 connections with wrk pinned to the last core and the servers to the
#   others, and one connection;
# and one calendar-query REPORT with calendar-data of the ~100 MB calendar through the
# bridge: MB/s (wall clock and per CPU-second of the bridge) and the bridge's RSS growth.
# Prints markdown tables to stdout (progress goes to stderr). Not part of CI.
#
# Env: BENCH_DIR (state, logs; default target/bench)  BENCH_SECS (per wrk run; 10)
#      BENCH_CONNS (50)  BENCH_THREADS (wrk threads; 2)  BENCH_SMALL (1000)  BENCH_HALF (500)
#      BENCH_BIG_COUNT (48000: ~100 MB of multistatus)  BENCH_BIG_SIZE (bytes per big event; 1700)
#      BENCH_BIN (use this bridge binary; default: cargo build --release)
#      BENCH_REF_PROXY (use this hyper-proxy; default: cargo build --release --example ref_proxy)
#      NGINX_WORKERS (auto)  BENCH_SKIP_BIG=1 (skip the 100 MB part)
#      BENCH_MAX_CONCURRENT (sets [upstream] max_concurrent in the bridge config)
#      BENCH_ROUNDS ("shared pinned one")
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
cd "$ROOT"
# shellcheck source=../tests/interop/lib.sh
. "$ROOT/tests/interop/lib.sh"

BENCH_DIR="${BENCH_DIR:-target/bench}"
mkdir -p "$BENCH_DIR"
BENCH_DIR="$(cd "$BENCH_DIR" && pwd)"
SECS="${BENCH_SECS:-10}"
CONNS="${BENCH_CONNS:-50}"
THREADS="${BENCH_THREADS:-2}"
SMALL="${BENCH_SMALL:-1000}"
HALF="${BENCH_HALF:-500}"
BIG_COUNT="${BENCH_BIG_COUNT:-48000}"
BIG_SIZE="${BENCH_BIG_SIZE:-1700}"
HOST="$INTEROP_HOST"

trap stop_all EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

blog() { echo "bench: $*" >&2; }
bdie() { echo "bench: ERROR: $*" >&2; exit 1; }

# --- tools -------------------------------------------------------------------------
need=()
command -v wrk >/dev/null || need+=(wrk)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need+=(nginx)
command -v curl >/dev/null || need+=(curl)
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" = 0 ] || SUDO="sudo"
  blog "installing ${need[*]}"
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -q >&2
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    "${need[@]}" >&2
fi
NGINX="$(command -v nginx || echo /usr/sbin/nginx)"

BIN="${BENCH_BIN:-}"
[ -n "$BIN" ] || BIN="$(cargo_bridge release)" || bdie "cargo build failed"
[ -x "$BIN" ] || bdie "bridge binary $BIN missing"
REF_PROXY="${BENCH_REF_PROXY:-}"
[ -n "$REF_PROXY" ] || REF_PROXY="$(cargo_built release --example ref_proxy)" \
  || bdie "cargo build --example ref_proxy failed"
[ -x "$REF_PROXY" ] || bdie "reference proxy $REF_PROXY missing"

rm -rf "$BENCH_DIR"/run.*
RUN="$(mktemp -d "$BENCH_DIR/run.XXXXXX")"
chmod 755 "$RUN"
blog "logs in $RUN"

# --- the stand-in --------------------------------------------------------------------
spawn_split standin "$RUN/standin.out" "$RUN/standin.log" "$BIN" standin
SI_PID="$SPAWN_PID"
wait_lines "$SI_PID" "$RUN/standin.out" 1 || { show_log "$RUN/standin.log"; bdie "stand-in did not start"; }
read -r SI_CALDAV SI_CARDDAV SI_USER SI_PASS < <(python3 -c '
import json, sys
d = json.loads(open(sys.argv[1]).readline())
print(d["caldav"], d["carddav"], d["apple_id"], d["password"])' "$RUN/standin.out")
wait_http "$SI_PID" "$SI_CALDAV" || bdie "stand-in does not answer at $SI_CALDAV"
CAL_HOME="$(python3 "$HERE/seed.py" home --front "$SI_CALDAV" --user "$SI_USER" --password "$SI_PASS")"
blog "stand-in $SI_CALDAV, calendar home $CAL_HOME"
UP_HOSTPORT="${CAL_HOME#http://}"
UP_HOSTPORT="${UP_HOSTPORT%%/*}"
HOME_PATH="/${CAL_HOME#http://*/}"          # e.g. /1234567890/calendars/

blog "seeding $SMALL events into ${CAL_HOME}bench/"
python3 "$HERE/seed.py" fill --url "${CAL_HOME}bench/" --user "$SI_USER" --password "$SI_PASS" \
  --count "$SMALL" --prefix ev >&2
blog "seeding $HALF events into ${CAL_HOME}half/"
python3 "$HERE/seed.py" fill --url "${CAL_HOME}half/" --user "$SI_USER" --password "$SI_PASS" \
  --count "$HALF" --prefix ev >&2
if [ "${BENCH_SKIP_BIG:-0}" != 1 ]; then
  blog "seeding $BIG_COUNT events of ~$BIG_SIZE bytes into ${CAL_HOME}big/"
  python3 "$HERE/seed.py" fill --url "${CAL_HOME}big/" --user "$SI_USER" --password "$SI_PASS" \
    --count "$BIG_COUNT" --size "$BIG_SIZE" --prefix big --threads 8 >&2
fi

# --- nginx -----------------------------------------------------------------------------
NG_PORT="$(free_port)"
NG_DIR="$RUN/nginx"
mkdir -p "$NG_DIR"
chmod 755 "$NG_DIR"
TOKEN="$(printf '%s:%s' "$SI_USER" "$SI_PASS" | base64 -w0)"
ng_user=""
[ "$(id -u)" = 0 ] && ng_user="user nobody nogroup;"
cat >"$NG_DIR/nginx.conf" <<CONF
$ng_user
worker_processes ${NGINX_WORKERS:-auto};
daemon off;
pid $NG_DIR/nginx.pid;
error_log $NG_DIR/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $NG_DIR/client_body;
  proxy_temp_path $NG_DIR/proxy;
  fastcgi_temp_path $NG_DIR/fastcgi;
  uwsgi_temp_path $NG_DIR/uwsgi;
  scgi_temp_path $NG_DIR/scgi;
  client_max_body_size 100m;
  proxy_buffers 16 16k;
  proxy_max_temp_file_size 0;
  upstream dav_upstream {
    server $UP_HOSTPORT;
    keepalive 64;
  }
  server {
    listen $HOST:$NG_PORT;
    location / {
      proxy_pass http://dav_upstream;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Authorization "Basic $TOKEN";
      proxy_set_header Host $UP_HOSTPORT;
    }
  }
}
CONF
chmod 600 "$NG_DIR/nginx.conf"
"$NGINX" -t -q -p "$NG_DIR" -c "$NG_DIR/nginx.conf" 2>"$NG_DIR/test.log" \
  || bdie "nginx config test failed: $(cat "$NG_DIR/test.log")"
spawn nginx "$NG_DIR/nginx.log" "$NGINX" -p "$NG_DIR" -c "$NG_DIR/nginx.conf"
NG_PID="$SPAWN_PID"
wait_http "$NG_PID" "http://$HOST:$NG_PORT/" || bdie "nginx did not start"

# --- hyper-proxy: the bridge's HTTP stack alone (examples/ref_proxy.rs) --------------------
RP_PORT="$(free_port)"
spawn hyper-proxy "$RUN/hyper-proxy.log" \
  env REF_PROXY_AUTH="Basic $TOKEN" "$REF_PROXY" "$HOST:$RP_PORT" "http://$UP_HOSTPORT"
RP_PID="$SPAWN_PID"
wait_http "$RP_PID" "http://$HOST:$RP_PORT$HOME_PATH" || { show_log "$RUN/hyper-proxy.log"; bdie "hyper-proxy did not start"; }

# --- the bridge (twice: with its cache, as shipped, and with the cache off) -----------------
# start_bridge NAME CACHE_MAX_BYTES -> sets BR_PORT_<NAME>, BR_PID_<NAME>, BR_AUTH_<NAME>
start_bridge() {
  local name="$1" max_bytes="$2" dir port cfg pass
  dir="$RUN/bridge-$name"
  mkdir -p "$dir"
  port="$(free_port)"
  cfg="$dir/icloud-bridge.toml"
  printf '%s\n' "$SI_PASS" >"$dir/app-password"
  chmod 600 "$dir/app-password"
  {
    cat <<CONF
[server]
listen = "$HOST:$port"
data_dir = "data"

[[account]]
name = "alice"
apple_id = "$SI_USER"
password_file = "app-password"

[cache]
max_bytes = $max_bytes

[upstream]
kind = "icloud"
caldav = "$SI_CALDAV"
carddav = "$SI_CARDDAV"
CONF
    [ -n "${BENCH_MAX_CONCURRENT:-}" ] && echo "max_concurrent = $BENCH_MAX_CONCURRENT"
    true
  } >"$cfg"
  pass="$("$BIN" --config "$cfg" client add bench 2>"$dir/client-add.log")" \
    || { show_log "$dir/client-add.log"; bdie "client add failed"; }
  spawn "bridge-$name" "$dir/bridge.log" "$BIN" --config "$cfg" serve
  wait_http "$SPAWN_PID" "http://$HOST:$port/healthz" || { show_log "$dir/bridge.log"; bdie "bridge did not start"; }
  printf -v "BR_PORT_$name" '%s' "$port"
  printf -v "BR_PID_$name" '%s' "$SPAWN_PID"
  printf -v "BR_AUTH_$name" '%s' "Basic $(printf '%s:%s' bench "$pass" | base64 -w0)"
}
start_bridge cached 67108864
start_bridge nocache 0
BR_PORT="$BR_PORT_cached"
BR_PID="$BR_PID_cached"
BR_AUTH="$BR_AUTH_cached"
SI_AUTH="Basic $TOKEN"

# --- targets -----------------------------------------------------------------------------
# name|base URL of the calendar home|Authorization header (empty: none)
TARGETS=(
  "direct|$CAL_HOME|$SI_AUTH"
  "nginx|http://$HOST:$NG_PORT$HOME_PATH|"
  "hyper-proxy|http://$HOST:$RP_PORT$HOME_PATH|"
  "bridge|http://$HOST:$BR_PORT_cached/dav/alice/calendars/|$BR_AUTH_cached"
  "bridge-nocache|http://$HOST:$BR_PORT_nocache/dav/alice/calendars/|$BR_AUTH_nocache"
)
PROPFIND_BODY='<?xml version="1.0" encoding="utf-8"?><d:propfind xmlns:d="DAV:"><d:prop><d:getetag/><d:getcontenttype/><d:resourcetype/></d:prop></d:propfind>'
LUA="$RUN/propfind.lua"
cat >"$LUA" <<LUA
wrk.method = "PROPFIND"
wrk.body = '$PROPFIND_BODY'
wrk.headers["Depth"] = "1"
wrk.headers["Content-Type"] = "application/xml; charset=utf-8"
LUA

auth_args() {  # auth_args HEADER -> curl/wrk -H arguments, one per line
  [ -n "$1" ] && printf '%s\n' "-H" "Authorization: $1"
  true
}

# precheck: the three paths give the same status and member count
for t in "${TARGETS[@]}"; do
  IFS='|' read -r name base auth <<<"$t"
  mapfile -t H < <(auth_args "$auth")
  code=$(curl -s -o "$RUN/get-$name.ics" -w '%{http_code}' --max-time 10 "${H[@]}" \
    "${base}bench/ev-000000.ics")
  [ "$code" = 200 ] || bdie "pre-check GET ${base}bench/ev-000000.ics ($name) -> $code"
  code=$(curl -s -o "$RUN/propfind-$name.xml" -w '%{http_code}' --max-time 30 "${H[@]}" \
    -X PROPFIND -H 'Depth: 1' -H 'Content-Type: application/xml; charset=utf-8' \
    --data-binary "$PROPFIND_BODY" "${base}bench/")
  [ "$code" = 207 ] || bdie "pre-check PROPFIND ${base}bench/ ($name) -> $code"
  n=$(grep -o '<[A-Za-z0-9]*:\{0,1\}response[ >]' "$RUN/propfind-$name.xml" | wc -l)
  blog "pre-check $name: GET 200 ($(wc -c <"$RUN/get-$name.ics") B), PROPFIND 207 with $n responses ($(wc -c <"$RUN/propfind-$name.xml") B)"
  [ "$n" -ge "$SMALL" ] || bdie "PROPFIND through $name listed $n responses, expected > $SMALL"
done

ms() {  # wrk latency (12.3us / 4.5ms / 1.2s) -> ms
  case "$1" in
    *us) awk -v v="${1%us}" 'BEGIN {printf "%.3f", v / 1000}' ;;
    *ms) awk -v v="${1%ms}" 'BEGIN {printf "%.3f", v}' ;;
    *s) awk -v v="${1%s}" 'BEGIN {printf "%.1f", v * 1000}' ;;
    *) echo "$1" ;;
  esac
}

declare -A RPS P50 P99 BAD CPU REQS
cpu_of() { awk '{print $14 + $15}' "/proc/$1/stat"; }
WRK_PREFIX=()
run_wrk() {  # run_wrk KEY CONNS THREADS URL AUTH [lua]
  local key="$1" conns="$2" threads="$3" url="$4" auth="$5" lua="${6:-}" f H=() S=()
  f="$RUN/wrk-${key//\//-}.txt"
  mapfile -t H < <(auth_args "$auth")
  [ -n "$lua" ] && S=(-s "$lua")
  blog "wrk $key ($conns connections): $url"
  "${WRK_PREFIX[@]}" wrk -t "$threads" -c "$conns" -d "${SECS}s" --timeout 10s --latency "${S[@]}" \
    "${H[@]}" "$url" >"$f" 2>&1 || { cat "$f" >&2; bdie "wrk failed"; }
  RPS[$key]=$(awk '/^Requests\/sec/ {printf "%.0f", $2}' "$f")
  REQS[$key]=$(awk '/requests in/ {print $1}' "$f")
  P50[$key]=$(ms "$(awk '$1 == "50%" {print $2}' "$f")")
  P99[$key]=$(ms "$(awk '$1 == "99%" {print $2}' "$f")")
  BAD[$key]=$(awk '/Non-2xx/ {n += $NF} /Socket errors/ {gsub(",", ""); n += $4 + $6 + $8 + $10} END {print n + 0}' "$f")
}

# Rounds: "shared" lets every process use every core (wrk competes with the servers, so a
# server that needs less client work per second is favoured); "pinned" puts the servers under
# test (stand-in, nginx, bridges) on all cores but the last and wrk on the last, so each
# path gets the same CPU and the load generator takes none of it; "one" is one connection
# (latency without queueing). BENCH_ROUNDS picks them.
ROUNDS="${BENCH_ROUNDS:-shared pinned one}"
NCPU="$(nproc)"
if [ "$NCPU" -lt 2 ]; then ROUNDS="${ROUNDS//pinned/}"; fi
SERVER_PIDS=("$SI_PID" "$NG_PID" "$RP_PID" "$BR_PID_cached" "$BR_PID_nocache")
pin_servers() {  # pin_servers CPULIST: every thread of every server process
  local pid
  for pid in "${SERVER_PIDS[@]}" $(pgrep -P "$NG_PID" || true); do
    taskset -a -p -c "$1" "$pid" >/dev/null
  done
}

# warm-up (connection pools, the bridge's login cache)
for t in "${TARGETS[@]}"; do
  IFS='|' read -r name base auth <<<"$t"
  mapfile -t H < <(auth_args "$auth")
  wrk -t 1 -c 8 -d 2s "${H[@]}" "${base}bench/ev-000000.ics" >/dev/null 2>&1 || true
done

for round in $ROUNDS; do
  conns="$CONNS" threads="$THREADS"
  case "$round" in
    shared) pin_servers "0-$((NCPU - 1))"; WRK_PREFIX=() ;;
    pinned) pin_servers "0-$((NCPU - 2))"; WRK_PREFIX=(taskset -c "$((NCPU - 1))"); threads=1 ;;
    one) pin_servers "0-$((NCPU - 1))"; WRK_PREFIX=(); conns=1; threads=1 ;;
    *) bdie "unknown round $round (shared, pinned, one)" ;;
  esac
  for t in "${TARGETS[@]}"; do
    IFS='|' read -r name base auth <<<"$t"
    run_wrk "$round/get/$name" "$conns" "$threads" "${base}bench/ev-000000.ics" "$auth"
  done
  for cal in bench half; do
    test=propfind; [ "$cal" = half ] && test=propfind-half
    for t in "${TARGETS[@]}"; do
      IFS='|' read -r name base auth <<<"$t"
      c0=$(cpu_of "$BR_PID_nocache")
      run_wrk "$round/$test/$name" "$conns" "$threads" "${base}$cal/" "$auth" "$LUA"
      CPU[$round/$test/$name]=$(( $(cpu_of "$BR_PID_nocache") - c0 ))
    done
  done
done
pin_servers "0-$((NCPU - 1))"

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
added() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%+.3f", a - b }'; }

for round in $ROUNDS; do
  echo
  case "$round" in
    shared) echo "## DAV throughput, cores shared ($CONNS connections, $THREADS wrk threads, ${SECS} s per run, $NCPU cores shared by wrk and the servers)" ;;
    pinned) echo "## DAV throughput, load generator on its own core ($CONNS connections, wrk on CPU $((NCPU - 1)), the servers on CPU 0-$((NCPU - 2)), ${SECS} s per run)" ;;
    one) echo "## DAV latency, one connection (one request at a time, ${SECS} s per run)" ;;
  esac
  echo
  echo "bridge: as shipped (cache on, fresh_secs 30: repeated requests are cache hits);"
  echo "bridge-nocache: [cache] max_bytes = 0, every request proxied and rewritten."
  echo "hyper-proxy: examples/ref_proxy.rs, the bridge's hyper server and pooled client with a fixed"
  echo "Authorization and nothing else (no login check, no rewriting): the floor of the bridge's stack."
  echo
  echo "| request | path | req/s | p50 ms | p99 ms | non-2xx/errors | vs nginx req/s | vs hyper-proxy req/s | p50 added over direct |"
  echo "|---|---|---:|---:|---:|---:|---:|---:|---:|"
  for test in get propfind propfind-half; do
    label="GET one .ics"
    [ "$test" = propfind ] && label="PROPFIND Depth 1, $SMALL events"
    [ "$test" = propfind-half ] && label="PROPFIND Depth 1, $HALF events"
    for name in direct nginx hyper-proxy bridge bridge-nocache; do
      k="$round/$test/$name"
      echo "| $label | $name | ${RPS[$k]} | ${P50[$k]} | ${P99[$k]} | ${BAD[$k]} | $(ratio "${RPS[$k]}" "${RPS[$round/$test/nginx]}") | $(ratio "${RPS[$k]}" "${RPS[$round/$test/hyper-proxy]}") | $(added "${P50[$k]}" "${P50[$round/$test/direct]}") |"
    done
  done
done

# Rewriting cost of the element-dense listings: upstream bytes the cache-less bridge took in
# per CPU-second it used (HTTP both ways included), from the runs above.
echo
echo "## Rewriting element-dense listings (bridge-nocache, PROPFIND Depth 1 answers of $(wc -c <"$RUN/propfind-direct.xml") B upstream for $SMALL events)"
echo
echo "| round | listing | requests | bridge CPU s | upstream MB per bridge CPU-second |"
echo "|---|---|---:|---:|---:|"
hz=$(getconf CLK_TCK)
up_half=$(curl -s -H "Authorization: $SI_AUTH" -X PROPFIND -H 'Depth: 1' \
  -H 'Content-Type: application/xml; charset=utf-8' --data-binary "$PROPFIND_BODY" "${CAL_HOME}half/" | wc -c)
for round in $ROUNDS; do
  for test in propfind propfind-half; do
    k="$round/$test/bridge-nocache"
    size=$(wc -c <"$RUN/propfind-direct.xml"); n=$SMALL
    [ "$test" = propfind-half ] && size=$up_half && n=$HALF
    awk -v r="$round" -v n="$n" -v q="${REQS[$k]}" -v t="${CPU[$k]}" -v hz="$hz" -v sz="$size" \
      'BEGIN { s = t / hz; printf "| %s | %d events | %d | %.2f | %s |\n", r, n, q, s, (s > 0 ? sprintf("%.0f", q * sz / 1e6 / s) : "n/a") }'
  done
done

# --- the ~100 MB multistatus -------------------------------------------------------------
if [ "${BENCH_SKIP_BIG:-0}" != 1 ]; then
  REPORT_BODY="$RUN/report.xml"
  cat >"$REPORT_BODY" <<'XML'
<?xml version="1.0" encoding="utf-8"?>
<c:calendar-query xmlns:d="DAV:" xmlns:c="urn:ietf:params:xml:ns:caldav">
  <d:prop><d:getetag/><c:calendar-data/></d:prop>
  <c:filter><c:comp-filter name="VCALENDAR"><c:comp-filter name="VEVENT"/></c:comp-filter></c:filter>
</c:calendar-query>
XML
  kb() { awk -v k="$(sed -n "s/^$1:[[:space:]]*\([0-9]*\) kB/\1/p" "/proc/$BR_PID/status")" 'BEGIN {print k + 0}'; }
  cpu_ticks() { awk '{print $14 + $15}' "/proc/$BR_PID/stat"; }
  big_report() {  # big_report NAME URL AUTH -> "bytes seconds"
    local H=()
    mapfile -t H < <(auth_args "$3")
    curl -sS -o /dev/null -w '%{http_code} %{size_download} %{time_total}\n' --max-time 600 \
      "${H[@]}" -X REPORT -H 'Depth: 1' -H 'Content-Type: application/xml; charset=utf-8' \
      --data-binary "@$REPORT_BODY" "$2"
  }
  blog "REPORT calendar-query of ${CAL_HOME}big/ direct"
  read -r d_code d_bytes d_secs < <(big_report direct "${CAL_HOME}big/" "$SI_AUTH")
  [ "$d_code" = 207 ] || bdie "direct REPORT -> $d_code"

  rss_before=$(kb VmRSS)
  hwm_before=$(kb VmHWM)
  # reset the peak-RSS counter so VmHWM afterwards is the peak of this request alone
  echo 5 >"/proc/$BR_PID/clear_refs" 2>/dev/null || true
  hwm_reset=$(kb VmHWM)
  ticks_before=$(cpu_ticks)
  peak_file="$RUN/rss-samples.txt"
  : >"$peak_file"
  ( while kill -0 "$BR_PID" 2>/dev/null; do kb VmRSS >>"$peak_file"; sleep 0.02; done ) &
  SAMPLER=$!
  blog "REPORT calendar-query of the big calendar through the bridge"
  read -r b_code b_bytes b_secs < <(big_report bridge "http://$HOST:$BR_PORT/dav/alice/calendars/big/" "$BR_AUTH")
  ticks_after=$(cpu_ticks)
  kill "$SAMPLER" 2>/dev/null || true
  wait "$SAMPLER" 2>/dev/null || true
  [ "$b_code" = 207 ] || bdie "bridge REPORT -> $b_code"
  hwm_after=$(kb VmHWM)
  rss_after=$(kb VmRSS)
  rss_peak_sampled=$(sort -n "$peak_file" | tail -n1)
  hz=$(getconf CLK_TCK)
  cpu_s=$(awk -v a="$ticks_after" -v b="$ticks_before" -v hz="$hz" 'BEGIN {printf "%.2f", (a - b) / hz}')
  mbs() { awk -v b="$1" -v s="$2" 'BEGIN { if (s > 0) printf "%.0f", b / 1048576 / s; else print "n/a" }'; }
  mb() { awk -v k="$1" 'BEGIN {printf "%.1f", k / 1024}'; }
  # growth: peak during the request (VmHWM after a reset, or the sampled peak) over RSS before
  peak=$hwm_after
  if [ "$hwm_reset" -gt "$rss_before" ] || [ "$hwm_after" -lt "$rss_peak_sampled" ]; then
    peak=$rss_peak_sampled   # clear_refs not supported: fall back to sampling
  fi
  growth=$((peak - rss_before))
  [ "$growth" -lt 0 ] && growth=0

  echo
  echo "## Streaming a ~100 MB multistatus (REPORT calendar-query with calendar-data, $BIG_COUNT events)"
  echo
  echo "| path | bytes | seconds | MB/s wall | bridge CPU s | MB per bridge CPU-second |"
  echo "|---|---:|---:|---:|---:|---:|"
  echo "| direct | $d_bytes | $d_secs | $(mbs "$d_bytes" "$d_secs") | | |"
  echo "| bridge | $b_bytes | $b_secs | $(mbs "$b_bytes" "$b_secs") | $cpu_s | $(mbs "$b_bytes" "$cpu_s") |"
  echo
  echo "| bridge RSS | MB |"
  echo "|---|---:|"
  echo "| VmRSS before | $(mb "$rss_before") |"
  echo "| VmHWM before (whole run so far) | $(mb "$hwm_before") |"
  echo "| peak during the request (VmHWM after reset; sampled VmRSS peak $(mb "$rss_peak_sampled")) | $(mb "$peak") |"
  echo "| VmRSS after | $(mb "$rss_after") |"
  echo "| **growth while streaming** | **$(mb "$growth")** |"
fi

echo
echo "Command: bench/dav.sh (BENCH_SECS=$SECS BENCH_CONNS=$CONNS BENCH_SMALL=$SMALL BENCH_HALF=$HALF BENCH_BIG_COUNT=$BIG_COUNT; nginx workers ${NGINX_WORKERS:-auto}, keep-alive to upstream); raw output in $RUN"
