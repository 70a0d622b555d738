#!/usr/bin/env python3
"""Seed a calendar on a CalDAV server (the iCloud stand-in) quickly, standard library only.

  seed.py home  --front URL --user U --password P
        prints the absolute calendar-home URL found by discovery
        (PROPFIND / current-user-principal -> principal -> calendar-home-set)
  seed.py cardhome --front URL --user U --password P
        prints the absolute address-book home URL (addressbook-home-set)
  seed.py fill  --url COLLECTION_URL --user U --password P --count N
                [--size BYTES] [--threads 8] [--prefix ev] [--vcard]
        MKCALENDAR COLLECTION_URL (VEVENT only; an existing one is kept), then PUTs
        N events named <prefix>-<i:06d>.ics, each about BYTES long, from a thread
        pool of keep-alive connections. Prints "N events, B bytes, S s".
        With --vcard: PUTs N vCards <prefix>-<i:06d>.vcf into an existing address book.
"""
import argparse
import base64
import http.client
import sys
import threading
import time
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urljoin, urlsplit

D = "{DAV:}"
C = "{urn:ietf:params:xml:ns:caldav}"


class Conn:
    """One keep-alive HTTP/1.1 connection per thread and host."""
    local = threading.local()

    def __init__(self, user, password):
        tok = base64.b64encode(f"{user}:{password}".encode()).decode()
        self.auth = "Basic " + tok

    def req(self, method, url, body=b"", headers=None):
        u = urlsplit(url)
        key = (u.hostname, u.port)
        pool = getattr(self.local, "pool", None)
        if pool is None:
            pool = self.local.pool = {}
        h = {"Authorization": self.auth, "Content-Length": str(len(body))}
        h.update(headers or {})
        path = u.path + ("?" + u.query if u.query else "")
        for attempt in range(3):
            c = pool.get(key)
            if c is None:
                c = pool[key] = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
            try:
                c.request(method, path, body=body, headers=h)
                r = c.getresponse()
                data = r.read()
                if r.getheader("Connection", "").lower() == "close":
                    c.close()
                    pool.pop(key, None)
                return r.status, data
            except (http.client.HTTPException, OSError):
                c.close()
                pool.pop(key, None)
                if attempt == 2:
                    raise
        raise RuntimeError("unreachable")


def propfind(conn, url, prop_xml, depth="0"):
    body = ('<?xml version="1.0" encoding="utf-8"?><d:propfind xmlns:d="DAV:" '
            'xmlns:c="urn:ietf:params:xml:ns:caldav"><d:prop>' + prop_xml +
            '</d:prop></d:propfind>').encode()
    st, data = conn.req("PROPFIND", url, body,
                        {"Depth": depth, "Content-Type": "application/xml; charset=utf-8"})
    if st != 207:
        sys.exit(f"PROPFIND {url} -> {st}: {data[:200]!r}")
    return ET.fromstring(data)


CARD = "{urn:ietf:params:xml:ns:carddav}"


def home(a, card=False):
    conn = Conn(a.user, a.password)
    front = a.front.rstrip("/") + "/"
    root = propfind(conn, front, "<d:current-user-principal/>")
    href = root.find(f".//{D}current-user-principal/{D}href")
    if href is None:
        sys.exit("no current-user-principal")
    principal = urljoin(front, href.text.strip())
    if card:
        root = propfind(conn, principal,
                        '<a:addressbook-home-set xmlns:a="urn:ietf:params:xml:ns:carddav"/>')
        href = root.find(f".//{CARD}addressbook-home-set/{D}href")
    else:
        root = propfind(conn, principal, "<c:calendar-home-set/>")
        href = root.find(f".//{C}calendar-home-set/{D}href")
    if href is None:
        sys.exit("no home set")
    print(urljoin(principal, href.text.strip()).rstrip("/") + "/")


def vcard(prefix, i):
    return ("BEGIN:VCARD\r\nVERSION:3.0\r\nPRODID:-//icloud-bridge//bench//EN\r\n"
            f"UID:{prefix}-{i:06d}@bench\r\nN:Person{i};Bench;;;\r\nFN:Bench Person{i}\r\n"
            f"EMAIL;type=INTERNET:person{i}@example.com\r\nTEL;type=CELL:+1 555 {i:07d}\r\n"
            "END:VCARD\r\n").encode()


def fold(line):
    raw = line.encode()
    if len(raw) <= 75:
        return line
    parts = [raw[:75]] + [raw[i:i + 74] for i in range(75, len(raw), 74)]
    return "\r\n ".join(p.decode() for p in parts)


def event(prefix, i, size):
    day, slot = divmod(i, 8)
    y, rest = divmod(day, 336)
    m, d = divmod(rest, 28)
    date = f"{2026 + y:04d}{m + 1:02d}{d + 1:02d}"
    start = f"{date}T{8 + slot:02d}0000Z"
    end = f"{date}T{8 + slot:02d}4500Z"
    lines = ["BEGIN:VCALENDAR", "VERSION:2.0", "PRODID:-//icloud-bridge//bench//EN",
             "BEGIN:VEVENT", f"UID:{prefix}-{i:06d}@bench", "DTSTAMP:20260101T000000Z",
             f"DTSTART:{start}", f"DTEND:{end}", f"SUMMARY:Bench event {i} & <friends>",
             "LOCATION:Room 1\\, HQ"]
    text = "\r\n".join(fold(x) for x in lines) + "\r\n"
    tail = "END:VEVENT\r\nEND:VCALENDAR\r\n"
    pad = size - len(text) - len(tail) - len("DESCRIPTION:\r\n") - 8
    if pad > 0:
        words = ("agenda notes for the quarterly planning review; bring slides. " * (pad // 60 + 2))
        desc = words[:pad]
        text += fold("DESCRIPTION:" + desc) + "\r\n"
    return (text + tail).encode()


def fill_vcards(a):
    conn = Conn(a.user, a.password)
    url = a.url.rstrip("/") + "/"
    t0 = time.perf_counter()

    def put(i):
        st, data = conn.req("PUT", f"{url}{a.prefix}-{i:06d}.vcf", vcard(a.prefix, i),
                            {"Content-Type": "text/vcard; charset=utf-8"})
        if st not in (201, 204):
            raise RuntimeError(f"PUT {a.prefix}-{i:06d}.vcf -> {st}: {data[:200]!r}")

    with ThreadPoolExecutor(a.threads) as ex:
        for _ in ex.map(put, range(a.count)):
            pass
    print(f"{a.count} vCards, {time.perf_counter() - t0:.1f} s")


def fill(a):
    if a.vcard:
        return fill_vcards(a)
    conn = Conn(a.user, a.password)
    url = a.url.rstrip("/") + "/"
    body = ('<?xml version="1.0" encoding="utf-8"?><c:mkcalendar xmlns:d="DAV:" '
            'xmlns:c="urn:ietf:params:xml:ns:caldav"><d:set><d:prop>'
            f'<d:displayname>{a.prefix} bench</d:displayname>'
            '<c:supported-calendar-component-set><c:comp name="VEVENT"/>'
            '</c:supported-calendar-component-set></d:prop></d:set></c:mkcalendar>').encode()
    st, data = conn.req("MKCALENDAR", url, body, {"Content-Type": "application/xml; charset=utf-8"})
    if st not in (201, 405, 409, 403):
        sys.exit(f"MKCALENDAR {url} -> {st}: {data[:200]!r}")
    t0 = time.perf_counter()
    total = [0]
    lock = threading.Lock()

    def put(i):
        b = event(a.prefix, i, a.size)
        st, data = conn.req("PUT", f"{url}{a.prefix}-{i:06d}.ics", b,
                            {"Content-Type": "text/calendar; charset=utf-8"})
        if st not in (201, 204):
            raise RuntimeError(f"PUT {a.prefix}-{i:06d}.ics -> {st}: {data[:200]!r}")
        with lock:
            total[0] += len(b)

    with ThreadPoolExecutor(a.threads) as ex:
        for _ in ex.map(put, range(a.count)):
            pass
    print(f"{a.count} events, {total[0]} bytes, {time.perf_counter() - t0:.1f} s")


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    h = sub.add_parser("home")
    h.add_argument("--front", required=True)
    ch = sub.add_parser("cardhome")
    ch.add_argument("--front", required=True)
    f = sub.add_parser("fill")
    f.add_argument("--url", required=True)
    f.add_argument("--count", type=int, required=True)
    f.add_argument("--vcard", action="store_true")
    f.add_argument("--size", type=int, default=400)
    f.add_argument("--threads", type=int, default=8)
    f.add_argument("--prefix", default="ev")
    for p in (h, ch, f):
        p.add_argument("--user", required=True)
        p.add_argument("--password", required=True)
    a = ap.parse_args()
    if a.cmd == "home":
        home(a)
    elif a.cmd == "cardhome":
        home(a, card=True)
    else:
        fill(a)
    return 0


if __name__ == "__main__":
    sys.exit(main())
