#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Mail benchmark: IMAP directly against Dovecot and through the bridge, side by side.
#
#   bench/mail.sh          (needs mbsync and dovecot: apt-get install isync dovecot-imapd)
#
# Generates BENCH_MAIL_N (1000) messages of mixed sizes (text, 2 KB attachments, and every
# 100th with a ~5 MB attachment), serves them from a private Dovecot, starts the bridge with
# Dovecot as its IMAP upstream, then measures, each direct and through the bridge:
#   1. a full mbsync pull of every folder into an empty Maildir;
#   2. a FETCH of every message body (imaplib, `UID FETCH 1:* BODY.PEEK[]`);
# and the bridge's peak RSS while it relays them. Prints markdown tables; progress to stderr.
# Env: BENCH_DIR (target/bench-mail)  BENCH_BIN  BENCH_MAIL_N (1000)  BENCH_BIG_EVERY (100)
#      BENCH_BIG_SIZE (3932160 raw bytes: ~5 MB once base64-encoded)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
cd "$ROOT"
# shellcheck source=../tests/interop/lib.sh
. "$ROOT/tests/interop/lib.sh"
# shellcheck source=../tests/interop/mail-lib.sh
. "$ROOT/tests/interop/mail-lib.sh"

BENCH_DIR="${BENCH_DIR:-target/bench-mail}"
mkdir -p "$BENCH_DIR"
BENCH_DIR="$(cd "$BENCH_DIR" && pwd)"
N="${BENCH_MAIL_N:-1000}"
BIG_EVERY="${BENCH_BIG_EVERY:-100}"
BIG_SIZE="${BENCH_BIG_SIZE:-3932160}"
HOST="$INTEROP_HOST"
trap stop_all EXIT
blog() { echo "bench-mail: $*" >&2; }
bdie() { echo "bench-mail: ERROR: $*" >&2; exit 1; }
command -v mbsync >/dev/null || bdie "mbsync missing (apt-get install isync)"

BIN="${BENCH_BIN:-}"
[ -n "$BIN" ] || BIN="$(cargo_bridge release)" || bdie "cargo build failed"
rm -rf "$BENCH_DIR"/run.*
RUN="$(mktemp -d "$BENCH_DIR/run.XXXXXX")"
chmod 755 "$RUN"
blog "generating $N messages in $RUN/src"
python3 "$ROOT/tests/interop/gen-data.py" mail "$N" "$RUN/src" --big "$BIG_EVERY" --big-size "$BIG_SIZE" >/dev/null
D_PORT="$(free_port)"
start_dovecot "$RUN/dovecot" "$D_PORT" test testpass "$RUN/src" || bdie "dovecot did not start"

B_IMAP="$(free_port)"; B_HTTP="$(free_port)"
printf 'testpass\n' >"$RUN/upstream-password"
cat >"$RUN/icloud-bridge.toml" <<CONF
[server]
listen = "$HOST:$B_HTTP"
imap_listen = "$HOST:$B_IMAP"
data_dir = "data"
certs_dir = "certs"

[[account]]
name = "test"
apple_id = "test"
password_file = "upstream-password"

[upstream]
kind = "generic"
caldav = "http://$HOST:9/"
carddav = "http://$HOST:9/"
imap = "imap://$HOST:$D_PORT"
CONF
PASS="$("$BIN" --config "$RUN/icloud-bridge.toml" client add bench 2>/dev/null)"
spawn bridge "$RUN/bridge.log" "$BIN" --config "$RUN/icloud-bridge.toml" serve
BR_PID="$SPAWN_PID"
wait_http "$BR_PID" "http://$HOST:$B_HTTP/healthz" || bdie "bridge did not start"
sleep 1
rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$BR_PID/status"; }
RSS_IDLE="$(rss_kb)"
PEAK_FILE="$RUN/rss.txt"
: >"$PEAK_FILE"
( while kill -0 "$BR_PID" 2>/dev/null; do rss_kb >>"$PEAK_FILE"; sleep 0.05; done ) &
SAMPLER=$!

timed() {  # timed CMD... -> "seconds output"
  local t0 out
  t0=$(date +%s.%N)
  out="$("$@")"
  echo "$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN {printf "%.2f", b - a}') $out"
}
fetch_all() {  # fetch_all PORT USER PASS -> "<messages> <bytes>"
  python3 - "$HOST" "$1" "$2" "$3" <<'PY'
import imaplib, sys
host, port, user, pw = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
m = imaplib.IMAP4(host, port)
m.login(user, pw)
m.select("INBOX", readonly=True)
typ, data = m.uid("FETCH", "1:*", "(BODY.PEEK[])")
n = b = 0
for part in data:
    if isinstance(part, tuple):
        n += 1
        b += len(part[1])
m.logout()
print(n, b)
PY
}
blog "mbsync direct"
read -r MD_T MD_N MD_B < <(timed mbsync_pull "$HOST" "$D_PORT" test testpass "$RUN/mbsync-direct")
blog "mbsync through the bridge"
read -r MB_T MB_N MB_B < <(timed mbsync_pull "$HOST" "$B_IMAP" bench "$PASS" "$RUN/mbsync-bridge")
blog "FETCH of every body, direct"
read -r FD_T FD_N FD_B < <(timed fetch_all "$D_PORT" test testpass)
blog "FETCH of every body, through the bridge"
read -r FB_T FB_N FB_B < <(timed fetch_all "$B_IMAP" bench "$PASS")
kill "$SAMPLER" 2>/dev/null || true
PEAK="$(sort -n "$PEAK_FILE" | tail -n1)"
[ "$MD_N $MD_B" = "$MB_N $MB_B" ] || bdie "mbsync got different mail: direct $MD_N/$MD_B, bridge $MB_N/$MB_B"
[ "$FD_N $FD_B" = "$FB_N $FB_B" ] || bdie "FETCH got different mail: direct $FD_N/$FD_B, bridge $FB_N/$FB_B"

mbs() { awk -v b="$1" -v s="$2" 'BEGIN { if (s > 0) printf "%.1f", b / 1048576 / s; else print "n/a" }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a > 0) printf "%.2f", b / a; else print "n/a" }'; }
echo
echo "## Mail: $N messages ($(awk -v b="$MD_B" 'BEGIN {printf "%.0f", b / 1048576}') MB; every ${BIG_EVERY}th ~5 MB), Dovecot direct vs through the bridge"
echo
echo "| test | path | messages | MB | seconds | MB/s | bridge vs direct (throughput) |"
echo "|---|---|---:|---:|---:|---:|---:|"
echo "| mbsync full pull | direct | $MD_N | $(mbs "$MD_B" 1) | $MD_T | $(mbs "$MD_B" "$MD_T") | |"
echo "| mbsync full pull | bridge | $MB_N | $(mbs "$MB_B" 1) | $MB_T | $(mbs "$MB_B" "$MB_T") | $(ratio "$MB_T" "$MD_T")x |"
echo "| FETCH 1:* BODY.PEEK[] | direct | $FD_N | $(mbs "$FD_B" 1) | $FD_T | $(mbs "$FD_B" "$FD_T") | |"
echo "| FETCH 1:* BODY.PEEK[] | bridge | $FB_N | $(mbs "$FB_B" 1) | $FB_T | $(mbs "$FB_B" "$FB_T") | $(ratio "$FB_T" "$FD_T")x |"
echo
echo "| bridge VmRSS | MB |"
echo "|---|---:|"
echo "| idle | $(awk -v k="$RSS_IDLE" 'BEGIN {printf "%.1f", k / 1024}') |"
echo "| peak while relaying | $(awk -v k="$PEAK" 'BEGIN {printf "%.1f", k / 1024}') |"
echo
echo "Command: bench/mail.sh (BENCH_MAIL_N=$N BENCH_BIG_EVERY=$BIG_EVERY BENCH_BIG_SIZE=$BIG_SIZE); raw output in $RUN"
