#!/usr/bin/env python3
"""Client side of bench/cache.sh: two vdirsyncer clients syncing the same account through
the bridge one after the other, then N pollers asking for one calendar's ctag every second.

  cache-clients.py sync   --bridge URL --user U --password P --control URL --work DIR
                          [--calendar bench] [--book card] [--label first]
        one full vdirsyncer sync (discover + sync) of the calendar and the address book into
        DIR; prints "seconds upstream_requests items" (upstream requests counted in the
        stand-in's request log, cleared first).
  cache-clients.py davx5  --bridge URL --user U --password P --control URL
                          [--calendar bench] [--book card] [--batch 10]
        a DAVx5-pattern sync, one request at a time: PROPFIND Depth 1 (getetag) of the
        calendar and the address book, then multigets of --batch objects (DAVx5 asks for 10
        at a time); prints "seconds upstream_requests items".
  cache-clients.py caldav --bridge URL --user U --password P --control URL [--calendar bench]
        python-caldav's own sync of one calendar, as its documentation shows it: discovery from
        the bridge's root URL, then objects_by_sync_token(load_objects=True) (a sync-collection
        REPORT, then one GET per object); prints "seconds upstream_requests items".
  cache-clients.py poll   --bridge URL --user U --password P --control URL
                          [--clients 50] [--secs 60] [--calendar bench] [--pid PID]
        each client: PROPFIND Depth 0 getctag of the calendar once a second; prints
        "requests errors upstream_requests peak_rss_kb".
Run with the interop venv's python (vdirsyncer must sit next to it).
"""
import argparse
import base64
import glob
import http.client
import os
import subprocess
import sys
import threading
import time
import urllib.request
from urllib.parse import urlsplit

VDIR = os.path.join(os.path.dirname(sys.executable), "vdirsyncer")


def control(url, path, method="POST"):
    req = urllib.request.Request(url + path, data=b"" if method == "POST" else None, method=method)
    with urllib.request.urlopen(req, timeout=30) as r:
        return r.read().decode()


def upstream_count(ctl):
    text = control(ctl, "request-log", "GET").strip()
    return len(text.splitlines()) if text else 0


def sync(a):
    os.makedirs(a.work, exist_ok=True)
    cal_root = f"{a.bridge}dav/alice/calendars/"
    book_root = f"{a.bridge}dav/alice/contacts/"
    cfg = os.path.join(a.work, "config")
    with open(cfg, "w") as f:
        f.write(f"""[general]
status_path = "{a.work}/status/"

[pair cal]
a = "cal_local"
b = "cal_remote"
collections = ["{a.calendar}"]

[storage cal_local]
type = "filesystem"
path = "{a.work}/calendars/"
fileext = ".ics"

[storage cal_remote]
type = "caldav"
url = "{cal_root}"
username = "{a.user}"
password = "{a.password}"

[pair book]
a = "book_local"
b = "book_remote"
collections = ["{a.book}"]

[storage book_local]
type = "filesystem"
path = "{a.work}/contacts/"
fileext = ".vcf"

[storage book_remote]
type = "carddav"
url = "{book_root}"
username = "{a.user}"
password = "{a.password}"
""")
    control(a.control, "clear-request-log")
    t0 = time.perf_counter()
    for args in (["discover"], ["sync"]):
        p = subprocess.run([VDIR, "-c", cfg, *args], input=b"y\n" * 10,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=3600)
        if p.returncode != 0:
            sys.stderr.write(p.stdout.decode(errors="replace")[-3000:])
            sys.exit(f"vdirsyncer {args[0]} failed")
    secs = time.perf_counter() - t0
    log = control(a.control, "request-log", "GET").strip()
    ups = len(log.splitlines()) if log else 0
    with open(os.path.join(a.work, "upstream-requests.txt"), "w") as f:
        f.write(log + "\n")
    items = len(glob.glob(f"{a.work}/calendars/*/*.ics")) + len(glob.glob(f"{a.work}/contacts/*/*.vcf"))
    print(f"{secs:.2f} {ups} {items}")


def davx5(a):
    import re
    u = urlsplit(a.bridge)
    tok = base64.b64encode(f"{a.user}:{a.password}".encode()).decode()
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)

    def req(method, path, body, depth):
        conn.request(method, path, body, {"Authorization": "Basic " + tok, "Depth": depth,
                                          "Content-Type": "application/xml; charset=utf-8"})
        r = conn.getresponse()
        data = r.read()
        if r.status != 207:
            sys.exit(f"{method} {path} -> {r.status}")
        return data.decode()

    listing = (b'<?xml version="1.0" encoding="utf-8"?><d:propfind xmlns:d="DAV:">'
               b'<d:prop><d:getetag/></d:prop></d:propfind>')
    control(a.control, "clear-request-log")
    t0 = time.perf_counter()
    items = 0
    for path, ns, root, data_el, ext in (
        (f"/dav/alice/calendars/{a.calendar}/", "urn:ietf:params:xml:ns:caldav",
         "calendar-multiget", "calendar-data", ".ics"),
        (f"/dav/alice/contacts/{a.book}/", "urn:ietf:params:xml:ns:carddav",
         "addressbook-multiget", "address-data", ".vcf"),
    ):
        text = req("PROPFIND", path, listing, "1")
        hrefs = [h for h in re.findall(r"<d:href>([^<]*)</d:href>", text) if h.endswith(ext)]
        for i in range(0, len(hrefs), a.batch):
            batch = "".join(f"<d:href>{h}</d:href>" for h in hrefs[i:i + a.batch])
            body = (f'<?xml version="1.0" encoding="utf-8"?><x:{root} xmlns:d="DAV:" xmlns:x="{ns}">'
                    f'<d:prop><d:getetag/><x:{data_el}/></d:prop>{batch}</x:{root}>').encode()
            got = req("REPORT", path, body, "1")
            items += got.count("BEGIN:VCALENDAR") + got.count("BEGIN:VCARD")
    secs = time.perf_counter() - t0
    print(f"{secs:.2f} {upstream_count(a.control)} {items}")


def pycaldav(a):
    import caldav
    control(a.control, "clear-request-log")
    t0 = time.perf_counter()
    with caldav.DAVClient(url=a.bridge, username=a.user, password=a.password, timeout=60) as c:
        cals = c.principal().calendars()
        cal = [x for x in cals if str(x.url).rstrip("/").endswith("/" + a.calendar)]
        if not cal:
            sys.exit(f"calendar {a.calendar!r} not among {[str(x.url) for x in cals]}")
        objs = list(cal[0].objects_by_sync_token(load_objects=True))
    secs = time.perf_counter() - t0
    items = sum(1 for o in objs if "BEGIN:VCALENDAR" in (o.data or ""))
    print(f"{secs:.2f} {upstream_count(a.control)} {items}")


def rss_kb(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def poll(a):
    u = urlsplit(a.bridge)
    path = f"/dav/alice/calendars/{a.calendar}/"
    tok = base64.b64encode(f"{a.user}:{a.password}".encode()).decode()
    body = (b'<?xml version="1.0" encoding="utf-8"?><d:propfind xmlns:d="DAV:" '
            b'xmlns:cs="http://calendarserver.org/ns/"><d:prop><cs:getctag/></d:prop></d:propfind>')
    counts = {"ok": 0, "err": 0}
    lock = threading.Lock()
    stop = time.monotonic() + a.secs
    control(a.control, "clear-request-log")

    def client(i):
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
        # spread the clients over the first second
        time.sleep(i / a.clients)
        nxt = time.monotonic()
        while time.monotonic() < stop:
            try:
                conn.request("PROPFIND", path, body, {"Authorization": "Basic " + tok, "Depth": "0",
                                                      "Content-Type": "application/xml"})
                r = conn.getresponse()
                r.read()
                ok = r.status == 207
            except OSError:
                ok = False
                conn.close()
                conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
            with lock:
                counts["ok" if ok else "err"] += 1
            nxt += 1.0
            time.sleep(max(0.0, nxt - time.monotonic()))

    peak = [0]

    def sampler():
        while time.monotonic() < stop:
            peak[0] = max(peak[0], rss_kb(a.pid)) if a.pid else 0
            time.sleep(0.2)

    ts = [threading.Thread(target=client, args=(i,)) for i in range(a.clients)]
    ts.append(threading.Thread(target=sampler))
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    print(f"{counts['ok']} {counts['err']} {upstream_count(a.control)} {peak[0]}")


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("cmd", choices=["sync", "davx5", "caldav", "poll"])
    ap.add_argument("--bridge", required=True)
    ap.add_argument("--user", required=True)
    ap.add_argument("--password", required=True)
    ap.add_argument("--control", required=True)
    ap.add_argument("--work")
    ap.add_argument("--calendar", default="bench")
    ap.add_argument("--book", default="card")
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--secs", type=int, default=60)
    ap.add_argument("--pid", type=int, default=0)
    ap.add_argument("--batch", type=int, default=10)
    a = ap.parse_args()
    {"sync": sync, "davx5": davx5, "caldav": pycaldav, "poll": poll}[a.cmd](a)


if __name__ == "__main__":
    main()
