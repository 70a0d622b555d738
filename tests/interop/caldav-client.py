#!/usr/bin/env python3
"""Round-trip a CalDAV server with the python `caldav` library (a real third-party client).

  caldav-client.py URL --user U --password P [--n 20] [--calendar NAME]

URL: the server's ROOT url (e.g. http://127.0.0.1:8008/); the library must find
the principal and the calendar home on its own.
Steps: principal discovery, calendar listing (every calendar URL must stay on
the server the client was given: no upstream host or port may leak), create N
events (PUT), list all, time-range search, fetch one by UID, update it, delete
the N events. Prints one line per step and exits 1 if any check fails.
Run it with the interop venv's python (tests/interop/run.sh sets it up).
"""
import argparse
import datetime as dt
import sys
import time
import uuid
from urllib.parse import urlsplit

import caldav


def ics(uid, i, start):
    s = start + dt.timedelta(hours=i)
    e = s + dt.timedelta(minutes=30)
    f = "%Y%m%dT%H%M%SZ"
    return ("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//icloud-bridge//interop caldav-client//EN\r\n"
            f"BEGIN:VEVENT\r\nUID:{uid}\r\nDTSTAMP:{s:{f}}\r\nDTSTART:{s:{f}}\r\n"
            f"DTEND:{e:{f}}\r\nSUMMARY:caldav-client event {i}\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("url")
    ap.add_argument("--user", default=None)
    ap.add_argument("--password", default=None)
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--calendar", default=None, help="display name or last path segment")
    a = ap.parse_args()
    times, failures = {}, []

    def fail(msg):
        print(f"FAIL: {msg}")
        failures.append(msg)

    def phase(name, fn):
        t = time.perf_counter()
        r = fn()
        times[name] = time.perf_counter() - t
        return r

    t_all = time.perf_counter()
    netloc = urlsplit(a.url).netloc
    client = caldav.DAVClient(url=a.url, username=a.user, password=a.password, timeout=60)
    principal = phase("discover principal", client.principal)
    print(f"principal: {principal.url}")
    if urlsplit(str(principal.url)).netloc != netloc:
        fail(f"principal URL {principal.url} is not on {netloc}")
    cals = phase("list calendars", principal.calendars)
    if not cals:
        fail("no calendars found")
        return 1
    for c in cals:
        if urlsplit(str(c.url)).netloc != netloc:
            fail(f"calendar URL {c.url} is not on {netloc}")
    cal = cals[0]
    if a.calendar:
        pick = [c for c in cals if str(c.url).rstrip("/").endswith("/" + a.calendar)]
        pick = pick or [c for c in cals if c.get_display_name() == a.calendar]
        if not pick:
            fail(f"calendar {a.calendar!r} not among {[str(c.url) for c in cals]}")
            return 1
        cal = pick[0]
    print(f"calendars: {[str(c.url) for c in cals]}; using {cal.url}")
    before = len(cal.events())

    run = uuid.uuid4().hex[:8]
    start = dt.datetime(2027, 3, 1, 8, 0, 0)
    uids = [f"cc-{run}-{i}@interop" for i in range(a.n)]
    created = phase(f"create {a.n} events",
                    lambda: [cal.add_event(ics(u, i, start)) for i, u in enumerate(uids)])
    events = phase("list all events", cal.events)
    if len(events) != before + a.n:
        fail(f"listed {len(events)} events, expected {before + a.n}")
    found = phase("time-range search (first 10 h)", lambda: cal.search(
        start=start, end=start + dt.timedelta(hours=10), event=True, expand=False))
    mine = [e for e in found if run in str(e.data)]
    if len(mine) != min(10, a.n):
        fail(f"time-range search found {len(mine)} of ours, expected {min(10, a.n)}")
    if a.n:
        ev = phase("fetch by UID", lambda: cal.event_by_uid(uids[0]))
        if "caldav-client event 0" not in ev.data:
            fail("fetched event has wrong content")

        def update():
            ev.icalendar_component["summary"] = "updated summary"
            ev.save()
        phase("update one event", update)
        again = cal.event_by_uid(uids[0])
        if "updated summary" not in again.data:
            fail("update not visible")
    phase(f"delete {a.n} events", lambda: [e.delete() for e in created])
    after = len(cal.events())
    if after != before:
        fail(f"{after} events left, expected {before}")
    total = time.perf_counter() - t_all
    for k, v in times.items():
        print(f"  {k:<32} {v * 1000:9.1f} ms")
    print(f"  {'total':<32} {total * 1000:9.1f} ms")
    print("caldav-client: " + ("OK" if not failures else "FAILED"))
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
