#!/usr/bin/env python3
"""Revocation and reconnect end to end, with python-caldav as the client.

  reconnect.py --bridge URL --user U --password P --control URL --bin BIN --config CFG

The bridge at URL serves the iCloud stand-in whose control port is at --control.
Steps: python-caldav lists calendars and writes an event; the stand-in revokes every
app-specific password; the client now gets 503 with Retry-After and the design's sentence
(never 401, so it would not prompt); status.json says auth_rejected; a new app-specific
password is made in the stand-in and stored with `icloud-bridge reconnect --password-stdin`;
reconnect returns once the server uses it, and python-caldav works again at the first try
(list, create, fetch, delete); status.json says ok.
Prints one line per step and exits 1 if any check fails.
"""
import argparse
import base64
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid

import caldav

FAILED = []


def check(ok, what):
    print(("ok    " if ok else "FAIL  ") + what, flush=True)
    if not ok:
        FAILED.append(what)


def post(url):
    req = urllib.request.Request(url, data=b"", method="POST")
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.read().decode().strip()


def status_json(bridge):
    with urllib.request.urlopen(bridge + "status.json", timeout=10) as r:
        return json.load(r)["accounts"][0]


def raw_propfind(bridge, path, user, password):
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    req = urllib.request.Request(bridge.rstrip("/") + path, method="PROPFIND",
                                 headers={"Authorization": "Basic " + auth, "Depth": "1"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, dict(r.headers), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read().decode()


def event(uid):
    return ("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//icloud-bridge//interop reconnect//EN\r\n"
            f"BEGIN:VEVENT\r\nUID:{uid}\r\nDTSTAMP:20261201T090000Z\r\n"
            "DTSTART:20261201T100000Z\r\nDTEND:20261201T110000Z\r\nSUMMARY:after reconnect\r\n"
            "END:VEVENT\r\nEND:VCALENDAR\r\n")


def sync_once(bridge, user, password):
    """A full small sync: discover from the root URL, list, write, read back, delete."""
    with caldav.DAVClient(url=bridge, username=user, password=password, timeout=10) as c:
        cals = c.principal().calendars()
        cal = next(x for x in cals if str(x.url).rstrip("/").endswith("/home"))
        uid = str(uuid.uuid4())
        cal.save_event(event(uid))
        got = cal.event_by_uid(uid)
        ok = uid in got.data
        got.delete()
        return ok and len(cals) > 0


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bridge", required=True)
    ap.add_argument("--user", required=True)
    ap.add_argument("--password", required=True)
    ap.add_argument("--control", required=True)
    ap.add_argument("--bin", required=True)
    ap.add_argument("--config", required=True)
    a = ap.parse_args()

    check(sync_once(a.bridge, a.user, a.password), "python-caldav syncs through the bridge")
    check(status_json(a.bridge)["state"] == "ok", "status.json: ok")

    post(a.control + "revoke-all")
    status, headers, body = raw_propfind(a.bridge, "/dav/alice/calendars/home/", a.user, a.password)
    headers = {k.lower(): v for k, v in headers.items()}
    check(status == 503, f"after the revocation the client gets 503 (got {status})")
    check(headers.get("retry-after") == "60", "with Retry-After: 60")
    check("www-authenticate" not in headers, "and no WWW-Authenticate (no password prompt)")
    check("no longer accepts the app-specific password" in body and "icloud-bridge reconnect" in body,
          "the body names the cause and the fix")
    try:
        sync_once(a.bridge, a.user, a.password)
        check(False, "python-caldav fails while the password is revoked")
    except Exception as e:  # caldav raises its own error types; any failure is right here
        check(True, f"python-caldav fails while the password is revoked ({type(e).__name__})")
    st = status_json(a.bridge)
    check(st["state"] == "auth_rejected", f"status.json: auth_rejected (got {st['state']})")

    new = post(a.control + "generate-asp?label=reconnect")
    t0 = time.monotonic()
    r = subprocess.run([a.bin, "--config", a.config, "reconnect", "--password-stdin"],
                       input=new + "\n", capture_output=True, text=True, timeout=30)
    check(r.returncode == 0, f"icloud-bridge reconnect --password-stdin exits 0 ({r.stderr.strip()[:200]})")
    check(new not in r.stdout + r.stderr, "reconnect does not print the password")
    check("uses the new password now" in r.stdout,
          f"reconnect says the running bridge uses the new password ({r.stdout.strip()[:200]})")
    # reconnect returns once the server uses the password: the very next sync works.
    t_stored = time.monotonic()
    try:
        first = sync_once(a.bridge, a.user, a.password)
    except Exception as e:  # any failure is the bug this checks for
        first = False
        print(f"  first sync after reconnect: {type(e).__name__}: {str(e)[:200]}", flush=True)
    check(first, f"python-caldav syncs at the first try after reconnect returned "
                 f"({round(time.monotonic() - t_stored, 2)} s; reconnect itself took {round(t_stored - t0, 2)} s)")
    st = status_json(a.bridge)
    check(st["state"] == "ok", f"status.json: ok again (got {st['state']})")
    if FAILED:
        print(f"{len(FAILED)} check(s) failed", flush=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
