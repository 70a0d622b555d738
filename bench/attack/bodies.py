#!/usr/bin/env python3
"""Hostile-device scenario (issue 11, finding 8): a burst of large request bodies.

200 concurrent PROPFINDs with 10 MB bodies (the default max_body_bytes), first all from one
address (127.0.0.2), then spread over 20 addresses (127.0.0.2-21, ten each). Each client
sends its head, then its body in 256 KiB pieces as fast as the bridge takes them, stopping
to read the answer as soon as one arrives (a refusal comes before the body). Reported: how
many were answered 207, refused with 503 (with Retry-After), or cut off; the demo process's
resident memory (VmRSS from /proc/PID/status) before, at its peak (sampled every 20 ms, and
VmHWM), and 10 s and 30 s after the burst.

Usage (from bench/attack.sh): python3 bodies.py URL USER PASSWORD PID IMAP SMTP
Prints markdown rows `| scenario | measure | value |`; progress on stderr.
"""

import base64
import resource
import select
import socket
import sys
import threading
import time
import urllib.parse

URL, USER, PASS, PID = sys.argv[1:5]
_u = urllib.parse.urlsplit(URL)
HOST, PORT = _u.hostname, _u.port
SIZE = 10 * 1024 * 1024
PIECE = 256 * 1024
PRINCIPAL = (
    b'<?xml version="1.0" encoding="utf-8"?><d:propfind xmlns:d="DAV:"><d:prop>'
    b"<d:current-user-principal/></d:prop></d:propfind>"
)
BODY = PRINCIPAL + b" " * (SIZE - len(PRINCIPAL))


def log(msg):
    print(f"bodies: {msg}", file=sys.stderr, flush=True)


def row(scenario, measure, value):
    print(f"| {scenario} | {measure} | {value} |", flush=True)


def status_kb(field):
    with open(f"/proc/{PID}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def mb(kb):
    return f"{kb / 1024:.0f} MB"


def one(src, results, lock):
    auth = base64.b64encode(f"{USER}:{PASS}".encode()).decode()
    head = (
        f"PROPFIND / HTTP/1.1\r\nHost: bridge\r\nAuthorization: Basic {auth}\r\nDepth: 0\r\n"
        f"Content-Type: application/xml\r\nContent-Length: {SIZE}\r\nConnection: close\r\n\r\n"
    ).encode()
    outcome = "cut off"
    retry_after = False
    try:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(120)
        s.bind((src, 0))
        s.connect((HOST, PORT))
        s.sendall(head)
        sent = 0
        answered = False
        while sent < SIZE:
            r, _, _ = select.select([s], [], [], 0)
            if r:
                answered = True
                break
            s.sendall(BODY[sent : sent + PIECE])
            sent += PIECE
        resp = b""
        while b"\r\n" not in resp:
            chunk = s.recv(4096)
            if not chunk:
                break
            resp += chunk
        if resp.startswith(b"HTTP/1.1 207"):
            outcome = "207"
        elif resp.startswith(b"HTTP/1.1 503"):
            outcome = "503" + (" before its body" if answered and sent == 0 else "")
            while b"\r\n\r\n" not in resp:
                chunk = s.recv(4096)
                if not chunk:
                    break
                resp += chunk
            retry_after = b"\r\nretry-after:" in resp.lower()
        elif resp:
            outcome = resp.split(b"\r\n", 1)[0].decode(errors="replace")
        s.close()
    except OSError:
        pass
    with lock:
        results[outcome] = results.get(outcome, 0) + 1
        if retry_after:
            results["with Retry-After"] = results.get("with Retry-After", 0) + 1


def burst(scen, addresses, n=200):
    log(scen)
    results, lock = {}, threading.Lock()
    peak = [status_kb("VmRSS")]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], status_kb("VmRSS"))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    before = status_kb("VmRSS")
    sampler.start()
    start = time.monotonic()
    threads = [
        threading.Thread(target=one, args=(addresses[i % len(addresses)], results, lock), daemon=True)
        for i in range(n)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    took = time.monotonic() - start
    time.sleep(0.2)
    done.set()
    sampler.join()
    after = {}
    waited = 0
    for at in (10, 30):
        time.sleep(at - waited)
        waited = at
        after[at] = status_kb("VmRSS")
    summary = ", ".join(f"{k}: {v}" for k, v in sorted(results.items()))
    row(scen, "answers", f"{summary} ({took:.1f} s)")
    row(
        scen,
        "RSS before / peak / +10 s / +30 s",
        f"{mb(before)} / {mb(peak[0])} / {mb(after[10])} / {mb(after[30])}",
    )
    row(scen, "VmHWM (process peak so far)", mb(status_kb("VmHWM")))


def main():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 4096 and hard >= 4096:
        resource.setrlimit(resource.RLIMIT_NOFILE, (4096, hard))
    burst("200 × 10 MB PROPFIND bodies, one address", ["127.0.0.2"])
    burst(
        "200 × 10 MB PROPFIND bodies, 20 addresses",
        [f"127.0.0.{i}" for i in range(2, 22)],
    )


if __name__ == "__main__":
    main()
