#!/usr/bin/env python3
"""WebDAV-Push at household-and-then-some scale: D devices x C collections subscriptions.

  push-bench.py --bridge URL --control URL --logins FILE --push-port PORT \
                --collections C --period SECS

FILE holds one `login password` per line (one device each). Seeds C calendars in the
stand-in, runs a Web Push service on 127.0.0.1:PORT that records arrival times (no
decryption: the bench measures the bridge), registers every device on every calendar (the
same valid RFC 8291 key for all: encryption still runs per subscription), then measures:
  - upstream requests per poll period while nothing changes (target: one PROPFIND per
    collection and period);
  - delivery latency after a write through the bridge to 10 calendars at once (every
    subscriber of each is told);
  - delivery latency after a change made directly in iCloud to 10 calendars (bounded by
    the period).
Prints a markdown table to stdout; progress to stderr.
"""
import argparse
import base64
import concurrent.futures
import email.utils
import http.server
import statistics
import sys
import threading
import time
import urllib.request

P256DH = "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4"
AUTH = "BTBZMqHH6r4Tts7J_aSIgg"
GOT = []  # (path, monotonic time)
LOCK = threading.Lock()


def log(*a):
    print("bench-push:", *a, file=sys.stderr, flush=True)


class Service(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", "0")))
        with LOCK:
            GOT.append((self.path, time.monotonic()))
        self.send_response(201)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *a):
        pass


def req(method, url, user=None, password=None, body=None, headers=None):
    h = dict(headers or {})
    if user:
        h["Authorization"] = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    r = urllib.request.Request(url, data=body, method=method, headers=h)
    try:
        with urllib.request.urlopen(r, timeout=30) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def event(uid):
    return ("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//icloud-bridge//bench push//EN\r\n"
            f"BEGIN:VEVENT\r\nUID:{uid}\r\nDTSTAMP:20261201T090000Z\r\n"
            "DTSTART:20261210T090000Z\r\nDTEND:20261210T100000Z\r\nSUMMARY:b\r\n"
            "END:VEVENT\r\nEND:VCALENDAR\r\n").encode()


def register_body(resource):
    expires = email.utils.formatdate(time.time() + 3 * 86400, usegmt=True)
    return (f'<push-register xmlns="https://bitfire.at/webdav-push"><subscription><web-push-subscription>'
            f"<push-resource>{resource}</push-resource>"
            f'<subscription-public-key type="p256dh">{P256DH}</subscription-public-key>'
            f"<auth-secret>{AUTH}</auth-secret></web-push-subscription></subscription>"
            f"<expires>{expires}</expires></push-register>").encode()


def pct(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, int(round(p / 100 * (len(v) - 1))))] if v else float("nan")


def wait_all(paths_since, within):
    """paths_since: {path: t0}; wait until each path got a message after t0; latencies (ms)."""
    end = time.monotonic() + within
    lat = {}
    while time.monotonic() < end and len(lat) < len(paths_since):
        with LOCK:
            got = list(GOT)
        for path, t in got:
            t0 = paths_since.get(path)
            if t0 is not None and t >= t0 and path not in lat:
                lat[path] = (t - t0) * 1000
        time.sleep(0.01)
    return list(lat.values()), len(paths_since) - len(lat)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bridge", required=True)
    ap.add_argument("--control", required=True)
    ap.add_argument("--logins", required=True)
    ap.add_argument("--push-port", type=int, required=True)
    ap.add_argument("--collections", type=int, default=100)
    ap.add_argument("--period", type=int, default=60)
    a = ap.parse_args()
    bridge, ctl = a.bridge.rstrip("/"), a.control.rstrip("/")
    logins = [l.split() for l in open(a.logins) if l.strip()]
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", a.push_port), Service)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    cols = [f"push{i:03d}" for i in range(a.collections)]
    log(f"seeding {len(cols)} calendars")
    for c in cols:
        req("POST", f"{ctl}/object?collection=calendars/{c}&name=seed.ics", body=event("seed-" + c))

    log(f"registering {len(logins)} devices x {len(cols)} calendars")
    jobs = [(d, u, p, c) for d, (u, p) in enumerate(logins) for c in cols]
    t0 = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(16) as ex:
        codes = list(ex.map(lambda j: req(
            "POST", f"{bridge}/dav/alice/calendars/{j[3]}/", j[1], j[2],
            register_body(f"http://127.0.0.1:{a.push_port}/s/{j[0]}/{j[3]}"),
            {"Content-Type": "application/xml; charset=utf-8"})[0], jobs))
    reg_secs = time.monotonic() - t0
    ok = sum(1 for c in codes if c in (201, 204))
    log(f"{ok}/{len(jobs)} registered in {reg_secs:.1f} s")

    log(f"upstream requests over 2 periods of {a.period} s, nothing changing")
    req("POST", f"{ctl}/clear-request-log")
    time.sleep(2 * a.period + 1)
    _, body = req("GET", f"{ctl}/request-log")
    lines = body.decode().splitlines()
    upstream = len(lines)
    checks = sum(1 for l in lines if " PROPFIND " in l and "/push" in l)
    pushed_idle = len(GOT)

    def burst(through_bridge):
        targets = cols[:10]
        since = {}
        t = time.monotonic()
        for c in targets:
            for d in range(len(logins)):
                since[f"/s/{d}/{c}"] = t
        with concurrent.futures.ThreadPoolExecutor(10) as ex:
            if through_bridge:
                u, p = logins[0]
                list(ex.map(lambda c: req("PUT", f"{bridge}/dav/alice/calendars/{c}/b-{time.time_ns()}.ics",
                                          u, p, event(f"b-{time.time_ns()}"), {"Content-Type": "text/calendar"}), targets))
            else:
                list(ex.map(lambda c: req("POST", f"{ctl}/object?collection=calendars/{c}&name=i-{time.time_ns()}.ics",
                                          body=event(f"i-{time.time_ns()}")), targets))
        return wait_all(since, a.period + 10 if not through_bridge else 10)

    log("a write through the bridge to 10 calendars")
    lat_w, miss_w = burst(True)
    time.sleep(2)
    log("a change in iCloud to 10 calendars")
    lat_i, miss_i = burst(False)
    srv.shutdown()

    subs = len(jobs)
    print(f"| WebDAV-Push, {len(logins)} devices x {len(cols)} calendars = {subs} subscriptions, poll {a.period} s | value |")
    print("|---|---|")
    print(f"| registrations accepted / time | {ok}/{subs} in {reg_secs:.1f} s |")
    print(f"| upstream requests per period, nothing changing | {upstream / 2:.0f} ({checks / 2:.0f} collection checks for {len(cols)} collections) |")
    print(f"| messages pushed while nothing changed | {pushed_idle} |")
    for name, lat, miss in (("write through the bridge", lat_w, miss_w), ("change in iCloud", lat_i, miss_i)):
        print(f"| {name} (10 calendars, {len(lat)} deliveries): latency p50 / p95 / max | "
              f"{pct(lat, 50):.0f} / {pct(lat, 95):.0f} / {max(lat) if lat else float('nan'):.0f} ms"
              f"{f', {miss} missing' if miss else ''} |")
    return 0 if ok == subs and not miss_w and not miss_i else 1


if __name__ == "__main__":
    sys.exit(main())
