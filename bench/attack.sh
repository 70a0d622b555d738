#!/usr/bin/env bash
# Hostile-device benchmark (issue 11): what one attacking address on the LAN can do to the
# bridge, measured against a running `icloud-bridge demo` (bridge + stand-in in one process).
#
#   bench/attack.sh                  (from anywhere; needs python3 and curl)
#
# Starts `demo` on a free loopback port, then runs every scenario script bench/attack/*.py
# in turn as `python3 SCRIPT URL USER PASSWORD PID IMAP SMTP` (IMAP and SMTP: host:port of
# demo's mail front ends, "-" if absent). Each scenario attacks from 127.0.0.2.. (other
# loopback addresses, so the victim on 127.0.0.1 is "another device") and prints markdown
# table rows `| scenario | measure | value |` to stdout; progress goes to stderr.
#
# Env: BENCH_BIN (bridge binary; default: cargo build --release)
#      BENCH_ONLY (run only scenarios whose file name contains this)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
cd "$ROOT"

blog() { echo "attack: $*" >&2; }

BIN="${BENCH_BIN:-}"
if [ -z "$BIN" ]; then
  cargo build --release -q
  BIN="$ROOT/target/release/icloud-bridge"
fi

WORK="$(mktemp -d)"
DEMO_PID=""
cleanup() {
  [ -n "$DEMO_PID" ] && kill "$DEMO_PID" 2>/dev/null && wait "$DEMO_PID" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT

"$BIN" demo --listen 127.0.0.1:0 >"$WORK/demo.out" 2>"$WORK/demo.err" &
DEMO_PID=$!
for _ in $(seq 1 100); do
  [ "$(wc -l <"$WORK/demo.out")" -ge 3 ] && break
  sleep 0.1
done
URL="$(sed -n 's/^url: //p' "$WORK/demo.out")"
USER_="$(sed -n 's/^user: //p' "$WORK/demo.out")"
PASS="$(sed -n 's/^password: //p' "$WORK/demo.out")"
[ -n "$URL" ] || { cat "$WORK/demo.err" >&2; echo "attack: demo did not start" >&2; exit 1; }
# The bridge's mail front ends (the "demo mail" line; the stand-in logs its own imap=/smtp=).
IMAP="$(sed -n 's/.*demo mail.*imap=\([0-9.:]*\).*/\1/p' "$WORK/demo.err" | head -1)"
SMTP="$(sed -n 's/.*demo mail.*smtp=\([0-9.:]*\).*/\1/p' "$WORK/demo.err" | head -1)"
blog "demo at $URL (pid $DEMO_PID, imap ${IMAP:--}, smtp ${SMTP:--})"

echo "Hostile-device benchmark, $(date -u +%Y-%m-%d), $(nproc) cores, \`bench/attack.sh\`"
echo
echo "| scenario | measure | value |"
echo "|---|---|---:|"
for s in "$HERE"/attack/*.py; do
  [ -e "$s" ] || continue
  case "$(basename "$s")" in *"${BENCH_ONLY:-}"*) ;; *) continue ;; esac
  blog "scenario $(basename "$s")"
  python3 "$s" "$URL" "$USER_" "$PASS" "$DEMO_PID" "${IMAP:--}" "${SMTP:--}"
done
