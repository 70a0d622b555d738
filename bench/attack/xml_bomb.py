#!/usr/bin/env python3
"""Hostile-device scenario (issue 11, finding 3): XML attribute bombs.

127.0.0.2, .3 and .4 send ~10 MB PROPFIND bodies that would take quadratic work (one element with
about a million attributes; many elements just under the per-element cap), several at once,
in a loop. Meanwhile a victim device on 127.0.0.1 does GET /healthz and an authenticated
PROPFIND Depth 1 of its calendars (through the bridge) in a loop. Reported: the victim's
p50/p99 without and during the attack, how long the bridge takes to refuse one bomb, and
what the attacker got back. The target: the victim's p99 under 50 ms during the attack.

Usage (from bench/attack.sh): python3 xml_bomb.py URL USER PASSWORD PID IMAP SMTP
Prints markdown rows `| scenario | measure | value |`; progress on stderr.
"""

import base64
import http.client
import statistics
import sys
import threading
import time
import urllib.parse

URL, USER, PASS = sys.argv[1:4]
_u = urllib.parse.urlsplit(URL)
HOST, PORT = _u.hostname, _u.port
ATTACKERS = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
VICTIM = "127.0.0.1"
SECS = 10
PARALLEL = 3
AUTH = "Basic " + base64.b64encode(f"{USER}:{PASS}".encode()).decode()
LIST = (
    '<?xml version="1.0"?><d:propfind xmlns:d="DAV:"><d:prop><d:getetag/>'
    "<d:displayname/></d:prop></d:propfind>"
)
SIZE = 10 * 1000 * 1000


def log(msg):
    print(f"xml_bomb: {msg}", file=sys.stderr, flush=True)


def row(scenario, measure, value):
    print(f"| {scenario} | {measure} | {value} |", flush=True)


def one_element():
    parts = ['<?xml version="1.0"?><d:propfind xmlns:d="DAV:"><d:prop']
    n, i = len(parts[0]), 0
    while n < SIZE:
        a = f' a{i}="x"'
        parts.append(a)
        n += len(a)
        i += 1
    parts.append("><d:getetag/></d:prop></d:propfind>")
    return "".join(parts).encode()


def many_elements():
    attrs = "".join(f' a{i}="x"' for i in range(250))
    el = f"<d:getetag{attrs}/>"
    head = '<?xml version="1.0"?><d:propfind xmlns:d="DAV:"><d:prop>'
    return (head + el * (SIZE // len(el)) + "</d:prop></d:propfind>").encode()


class Conn:
    """One keep-alive connection from `src`."""

    def __init__(self, src):
        self.src = src
        self.c = None

    def request(self, method, path, headers=None, body=None):
        for attempt in (0, 1):
            try:
                if self.c is None:
                    self.c = http.client.HTTPConnection(
                        HOST, PORT, timeout=30, source_address=(self.src, 0)
                    )
                self.c.request(method, path, body=body, headers=headers or {})
                r = self.c.getresponse()
                data = r.read()
                if r.getheader("Connection", "").lower() == "close":
                    self.c.close()
                    self.c = None
                return r.status, data
            except (OSError, http.client.HTTPException):
                if self.c is not None:
                    self.c.close()
                self.c = None
                if attempt:
                    return None, b""
        return None, b""


def victim(stop, lat, failures):
    c = Conn(VICTIM)
    h = {"Authorization": AUTH, "Depth": "1", "Content-Type": "application/xml"}
    while not stop.is_set():
        for method, path, hdrs, body, want in (
            ("GET", "/healthz", None, None, 200),
            ("PROPFIND", "/dav/alice/calendars/", h, LIST, 207),
        ):
            t = time.monotonic()
            st, _ = c.request(method, path, hdrs, body)
            lat.append(time.monotonic() - t)
            if st != want:
                failures.append(st)
        time.sleep(0.005)


def measure_victim(secs):
    stop, lat, failures = threading.Event(), [], []
    t = threading.Thread(target=victim, args=(stop, lat, failures))
    t.start()
    time.sleep(secs)
    stop.set()
    t.join()
    return lat, failures


def pct(lat, p):
    s = sorted(lat)
    return s[min(len(s) - 1, int(len(s) * p / 100))]


def ms(t):
    return f"{t * 1000:.1f} ms"


def attacker(src, bodies, stop, results):
    c = Conn(src)
    h = {"Authorization": AUTH, "Depth": "1", "Content-Type": "application/xml"}
    i = 0
    while not stop.is_set():
        body = bodies[i % len(bodies)]
        i += 1
        t = time.monotonic()
        st, _ = c.request("PROPFIND", "/dav/alice/calendars/home/", h, body)
        results.append((st, time.monotonic() - t))


def main():
    log("building the bombs")
    bodies = [one_element(), many_elements()]
    name = f"10 MB attribute bombs from {PARALLEL} addresses at once"
    log("victim alone")
    base, base_fail = measure_victim(3)
    stop, results = threading.Event(), []
    threads = [
        threading.Thread(target=attacker, args=(ATTACKERS[i % len(ATTACKERS)], bodies, stop, results))
        for i in range(PARALLEL)
    ]
    for t in threads:
        t.start()
    time.sleep(0.5)
    log(f"victim during the attack ({SECS} s)")
    during, during_fail = measure_victim(SECS)
    stop.set()
    for t in threads:
        t.join()
    refuse = [t for st, t in results if st == 400]
    statuses = {}
    for st, _ in results:
        statuses[st] = statuses.get(st, 0) + 1
    row(name, "victim requests (healthz + PROPFIND) p50 / p99, no attack",
        f"{ms(pct(base, 50))} / {ms(pct(base, 99))} ({len(base)} requests, {len(base_fail)} failed)")
    row(name, "victim requests p50 / p99 / max during the attack",
        f"{ms(pct(during, 50))} / {ms(pct(during, 99))} / {ms(max(during))} "
        f"({len(during)} requests, {len(during_fail)} failed)")
    row(name, "bombs answered (status: count)",
        ", ".join(f"{k}: {v}" for k, v in sorted(statuses.items(), key=lambda kv: str(kv[0]))))
    if refuse:
        row(name, "time to refuse one bomb (upload included) p50 / max",
            f"{ms(statistics.median(refuse))} / {ms(max(refuse))}")


if __name__ == "__main__":
    main()
