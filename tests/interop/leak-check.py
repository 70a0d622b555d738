#!/usr/bin/env python3
"""Check that no upstream address reaches a client of the bridge (standard library only).

  leak-check.py --url BRIDGE_ROOT --user U --password P
                [--pid PID] [--port PORT ...] [--account NAME]

Forbidden ports: every --port, plus every TCP port that process PID listens on
(found through /proc) other than the bridge's own; use --pid with `icloud-bridge
demo`, whose stand-in runs inside the same process. The check walks the tree like
a client: PROPFIND on the root, the principal and both home sets (Depth 1,
allprop and the discovery properties), PROPFIND Depth 1 and a calendar-query /
addressbook-query REPORT with calendar-data / address-data on every collection,
and GET of a few members. Every response's headers and body must be free of
"HOST:PORT" / ":PORT/" for the forbidden ports. Prints what it checked; exits 1
on a leak or on an unexpected status.
"""
import argparse
import base64
import os
import re
import sys
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET
from urllib.parse import urljoin, urlsplit

D = "{DAV:}"
C = "{urn:ietf:params:xml:ns:caldav}"
CR = "{urn:ietf:params:xml:ns:carddav}"

DISCOVERY = ('<?xml version="1.0" encoding="utf-8"?><d:propfind xmlns:d="DAV:" '
             'xmlns:c="urn:ietf:params:xml:ns:caldav" xmlns:cr="urn:ietf:params:xml:ns:carddav">'
             '<d:prop><d:current-user-principal/><d:principal-URL/><d:owner/>'
             '<c:calendar-home-set/><cr:addressbook-home-set/><c:calendar-user-address-set/>'
             '<d:resourcetype/><d:displayname/><d:getetag/><d:sync-token/></d:prop></d:propfind>')
ALLPROP = '<?xml version="1.0" encoding="utf-8"?><d:propfind xmlns:d="DAV:"><d:allprop/></d:propfind>'
CAL_QUERY = ('<?xml version="1.0" encoding="utf-8"?><c:calendar-query xmlns:d="DAV:" '
             'xmlns:c="urn:ietf:params:xml:ns:caldav"><d:prop><d:getetag/><c:calendar-data/>'
             '</d:prop><c:filter><c:comp-filter name="VCALENDAR"/></c:filter></c:calendar-query>')
CARD_QUERY = ('<?xml version="1.0" encoding="utf-8"?><cr:addressbook-query xmlns:d="DAV:" '
              'xmlns:cr="urn:ietf:params:xml:ns:carddav"><d:prop><d:getetag/><cr:address-data/>'
              '</d:prop></cr:addressbook-query>')


def listening_ports(pid):
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        m = re.match(r"socket:\[(\d+)\]", link)
        if m:
            inodes.add(m.group(1))
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    cols = line.split()
                    if cols[3] == "0A" and cols[9] in inodes:   # 0A = LISTEN
                        ports.add(int(cols[1].rsplit(":", 1)[1], 16))
        except FileNotFoundError:
            pass
    return ports


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", required=True)
    ap.add_argument("--user", required=True)
    ap.add_argument("--password", required=True)
    ap.add_argument("--pid", type=int)
    ap.add_argument("--port", type=int, action="append", default=[])
    ap.add_argument("--members", type=int, default=3, help="GET this many members per collection")
    a = ap.parse_args()
    base = a.url.rstrip("/") + "/"
    own = urlsplit(base).port
    forbidden = set(a.port)
    if a.pid:
        forbidden |= listening_ports(a.pid)
    forbidden.discard(own)
    if not forbidden:
        print("no forbidden ports found")
        return 1
    pat = re.compile(r"(?:[\w.\-\]]+:(?:%s)(?!\d))" % "|".join(str(p) for p in sorted(forbidden)))
    print(f"bridge {base}; forbidden upstream ports {sorted(forbidden)}")
    tok = base64.b64encode(f"{a.user}:{a.password}".encode()).decode()
    leaks, errors, count = [], [], [0]

    def req(method, url, body=None, depth=None, ctype="application/xml; charset=utf-8"):
        h = {"Authorization": "Basic " + tok}
        if body is not None:
            h["Content-Type"] = ctype
        if depth is not None:
            h["Depth"] = depth
        r = urllib.request.Request(url, data=body.encode() if body else None, method=method,
                                   headers=h)

        class NoRedirect(urllib.request.HTTPRedirectHandler):
            def redirect_request(self, *args, **kw):
                return None
        opener = urllib.request.build_opener(NoRedirect)
        try:
            with opener.open(r, timeout=60) as resp:
                st, hdrs, data = resp.status, resp.headers, resp.read()
        except urllib.error.HTTPError as e:
            st, hdrs, data = e.code, e.headers, e.read()
        count[0] += 1
        text = "".join(f"{k}: {v}\n" for k, v in hdrs.items()) + "\n" + data.decode("utf-8", "replace")
        for m in pat.finditer(text):
            s = max(0, m.start() - 80)
            leaks.append(f"{method} {url} -> {st}: ...{text[s:m.end() + 40]!r}")
        return st, hdrs, data

    def ms(method, url, body, depth):
        st, _, data = req(method, url, body, depth)
        if st != 207:
            errors.append(f"{method} {url} -> {st}")
            return None
        try:
            return ET.fromstring(data)
        except ET.ParseError as e:
            errors.append(f"{method} {url}: not well-formed XML ({e})")
            return None

    def hrefs(root, path):
        return [urljoin(base, h.text.strip()) for h in root.iterfind(path) if h.text]

    # discovery, as a client given only the root URL
    for wk in (".well-known/caldav", ".well-known/carddav"):
        req("PROPFIND", base + wk, DISCOVERY, "0")
    root = ms("PROPFIND", base, DISCOVERY, "0")
    if root is None:
        print("\n".join(errors))
        return 1
    principals = hrefs(root, f".//{D}current-user-principal/{D}href")
    homes = []
    for p in principals:
        pr = ms("PROPFIND", p, DISCOVERY, "0")
        if pr is not None:
            homes += hrefs(pr, f".//{C}calendar-home-set/{D}href")
            homes += hrefs(pr, f".//{CR}addressbook-home-set/{D}href")
        ms("PROPFIND", p, ALLPROP, "0")
    if not homes:
        errors.append("no home sets found by discovery")
    collections = []
    for h in dict.fromkeys(homes):
        ms("PROPFIND", h, ALLPROP, "1")
        hr = ms("PROPFIND", h, DISCOVERY, "1")
        if hr is None:
            continue
        for resp in hr.iter(D + "response"):
            href = urljoin(h, resp.findtext(D + "href", "").strip())
            rt = resp.find(f".//{D}resourcetype")
            if rt is None or href.rstrip("/") == h.rstrip("/"):
                continue
            if rt.find(C + "calendar") is not None:
                collections.append((href, "cal"))
            elif rt.find(CR + "addressbook") is not None:
                collections.append((href, "card"))
    for coll, kind in collections:
        ms("PROPFIND", coll, ALLPROP, "0")
        listing = ms("PROPFIND", coll, DISCOVERY, "1")
        ms("REPORT", coll, CAL_QUERY if kind == "cal" else CARD_QUERY, "1")
        members = []
        if listing is not None:
            members = [m for m in hrefs(listing, f"{D}response/{D}href")
                       if m.rstrip("/") != coll.rstrip("/")]
        for m in members[: a.members]:
            st, _, _ = req("GET", m)
            if st != 200:
                errors.append(f"GET {m} -> {st}")
    print(f"checked {count[0]} responses: {len(principals)} principal(s), "
          f"{len(set(homes))} home set(s), {len(collections)} collections")
    for e in errors:
        print("ERROR: " + e)
    for l in leaks[:20]:
        print("LEAK: " + l)
    if leaks or errors:
        print(f"leak-check: FAILED ({len(leaks)} leaks, {len(errors)} errors)")
        return 1
    print("leak-check: OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
