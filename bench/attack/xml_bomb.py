#!/usr/bin/env python3
"""Hostile-device scenario (issue 11, finding 3): 10 MB attribute bombs.

A victim device on 127.0.0.1 asks for GET /healthz and an authenticated PROPFIND (Depth 0 on
its calendar home, forwarded upstream or answered from the cache) in a loop on one keep-alive
connection; its p50/p99/max latencies are measured with no attack, then while an attacker
sends 10 MB attribute-bomb bodies (PROPFIND with one element of ~840,000 attributes, REPORT
with ~4,500 elements of 255 attributes each, in turn) in a loop:
  a. from 127.0.0.2, four at a time (one address may hold a quarter of the body budget, so
     most of these are refused with 503 before their body is read);
  b. from 127.0.0.2-5, one at a time each (four bombs parsed at once).
Also reported: how the bombs were answered, and the time from the first byte of a bomb to its
400 (upload included). Every bomb differs from the others (a comment), as an attacker would
make them: identical requests would wait for one another in the bridge's single-flight. The
attackers run in child processes, so the victim's timings are not the Python interpreter's
(one process's threads take turns on its lock).

Target (issue 11): the victim's p99 stays under 50 ms while a hostile 10 MB body is refused.

Usage (from bench/attack.sh): python3 xml_bomb.py URL USER PASSWORD PID IMAP SMTP
Prints markdown rows `| scenario | measure | value |`; progress on stderr.
"""

import base64
import http.client
import multiprocessing
import queue
import re
import select
import socket
import statistics
import sys
import threading
import time
import urllib.parse

URL, USER, PASS, PID = sys.argv[1:5]
_u = urllib.parse.urlsplit(URL)
HOST, PORT = _u.hostname, _u.port
VICTIM = "127.0.0.1"
AUTH = "Basic " + base64.b64encode(f"{USER}:{PASS}".encode()).decode()
SIZE = 10_000_000
BASELINE_SECS = 5
ATTACK_SECS = 12
# A bomb not answered by then is given up ("no answer"); the victim's requests get 10 s.
GIVE_UP = 60
PROPFIND_OPEN = '<d:propfind xmlns:d="DAV:">'
PROPFIND_CLOSE = "</d:propfind>"
MULTIGET_OPEN = '<c:calendar-multiget xmlns:d="DAV:" xmlns:c="urn:ietf:params:xml:ns:caldav">'
MULTIGET_CLOSE = "<d:href>/dav/x/calendars/home/x.ics</d:href></c:calendar-multiget>"
LIST = (
    '<?xml version="1.0" encoding="utf-8"?><d:propfind xmlns:d="DAV:" '
    'xmlns:cs="http://calendarserver.org/ns/"><d:prop><d:resourcetype/><d:displayname/>'
    "<cs:getctag/></d:prop></d:propfind>"
)
HOME_SET = (
    '<?xml version="1.0" encoding="utf-8"?><d:propfind xmlns:d="DAV:" '
    'xmlns:c="urn:ietf:params:xml:ns:caldav"><d:prop><d:current-user-principal/>'
    "<c:calendar-home-set/></d:prop></d:propfind>"
)


def log(msg):
    print(f"xml_bomb: {msg}", file=sys.stderr, flush=True)


def row(scenario, measure, value):
    print(f"| {scenario} | {measure} | {value} |", flush=True)


def one_element_bomb(open_, close):
    head = f'<?xml version="1.0" encoding="utf-8"?>\n{open_}<d:prop'
    tail = f"><d:getetag/></d:prop>{close}"
    parts, n, i = [head], len(head) + len(tail), 0
    while n < SIZE - 4096:
        a = f' a{i}="x"'
        parts.append(a)
        n += len(a)
        i += 1
    parts.append(tail)
    return "".join(parts).encode(), i


def many_elements_bomb(open_, close):
    element = "<d:getetag" + "".join(f' a{i}="x"' for i in range(255)) + "/>"
    head = f'<?xml version="1.0" encoding="utf-8"?>\n{open_}<d:prop>'
    tail = f"</d:prop>{close}"
    count = (SIZE - 4096 - len(head) - len(tail)) // len(element)
    return (head + element * count + tail).encode(), count


def find_home():
    """The calendar home of the account, by the usual discovery (PROPFIND / then principal)."""
    c = http.client.HTTPConnection(HOST, PORT, timeout=30, source_address=(VICTIM, 0))
    hdr = {"Authorization": AUTH, "Depth": "0", "Content-Type": "application/xml"}
    c.request("PROPFIND", "/", body=HOME_SET, headers=hdr)
    text = c.getresponse().read().decode()
    m = re.search(r"current-user-principal>\s*<[^>]*href>([^<]+)<", text)
    principal = m.group(1) if m else "/"
    c.request("PROPFIND", principal, body=HOME_SET, headers=hdr)
    text = c.getresponse().read().decode()
    m = re.search(r"calendar-home-set>\s*<[^>]*href>([^<]+)<", text)
    c.close()
    return m.group(1) if m else "/"


class Victim:
    """GET /healthz and PROPFIND the calendar home in a loop on one keep-alive connection."""

    def __init__(self, home):
        self.home = home
        self.samples = {"healthz": [], "propfind": []}
        self.failures = 0
        self.stop = threading.Event()
        self.conn = None

    def _once(self, kind, method, path, body, headers):
        start = time.monotonic()
        try:
            if self.conn is None:
                self.conn = http.client.HTTPConnection(
                    HOST, PORT, timeout=10, source_address=(VICTIM, 0)
                )
            self.conn.request(method, path, body=body, headers=headers)
            r = self.conn.getresponse()
            r.read()
            ok = r.status in (200, 207)
        except (OSError, http.client.HTTPException):
            ok = False
            self.conn = None
        took = time.monotonic() - start
        if ok:
            self.samples[kind].append(took)
        else:
            self.failures += 1

    def run(self):
        hdr = {"Authorization": AUTH, "Depth": "0", "Content-Type": "application/xml"}
        while not self.stop.is_set():
            self._once("healthz", "GET", "/healthz", None, {})
            self._once("propfind", "PROPFIND", self.home, LIST, hdr)
            time.sleep(0.01)

    def measure(self, secs):
        self.samples = {"healthz": [], "propfind": []}
        self.failures = 0
        self.stop.clear()
        t = threading.Thread(target=self.run, daemon=True)
        t.start()
        time.sleep(secs)
        self.stop.set()
        t.join()
        return self.samples, self.failures


def ms(x):
    return f"{x * 1000:.1f}"


def quantiles(xs):
    if not xs:
        return "no answers"
    xs = sorted(xs)
    p99 = xs[min(len(xs) - 1, int(len(xs) * 0.99))]
    return f"{ms(statistics.median(xs))} / {ms(p99)} / {ms(xs[-1])} ms (n={len(xs)})"


def send_bomb(src, method, path, body, nonce):
    """One bomb on a new connection: (status code or outcome, seconds to the answer). Gives
    up after GIVE_UP seconds ("no answer": the old code never got to the end of a bomb).
    A comment with `nonce` after the XML declaration makes every bomb a different request
    (identical ones would wait for each other in the bridge's single-flight)."""
    start = time.monotonic()
    deadline = start + GIVE_UP
    cut = body.index(b"\n") + 1
    body = body[:cut] + f"<!--{nonce}-->".encode() + body[cut:]
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: bridge\r\nAuthorization: {AUTH}\r\nDepth: 1\r\n"
        f"Content-Type: application/xml; charset=utf-8\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    resp = b""
    try:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(GIVE_UP)
        s.bind((src, 0))
        s.connect((HOST, PORT))
        s.sendall(head)
        view, sent = memoryview(body), 0
        s.setblocking(False)
        # Send the body while watching for an early answer (a 503 comes before the body).
        while sent < len(body) and not resp:
            left = deadline - time.monotonic()
            if left <= 0:
                s.close()
                return "no answer", time.monotonic() - start
            readable, writable, _ = select.select([s], [s], [], min(left, 1.0))
            if readable:
                chunk = s.recv(4096)
                if not chunk:
                    break
                resp += chunk
            elif writable:
                try:
                    sent += s.send(view[sent : sent + 256 * 1024])
                except BlockingIOError:
                    pass
        s.setblocking(True)
        while b"\r\n" not in resp:
            left = deadline - time.monotonic()
            if left <= 0:
                s.close()
                return "no answer", time.monotonic() - start
            s.settimeout(left)
            try:
                chunk = s.recv(4096)
            except socket.timeout:
                continue
            if not chunk:
                break
            resp += chunk
        took = time.monotonic() - start
        s.close()
    except OSError as e:
        return f"error: {e.__class__.__name__}", time.monotonic() - start
    status = resp.split(b"\r\n", 1)[0].decode(errors="replace")
    return (status.split(" ", 2)[1] if status.startswith("HTTP/") else "cut off"), took


def bomb_loop(src, k, bombs, home, stop, results):
    """One attacker (a child process): bombs in turn until `stop`, each outcome to `results`."""
    i = k
    while not stop.is_set():
        method, body = bombs[i % len(bombs)]
        i += 1
        results.put(send_bomb(src, method, home, body, f"{src}-{k}-{i}"))


def attack(scen, sources, per_source, bombs, home, victim):
    log(scen)
    stop = multiprocessing.Event()
    results = multiprocessing.Queue()
    procs = [
        multiprocessing.Process(
            target=bomb_loop, args=(src, k, bombs, home, stop, results), daemon=True
        )
        for src in sources
        for k in range(per_source)
    ]
    for p in procs:
        p.start()
    time.sleep(0.5)
    samples, failures = victim.measure(ATTACK_SECS)
    stop.set()
    outcomes, refused = {}, []

    def drain():
        while True:
            try:
                status, took = results.get(timeout=0.1)
            except queue.Empty:
                return
            outcomes[status] = outcomes.get(status, 0) + 1
            if status == "400":
                refused.append(took)

    # A bomb the bridge never answers (the old code) is given up after GIVE_UP seconds.
    for p in procs:
        while p.is_alive():
            drain()
            p.join(timeout=0.5)
    drain()
    summary = ", ".join(f"{k}: {v}" for k, v in sorted(outcomes.items()))
    row(scen, "bomb answers", summary)
    row(scen, "time to refuse a bomb with 400 (p50 / p99 / max)", quantiles(refused))
    row(scen, "victim GET /healthz p50 / p99 / max", quantiles(samples["healthz"]))
    row(scen, "victim PROPFIND p50 / p99 / max", quantiles(samples["propfind"]))
    row(scen, "victim failures", str(failures))


def main():
    home = find_home()
    log(f"victim PROPFINDs {home}")
    one, attrs = one_element_bomb(PROPFIND_OPEN, PROPFIND_CLOSE)
    many, elements = many_elements_bomb(MULTIGET_OPEN, MULTIGET_CLOSE)
    log(f"bombs: {len(one)} bytes ({attrs} attributes on one element), "
        f"{len(many)} bytes ({elements} elements of 255 attributes)")
    bombs = [("PROPFIND", one), ("REPORT", many)]
    victim = Victim(home)
    samples, failures = victim.measure(BASELINE_SECS)
    scen = "xml bomb: no attack"
    row(scen, "victim GET /healthz p50 / p99 / max", quantiles(samples["healthz"]))
    row(scen, "victim PROPFIND p50 / p99 / max", quantiles(samples["propfind"]))
    row(scen, "victim failures", str(failures))
    attack("xml bomb: 4 at a time from 127.0.0.2", ["127.0.0.2"], 4, bombs, home, victim)
    attack(
        "xml bomb: 1 at a time from each of 127.0.0.2-5",
        [f"127.0.0.{i}" for i in range(2, 6)],
        1,
        bombs,
        home,
        victim,
    )


if __name__ == "__main__":
    main()
