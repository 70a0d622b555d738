#!/usr/bin/env python3
"""Two devices of one household on the bridge's HTTPS port, with python-caldav.

  household.py --bridge https://localhost:PORT/ --ca certs/ca.pem --control URL
               --device1 USER:PASS --device2 USER:PASS
               --icloud URL --apple-id ID --app-password ASP --fresh SECS

1. Without the bridge's CA the connection is refused (certificate not trusted).
2. Device 1, trusting only certs/ca.pem, discovers from the root URL, writes N events and
   syncs the calendar the way python-caldav's documentation shows it
   (objects_by_sync_token(load_objects=True): a sync-collection REPORT, one GET per object).
3. After fresh_secs, device 2 (its own login) does the same sync: it gets every event, and
   iCloud (the stand-in's request log) sees no object download: the fresh sync-collection
   answer names each object at the ETag the bridge holds.
4. Another device edits one event on iCloud directly; after fresh_secs device 2 syncs again,
   sees the edit, and exactly one object is downloaded from iCloud.
Exits non-zero with a message on the first failure.
"""
import argparse
import sys
import time
import urllib.request
import uuid

import caldav

N = 30


def control(url, path, method="POST"):
    req = urllib.request.Request(url + path, data=b"" if method == "POST" else None, method=method)
    with urllib.request.urlopen(req, timeout=30) as r:
        return r.read().decode()


def upstream(ctl, method):
    lines = [l.split() for l in control(ctl, "request-log", "GET").splitlines() if l.strip()]
    # "<role> <method> <path> <status>"
    return [l for l in lines if len(l) >= 3 and l[1] == method]


def fail(msg):
    sys.exit(f"FAIL: {msg}")


def ics(uid, summary):
    return (
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//icloud-bridge//household//EN\r\n"
        f"BEGIN:VEVENT\r\nUID:{uid}\r\nDTSTAMP:20270101T000000Z\r\n"
        "DTSTART:20270301T090000Z\r\nDTEND:20270301T100000Z\r\n"
        f"SUMMARY:{summary}\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
    )


def calendar(client, name=None):
    cals = client.principal().calendars()
    if not cals:
        fail("no calendars")
    if name is None:
        return cals[0]
    for c in cals:
        if str(c.url).rstrip("/").rsplit("/", 1)[-1] == name:
            return c
    fail(f"calendar {name!r} not among {[str(c.url) for c in cals]}")


def sync(cal):
    objs = list(cal.objects_by_sync_token(load_objects=True))
    return {str(o.url).rsplit("/", 1)[-1]: o.data for o in objs}


def main():
    ap = argparse.ArgumentParser()
    for k in ("--bridge", "--ca", "--control", "--device1", "--device2", "--icloud",
              "--apple-id", "--app-password"):
        ap.add_argument(k, required=True)
    ap.add_argument("--fresh", type=float, required=True)
    a = ap.parse_args()
    u1, p1 = a.device1.split(":", 1)
    u2, p2 = a.device2.split(":", 1)
    past_fresh = a.fresh + 0.5

    # 1. The bridge's certificate is not trusted without its CA.
    try:
        with caldav.DAVClient(url=a.bridge, username=u1, password=p1, timeout=10) as c:
            c.principal()
        fail("the HTTPS port was accepted without the bridge's CA")
    except caldav.lib.error.AuthorizationError as e:
        fail(f"unexpected authorization error: {e}")
    except Exception as e:  # the TLS verification error, as the HTTP library words it
        if "certificate" not in str(e).lower() and "ssl" not in str(e).lower():
            fail(f"expected a certificate error, got {type(e).__name__}: {e}")
        print(f"without the CA: refused ({type(e).__name__})")

    # 2. Device 1 writes and syncs.
    d1 = caldav.DAVClient(url=a.bridge, username=u1, password=p1, ssl_verify_cert=a.ca,
                          timeout=30)
    cal1 = calendar(d1)
    name = str(cal1.url).rstrip("/").rsplit("/", 1)[-1]
    run = uuid.uuid4().hex[:8]
    uids = [f"hh-{run}-{i}@interop" for i in range(N)]
    for i, uid in enumerate(uids):
        cal1.add_event(ics(uid, f"household {run} {i}"))
    first = sync(cal1)
    mine = {k: v for k, v in first.items() if run in (v or "")}
    if len(mine) != N:
        fail(f"device 1 synced {len(mine)} of its {N} events")
    print(f"device 1: wrote {N} events, synced {len(first)} objects of calendar {name!r}")

    # 3. Device 2, after fresh_secs: everything, and no object downloaded from iCloud.
    time.sleep(past_fresh)
    control(a.control, "clear-request-log")
    d2 = caldav.DAVClient(url=a.bridge, username=u2, password=p2, ssl_verify_cert=a.ca,
                          timeout=30)
    cal2 = calendar(d2, name)
    second = sync(cal2)
    if second != first:
        fail(f"device 2 got {len(second)} objects, device 1 {len(first)}, or other data")
    gets = upstream(a.control, "GET")
    if gets:
        fail(f"device 2's sync downloaded {len(gets)} objects from iCloud: {gets[:5]}")
    asked = [" ".join(l[1:3]) for l in upstream(a.control, "PROPFIND") + upstream(a.control, "REPORT")]
    print(f"device 2: synced {len(second)} objects; iCloud saw {len(asked)} listing requests "
          f"and no object download")

    # 4. An edit made on iCloud by another device shows up, costing one download.
    phone = caldav.DAVClient(url=a.icloud, username=a.apple_id, password=a.app_password,
                             timeout=30)
    ev = calendar(phone, name).event_by_uid(uids[0])
    ev.data = ics(uids[0], f"edited on the phone {run}")
    ev.save()
    time.sleep(past_fresh)
    control(a.control, "clear-request-log")
    third = sync(cal2)
    edited = [k for k, v in third.items() if f"edited on the phone {run}" in (v or "")]
    if len(edited) != 1:
        fail(f"device 2 does not see the phone's edit ({len(edited)} matches)")
    gets = upstream(a.control, "GET")
    if len(gets) != 1:
        fail(f"expected one object downloaded after the edit, iCloud saw {gets}")
    print(f"after an edit on iCloud: device 2 sees it; iCloud saw one download ({gets[0][2]})")
    print("OK")


if __name__ == "__main__":
    main()
