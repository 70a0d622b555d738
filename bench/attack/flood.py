#!/usr/bin/env python3
"""Hostile-device scenario (issue 11, findings 5 and 6): floods from one address.

1. Idle connections: 127.0.0.2 opens 1100 HTTP connections (then 300 IMAP, 300 SMTP) and
   sends nothing; how many the bridge holds and refuses, and how a victim device on
   127.0.0.1 fares meanwhile (requests OK, latency). Also how long a silent connection and
   a slowloris (one header byte a second) are kept open (header deadline, default 30 s).
2. Wrong passwords: 300 connections from 127.0.0.2 send wrong passwords as fast as they
   are answered; the attempts per second the attacker achieves, and how long a new
   device's first login (a login made for this run with `client add`) and a remembered
   login take on 127.0.0.1 meanwhile.

Usage (from bench/attack.sh): python3 flood.py URL USER PASSWORD PID IMAP SMTP
Prints markdown rows `| scenario | measure | value |`; progress on stderr.
"""

import base64
import http.client
import os
import resource
import select
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

URL, USER, PASS, PID, IMAP, SMTP = sys.argv[1:7]
_u = urllib.parse.urlsplit(URL)
HOST, PORT = _u.hostname, _u.port
ATTACKER = "127.0.0.2"
VICTIM = "127.0.0.1"
PRINCIPAL = (
    '<?xml version="1.0" encoding="utf-8"?><d:propfind xmlns:d="DAV:"><d:prop>'
    "<d:current-user-principal/></d:prop></d:propfind>"
)


def log(msg):
    print(f"flood: {msg}", file=sys.stderr, flush=True)


def row(scenario, measure, value):
    print(f"| {scenario} | {measure} | {value} |", flush=True)


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, 65536) if hard != resource.RLIM_INFINITY else 65536
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def hostport(s):
    h, p = s.rsplit(":", 1)
    return h, int(p)


def connect(src, addr, timeout=5.0):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.bind((src, 0))
    s.connect(addr)
    return s


def auth(user, password):
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def http_request(src, method, path, headers=None, body=None, timeout=30.0):
    """One request on a new connection from `src`: (status, seconds) or (None, seconds)."""
    start = time.monotonic()
    try:
        c = http.client.HTTPConnection(HOST, PORT, timeout=timeout, source_address=(src, 0))
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        r.read()
        c.close()
        return r.status, time.monotonic() - start
    except (OSError, http.client.HTTPException):
        return None, time.monotonic() - start


def victim_round(n=20):
    """n PROPFINDs with the demo login and n /healthz from the victim, each given 5 s, until
    four in a row fail: (ok, attempted, latencies)."""
    ok, tried, lat, failing = 0, 0, [], 0
    h = {"Authorization": auth(USER, PASS), "Depth": "0", "Content-Type": "application/xml"}
    for _ in range(n):
        for method, path, body, want in (("PROPFIND", "/", PRINCIPAL, 207), ("GET", "/healthz", None, 200)):
            st, t = http_request(VICTIM, method, path, h if body else None, body, timeout=5)
            tried += 1
            ok += st == want
            failing = 0 if st == want else failing + 1
            lat.append(t)
        if failing >= 4:
            break
    return ok, tried, lat


def ms(t):
    return f"{t * 1000:.0f} ms"


def classify(socks, accepted_prefix, wait=1.5):
    """Split freshly opened sockets into (held, refused): refused ones were closed or sent
    something other than `accepted_prefix` (b"" for HTTP: any answer is a refusal)."""
    time.sleep(wait)
    held, refused = [], 0
    p = select.poll()
    by_fd = {}
    for s in socks:
        p.register(s.fileno(), select.POLLIN)
        by_fd[s.fileno()] = s
    ready = {fd for fd, _ in p.poll(0)}
    for fd, s in by_fd.items():
        if fd not in ready:
            held.append(s)
            continue
        try:
            s.settimeout(0.5)
            data = s.recv(256)
        except OSError:
            data = b""
        if accepted_prefix and data.startswith(accepted_prefix):
            held.append(s)
        else:
            refused += 1
            s.close()
    return held, refused


def open_many(n, addr):
    socks, failed = [], 0
    for _ in range(n):
        try:
            socks.append(connect(ATTACKER, addr))
        except OSError:
            failed += 1
    return socks, failed


def closed_after(trickle, limit=45.0):
    """Seconds until the bridge closes a connection that sends `trickle` one byte a second
    (nothing if empty); None if still open after `limit`."""
    s = connect(ATTACKER, (HOST, PORT))
    start = time.monotonic()
    i = 0
    while time.monotonic() - start < limit:
        r, _, _ = select.select([s], [], [], 1.0)
        if r:
            try:
                if not s.recv(4096):
                    return time.monotonic() - start
            except OSError:
                return time.monotonic() - start
        if trickle:
            try:
                s.send(trickle[i % len(trickle) : i % len(trickle) + 1])
            except OSError:
                return time.monotonic() - start
            i += 1
    s.close()
    return None


def idle_floods():
    deadlines = {}

    def measure(name, trickle):
        deadlines[name] = closed_after(trickle)

    bg = [
        threading.Thread(target=measure, args=("silent connection", b""), daemon=True),
        threading.Thread(
            target=measure,
            args=("slowloris (1 header byte/s)", b"GET / HTTP/1.1\r\nX-a: " + b"a" * 200),
            daemon=True,
        ),
    ]
    for t in bg:
        t.start()

    scen = "idle HTTP flood, 1100 conns from one address"
    log(scen)
    _, _, base_lat = victim_round(10)
    socks, failed = open_many(1100, (HOST, PORT))
    held, refused = classify(socks, b"")
    row(scen, "held / refused at once / connect failed", f"{len(held)} / {refused} / {failed}")
    ok, tried, lat = victim_round(20)
    row(scen, "victim (127.0.0.1) requests OK", f"{ok}/{tried}")
    row(
        scen,
        "victim latency p50 / max (no flood: p50)",
        f"{ms(statistics.median(lat))} / {ms(max(lat))} ({ms(statistics.median(base_lat))})",
    )
    for s in held:
        s.close()
    time.sleep(0.5)

    for name, addr, greeting, cmd in [("IMAP", IMAP, b"* OK", b"a NOOP\r\n"), ("SMTP", SMTP, b"220", b"NOOP\r\n")]:
        if addr == "-":
            continue
        scen = f"idle {name} flood, 300 conns from one address"
        log(scen)
        a = hostport(addr)
        socks, failed = open_many(300, a)
        held, refused = classify(socks, greeting)
        row(scen, "held / refused at once / connect failed", f"{len(held)} / {refused} / {failed}")
        good, lat = 0, []
        for _ in range(10):
            start = time.monotonic()
            try:
                v = connect(VICTIM, a)
                data = v.recv(256)
                v.sendall(cmd)
                data2 = v.recv(256)
                good += data.startswith(greeting) and bool(data2)
                v.close()
            except OSError:
                pass
            lat.append(time.monotonic() - start)
        row(scen, "victim greeted and answered", f"{good}/10, p50 {ms(statistics.median(lat))}")
        for s in held:
            s.close()
        time.sleep(0.5)

    log("waiting for the deadline measurements (up to 45 s)")
    for t in bg:
        t.join()
    for name, took in deadlines.items():
        row("header deadline", f"{name} closed after", f"{took:.1f} s" if took else "still open at 45 s")


def make_login():
    """A fresh login on the running demo (new device); None if that is not possible."""
    try:
        exe = os.readlink(f"/proc/{PID}/exe")
        tmp = os.environ.get("TMPDIR", "/tmp")
        data = os.path.join(tmp, f"icloud-bridge-demo-{PID}")
        if not os.path.isdir(data):
            return None
        cfg = tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False)
        cfg.write(
            f'[server]\ndata_dir = "{data}"\n[[account]]\nname = "alice"\napple_id = "bench@icloud.com"\n'
        )
        cfg.close()
        name = f"bench-{int(time.time())}"
        out = subprocess.run(
            [exe, "--config", cfg.name, "client", "add", name, "--account", "alice"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        os.unlink(cfg.name)
        if out.returncode != 0:
            log(f"client add failed: {out.stderr.strip()}")
            return None
        return name, out.stdout.strip()
    except OSError as e:
        log(f"cannot make a login: {e}")
        return None


def wrong_password_flood(conns=300, seconds=15.0, victim_at=5.0):
    scen = f"wrong-password flood, {conns} conns from one address"
    log(scen)
    fresh = make_login()
    time.sleep(1.5)  # the bridge notices new logins within a second
    stop = threading.Event()
    lock = threading.Lock()
    counts = {"401": 0, "refused": 0, "other": 0}
    times = []
    socks = []

    def attacker(i):
        n = 0
        body = PRINCIPAL.encode()
        while not stop.is_set():
            try:
                s = connect(ATTACKER, (HOST, PORT), timeout=120)
            except OSError:
                with lock:
                    counts["refused"] += 1
                time.sleep(1)
                continue
            with lock:
                socks.append(s)
            try:
                while not stop.is_set():
                    n += 1
                    req = (
                        f"PROPFIND / HTTP/1.1\r\nHost: bridge\r\nAuthorization: {auth(USER, f'guess-{i}-{n}')}\r\n"
                        f"Depth: 0\r\nContent-Type: application/xml\r\nContent-Length: {len(body)}\r\n\r\n"
                    ).encode() + body
                    s.sendall(req)
                    resp = b""
                    while b"\r\n\r\n" not in resp:
                        chunk = s.recv(4096)
                        if not chunk:
                            raise OSError("closed")
                        resp += chunk
                    head, rest = resp.split(b"\r\n\r\n", 1)
                    length = 0
                    for line in head.split(b"\r\n")[1:]:
                        k, _, v = line.partition(b":")
                        if k.strip().lower() == b"content-length":
                            length = int(v.strip())
                    while len(rest) < length:
                        chunk = s.recv(4096)
                        if not chunk:
                            break
                        rest += chunk
                    status = head.split(b" ", 2)[1]
                    with lock:
                        if status == b"401":
                            counts["401"] += 1
                            times.append(time.monotonic())
                        elif status == b"503":
                            counts["refused"] += 1
                        else:
                            counts["other"] += 1
                    if status == b"503":
                        raise OSError("refused")
            except OSError:
                try:
                    s.close()
                except OSError:
                    pass
                if not stop.is_set():
                    time.sleep(1)

    threads = [threading.Thread(target=attacker, args=(i,), daemon=True) for i in range(conns)]
    start = time.monotonic()
    for t in threads:
        t.start()
    time.sleep(victim_at)
    h = {"Depth": "0", "Content-Type": "application/xml"}
    if fresh:
        st, first = http_request(VICTIM, "PROPFIND", "/", {**h, "Authorization": auth(*fresh)}, PRINCIPAL, timeout=120)
        row(scen, "victim's first login (new device, 127.0.0.1)", f"{ms(first)} ({st})")
    else:
        row(scen, "victim's first login (new device, 127.0.0.1)", "n/a (could not make a login)")
    st, rem = http_request(VICTIM, "PROPFIND", "/", {**h, "Authorization": auth(USER, PASS)}, PRINCIPAL)
    row(scen, "victim's remembered login", f"{ms(rem)} ({st})")
    remaining = seconds - (time.monotonic() - start)
    if remaining > 0:
        time.sleep(remaining)
    stop.set()
    elapsed = time.monotonic() - start
    with lock:
        n401 = counts["401"]
        late = [t for t in times if t - start >= victim_at]
        refused = counts["refused"]
    for s in list(socks):
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
    row(scen, "wrong passwords answered (401) per s, whole run", f"{n401 / elapsed:.1f}")
    row(
        scen,
        f"... after the first {victim_at:.0f} s",
        f"{len(late) / max(elapsed - victim_at, 0.001):.1f}",
    )
    row(scen, "attacker connections refused (503 or closed)", f"{refused}")


def main():
    raise_nofile()
    idle_floods()
    wrong_password_flood()


if __name__ == "__main__":
    main()
