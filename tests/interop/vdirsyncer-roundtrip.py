#!/usr/bin/env python3
"""Two-way vdirsyncer sync of a calendar and an address book against a DAV server.

  vdirsyncer-roundtrip.py --caldav URL --carddav URL --user U --password P
                          [--n 200] --work DIR [--clean] [--timeout 240]

--caldav / --carddav: the calendar and address-book collection URLs (e.g.
http://127.0.0.1:8008/dav/alice/calendars/work/ and .../contacts/card/), which
must exist and be empty (--clean deletes their members first). vdirsyncer is
given the parent (home) URLs and finds the collections by discovery.

Steps (each timed): generate N events + N vCards locally (gen-data.py);
vdirsyncer discover; sync #1 (upload); count on server; edit on both sides
(server: 10 updated, 5 deleted, 5 added per collection; local: 10 updated,
5 deleted); sync #2; no-op sync #3 (must upload/download/delete nothing);
check both sides hold the same UIDs and the edits crossed over.
Exits 1 on any mismatch. Standard library + vdirsyncer (next to this python).
"""
import argparse
import base64
import glob
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
import xml.etree.ElementTree as ET
from urllib.parse import urljoin, urlsplit, unquote

HERE = os.path.dirname(os.path.abspath(__file__))
VDIR = os.path.join(os.path.dirname(sys.executable), "vdirsyncer")
D = "{DAV:}"


class Dav:
    def __init__(self, user, password):
        self.hdr = {}
        if user:
            tok = base64.b64encode(f"{user}:{password}".encode()).decode()
            self.hdr["Authorization"] = "Basic " + tok

    def req(self, method, url, body=None, headers=None):
        h = dict(self.hdr)
        h.update(headers or {})
        r = urllib.request.Request(url, data=body, method=method, headers=h)
        try:
            with urllib.request.urlopen(r, timeout=60) as resp:
                return resp.status, resp.read(), resp.headers
        except urllib.error.HTTPError as e:
            return e.code, e.read(), e.headers

    def list(self, coll):
        """href -> etag of the members of a collection (PROPFIND Depth: 1)."""
        body = (b'<?xml version="1.0" encoding="utf-8"?><d:propfind xmlns:d="DAV:">'
                b'<d:prop><d:getetag/></d:prop></d:propfind>')
        st, data, _ = self.req("PROPFIND", coll, body,
                               {"Depth": "1", "Content-Type": "application/xml; charset=utf-8"})
        if st != 207:
            raise SystemExit(f"PROPFIND {coll} -> {st}: {data[:300]!r}")
        try:
            root = ET.fromstring(data)
        except ET.ParseError as e:
            raise SystemExit(f"PROPFIND {coll}: response is not well-formed XML ({e})")
        out = {}
        me = unquote(urlsplit(coll).path).rstrip("/")
        for resp in root.iter(D + "response"):
            href = resp.findtext(D + "href", "").strip()
            full = urljoin(coll, href)
            if unquote(urlsplit(full).path).rstrip("/") == me:
                continue
            etag = None
            for ps in resp.findall(D + "propstat"):
                if " 200 " not in (ps.findtext(D + "status") or ""):
                    continue
                e = ps.find(f"{D}prop/{D}getetag")
                if e is not None and (e.text or "").strip():
                    etag = e.text.strip()
            if etag:
                out[full] = etag
        return out

    def uids(self, coll):
        res = {}
        for href in self.list(coll):
            st, data, _ = self.req("GET", href)
            if st != 200:
                raise SystemExit(f"GET {href} -> {st}")
            m = re.search(r"^UID:(.*?)\r?$", data.decode(), re.M)
            res[m.group(1).strip()] = data.decode()
        return res


def local_uids(d, ext):
    res = {}
    for f in glob.glob(os.path.join(d, "*" + ext)):
        with open(f, encoding="utf-8", newline="") as fh:
            text = fh.read()
        m = re.search(r"^UID:(.*?)\r?$", text, re.M)
        res[m.group(1).strip()] = (f, text)
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--caldav", required=True)
    ap.add_argument("--carddav", required=True)
    ap.add_argument("--user", default="")
    ap.add_argument("--password", default="")
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--work", required=True)
    ap.add_argument("--timeout", type=int, default=240, help="seconds per vdirsyncer run")
    ap.add_argument("--clean", action="store_true",
                    help="delete every member of both collections first")
    a = ap.parse_args()
    cal_url = a.caldav.rstrip("/") + "/"
    book_url = a.carddav.rstrip("/") + "/"
    cal_name = cal_url.rstrip("/").rsplit("/", 1)[1]
    book_name = book_url.rstrip("/").rsplit("/", 1)[1]
    dav = Dav(a.user, a.password)
    failures = []
    timings = []

    def fail(msg):
        print(f"FAIL: {msg}")
        failures.append(msg)

    if a.clean:
        for url in (cal_url, book_url):
            for href, etag in dav.list(url).items():
                st, _, _ = dav.req("DELETE", href)
                if st not in (200, 204):
                    fail(f"clean: DELETE {href} -> {st}")
            left = len(dav.list(url))
            if left:
                fail(f"clean: {left} members left in {url}")
    shutil.rmtree(a.work, ignore_errors=True)
    os.makedirs(a.work)
    cal_dir = os.path.join(a.work, "calendars", cal_name)
    book_dir = os.path.join(a.work, "contacts", book_name)
    gen = os.path.join(HERE, "gen-data.py")
    subprocess.run([sys.executable, gen, "events", str(a.n), cal_dir],
                   check=True, stdout=subprocess.DEVNULL)
    subprocess.run([sys.executable, gen, "vcards", str(a.n), book_dir],
                   check=True, stdout=subprocess.DEVNULL)

    def storage(name, kind, url):
        s = f'[storage {name}]\ntype = "{kind}"\nurl = "{url}"\n'
        if a.user:
            s += f'username = "{a.user}"\npassword = "{a.password}"\n'
        return s

    root_cal = cal_url[: -len(cal_name) - 1]
    root_book = book_url[: -len(book_name) - 1]
    cfg = os.path.join(a.work, "config")
    with open(cfg, "w") as f:
        f.write(f"""[general]
status_path = "{a.work}/status/"

[pair cal]
a = "cal_local"
b = "cal_remote"
collections = ["{cal_name}"]
conflict_resolution = "b wins"

[storage cal_local]
type = "filesystem"
path = "{a.work}/calendars/"
fileext = ".ics"

{storage("cal_remote", "caldav", root_cal)}
[pair book]
a = "book_local"
b = "book_remote"
collections = ["{book_name}"]
conflict_resolution = "b wins"

[storage book_local]
type = "filesystem"
path = "{a.work}/contacts/"
fileext = ".vcf"

{storage("book_remote", "carddav", root_book)}""")

    def vd(*args, label):
        t = time.perf_counter()
        try:
            p = subprocess.run([VDIR, "-c", cfg, *args], input=b"y\n" * 10,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               timeout=a.timeout)
        except subprocess.TimeoutExpired as e:
            print((e.stdout or b"").decode(errors="replace")[-3000:])
            raise SystemExit(f"vdirsyncer {' '.join(args)} timed out after {a.timeout}s")
        dt_ = time.perf_counter() - t
        timings.append((label, dt_))
        log = p.stdout.decode(errors="replace")
        with open(os.path.join(a.work, "vdirsyncer.log"), "a") as lf:
            lf.write(f"### {label} rc={p.returncode}\n{log}\n")
        if p.returncode != 0:
            print(log[-3000:])
            raise SystemExit(f"vdirsyncer {' '.join(args)} failed rc={p.returncode}")
        return log

    vd("discover", label="discover")
    vd("sync", label=f"sync #1 (upload {a.n} events + {a.n} vCards)")
    n_cal, n_book = len(dav.list(cal_url)), len(dav.list(book_url))
    print(f"server after sync #1: {n_cal} events, {n_book} vCards")
    if n_cal != a.n or n_book != a.n:
        fail(f"server counts after sync #1 are {n_cal}/{n_book}, expected {a.n}")

    # --- edits on both sides -------------------------------------------------
    run = uuid.uuid4().hex[:6]
    server_new = {}
    for url, ext, ldir in ((cal_url, ".ics", cal_dir), (book_url, ".vcf", book_dir)):
        hrefs = sorted(dav.list(url).items())
        server_touched = set()                             # UIDs edited/deleted server-side
        for href, _ in hrefs[:15]:
            st, data, _ = dav.req("GET", href)
            server_touched.add(re.search(r"^UID:(.*?)\r?$", data.decode(), re.M).group(1).strip())
        for href, etag in hrefs[:10]:                      # server updates
            st, data, _ = dav.req("GET", href)
            text = data.decode()
            key = "SUMMARY:" if ext == ".ics" else "FN:"
            text = re.sub(rf"^{key}(.*?)(\r?)$", rf"{key}\1 [server-edit-{run}]\2", text,
                          count=1, flags=re.M)
            st, _, _ = dav.req("PUT", href, text.encode(), {
                "If-Match": etag, "Content-Type": "text/calendar" if ext == ".ics" else "text/vcard"})
            if st not in (200, 201, 204):
                fail(f"server-side PUT {href} -> {st}")
        for href, etag in hrefs[10:15]:                    # server deletes
            st, _, _ = dav.req("DELETE", href, headers={"If-Match": etag})
            if st not in (200, 204):
                fail(f"server-side DELETE {href} -> {st}")
        for i in range(5):                                 # server adds
            uid = f"srv-{run}-{ext[1:]}-{i}@interop"
            if ext == ".ics":
                body = ("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//icloud-bridge//interop//EN\r\n"
                        f"BEGIN:VEVENT\r\nUID:{uid}\r\nDTSTAMP:20270101T000000Z\r\n"
                        f"DTSTART:2027010{i + 1}T100000Z\r\nDTEND:2027010{i + 1}T110000Z\r\n"
                        f"SUMMARY:server added {i}\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n")
                ctype = "text/calendar"
            else:
                body = (f"BEGIN:VCARD\r\nVERSION:3.0\r\nUID:{uid}\r\nFN:Server Added {i}\r\n"
                        f"N:Added;Server;;;\r\nEND:VCARD\r\n")
                ctype = "text/vcard"
            st, _, _ = dav.req("PUT", url + f"srv-{run}-{ext[1:]}-{i}{ext}", body.encode(),
                               {"If-None-Match": "*", "Content-Type": ctype})
            if st not in (200, 201, 204):
                fail(f"server-side create -> {st}")
            server_new[uid] = ext
        loc = sorted(local_uids(ldir, ext).items())
        # local edits on items the server did not touch (so no conflicts)
        spare = [(u, v) for u, v in loc if u not in server_touched]
        for uid, (path, text) in spare[-10:]:
            key = "SUMMARY:" if ext == ".ics" else "FN:"
            text = re.sub(rf"^{key}(.*?)(\r?)$", rf"{key}\1 [local-edit-{run}]\2", text,
                          count=1, flags=re.M)
            with open(path, "w", encoding="utf-8", newline="") as f:
                f.write(text)
        for uid, (path, text) in spare[-15:-10]:
            os.remove(path)

    vd("sync", label="sync #2 (10 upd/5 del/5 add server-side + 10 upd/5 del local, x2)")
    log3 = vd("sync", label="sync #3 (no changes)")
    busy = [ln for ln in log3.splitlines()
            if re.search(r"\b(Copying|Deleting|conflict resolution)\b", ln)]
    if busy:
        fail(f"sync #3 was not a no-op: {busy[:3]}")

    # --- verify convergence --------------------------------------------------
    for url, ext, ldir in ((cal_url, ".ics", cal_dir), (book_url, ".vcf", book_dir)):
        srv = dav.uids(url)
        loc = {u: t for u, (p, t) in local_uids(ldir, ext).items()}
        exp = a.n - 5 - 5 + 5
        name = "events" if ext == ".ics" else "vCards"
        print(f"{name}: server {len(srv)}, local {len(loc)}, expected {exp}")
        if set(srv) != set(loc) or len(srv) != exp:
            fail(f"{name} differ: only server {sorted(set(srv) - set(loc))[:5]}, "
                 f"only local {sorted(set(loc) - set(srv))[:5]}")
        s_srv_edit = sum(f"server-edit-{run}" in t for t in loc.values())
        s_loc_edit = sum(f"local-edit-{run}" in t for t in srv.values())
        s_new = sum(u in loc for u in server_new if server_new[u] == ext)
        print(f"  server edits seen locally {s_srv_edit}/10, local edits seen on server "
              f"{s_loc_edit}/10, server additions seen locally {s_new}/5")
        if (s_srv_edit, s_loc_edit, s_new) != (10, 10, 5):
            fail(f"{name}: edits did not cross over")
    for label, t in timings:
        print(f"  {label:<72} {t:7.2f} s")
    print("vdirsyncer-roundtrip: " + ("OK" if not failures else "FAILED"))
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
