#!/usr/bin/env python3
"""WebDAV-Push the way DAVx5 does it, against `icloud-bridge serve` on the stand-in.

  push.py --bridge URL --user U --password P --control URL --push-port PORT --poll SECS

The bridge's config allows the push service 127.0.0.1:PORT ([push] allow), which this
script runs: a plain Web Push service that records what it is sent. As DAVx5 4.4
(PushRegistrationManager, ServiceDetectionUtils, PushMessageHandler):
  1. PROPFIND Depth 1 on the calendar home with DAVx5's collection properties, reading the
     `transports` (web-push, VAPID key) and `topic` of each calendar;
  2. a key pair and auth secret per subscription (what UnifiedPush makes), and a POST of
     DAVx5's push-register (no trigger, no content-encoding, expires in 3 days), expecting a
     2xx with Location and an Expires of at least 3 days;
  3. device B writes with `Push-Dont-Notify: "<its registration URL>"`: device A's push
     service gets a message within 2 s that decrypts (RFC 8291) to a push-message with the
     calendar's topic, VAPID-signed (RFC 8292) with the advertised key; B gets nothing;
  4. a change made directly in iCloud (stand-in control API) reaches A within poll + 2 s;
  5. DELETE of both registration URLs: 204, then 404.
Prints one line per step and exits 1 if any check fails.
"""
import argparse
import base64
import http.server
import json
import os
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
import xml.etree.ElementTree as ET
from email.utils import formatdate, parsedate_to_datetime

from cryptography.hazmat.primitives import hashes, hmac, serialization
from cryptography.hazmat.primitives.asymmetric import ec, utils
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

NS = "https://bitfire.at/webdav-push"
D = "DAV:"
FAILED = []


def check(ok, what):
    print(("ok    " if ok else "FAIL  ") + what, flush=True)
    if not ok:
        FAILED.append(what)
    return ok


def b64d(s):
    s = s.strip().replace("+", "-").replace("/", "_").rstrip("=")
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def b64e(b):
    return base64.urlsafe_b64encode(b).decode().rstrip("=")


class Service(http.server.BaseHTTPRequestHandler):
    got = []
    lock = threading.Lock()

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        with Service.lock:
            Service.got.append((self.path, self.headers, body, time.monotonic()))
        self.send_response(201)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *a):
        pass


def wait(path, n, secs):
    end = time.monotonic() + secs
    while time.monotonic() < end:
        with Service.lock:
            hits = [g for g in Service.got if g[0] == path]
        if len(hits) >= n:
            return hits[n - 1]
        time.sleep(0.02)
    return None


class Device:
    """A UnifiedPush subscription: key pair, auth secret, push resource."""

    def __init__(self, resource):
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.public = self.key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
        self.auth = os.urandom(16)
        self.resource = resource

    def register_body(self):
        # DAVx5's XmlSerializer output: its own prefix, no trigger, expires in 3 days.
        expires = formatdate(time.time() + 3 * 86400, usegmt=True)
        return (
            "<?xml version='1.0' encoding='UTF-8' standalone='yes' ?>"
            f'<n0:push-register xmlns:n0="{NS}"><n0:subscription><n0:web-push-subscription>'
            f"<n0:push-resource>{self.resource}</n0:push-resource>"
            f'<n0:subscription-public-key type="p256dh">{b64e(self.public)}</n0:subscription-public-key>'
            f"<n0:auth-secret>{b64e(self.auth)}</n0:auth-secret>"
            "</n0:web-push-subscription></n0:subscription>"
            f"<n0:expires>{expires}</n0:expires></n0:push-register>"
        ).encode()

    def decrypt(self, body):
        """RFC 8291 / RFC 8188 aes128gcm, one record."""
        salt, idlen = body[:16], body[20]
        sender = body[21:21 + idlen]
        record = body[21 + idlen:]
        shared = self.key.exchange(ec.ECDH(), ec.EllipticCurvePublicKey.from_encoded_point(
            ec.SECP256R1(), sender))

        def mac(key, data):
            h = hmac.HMAC(key, hashes.SHA256())
            h.update(data)
            return h.finalize()

        ikm = mac(mac(self.auth, shared), b"WebPush: info\0" + self.public + sender + b"\1")
        prk = mac(salt, ikm)
        cek = mac(prk, b"Content-Encoding: aes128gcm\0\1")[:16]
        nonce = mac(prk, b"Content-Encoding: nonce\0\1")[:12]
        plain = AESGCM(cek).decrypt(nonce, record, None).rstrip(b"\0")
        assert plain.endswith(b"\2"), "last-record delimiter"
        return plain[:-1].decode()


def request(method, url, user, password, body=None, headers=None):
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    h = {"Authorization": "Basic " + auth}
    h.update(headers or {})
    req = urllib.request.Request(url, data=body, method=method, headers=h)
    try:
        with urllib.request.urlopen(req, timeout=15) as r:
            return r.status, r.headers, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read().decode()


DAVX5_PROPFIND = (
    '<?xml version="1.0" encoding="UTF-8"?>'
    f'<d:propfind xmlns:d="DAV:" xmlns:P="{NS}" xmlns:C="urn:ietf:params:xml:ns:caldav" '
    'xmlns:A="http://apple.com/ns/ical/"><d:prop><d:current-user-privilege-set/><d:displayname/>'
    "<d:owner/><d:resourcetype/><P:transports/><P:topic/><A:calendar-color/>"
    "<C:calendar-description/><C:calendar-timezone/><C:supported-calendar-component-set/>"
    "</d:prop></d:propfind>"
).encode()


def vapid_ok(header, key, audience):
    """The Authorization header: vapid t=<ES256 JWT for audience>, k=<key>."""
    if not header.startswith("vapid t="):
        return False
    jwt, k = header[len("vapid t="):].split(", k=")
    h, c, s = jwt.split(".")
    claims = json.loads(b64d(c))
    pub = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b64d(k))
    sig = b64d(s)
    der = utils.encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
    pub.verify(der, f"{h}.{c}".encode(), ec.ECDSA(hashes.SHA256()))
    return k == key and claims["aud"] == audience and claims["exp"] > time.time()


def event(uid):
    return ("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//icloud-bridge//interop push//EN\r\n"
            f"BEGIN:VEVENT\r\nUID:{uid}\r\nDTSTAMP:20261201T090000Z\r\n"
            "DTSTART:20261210T090000Z\r\nDTEND:20261210T100000Z\r\nSUMMARY:push\r\n"
            "END:VEVENT\r\nEND:VCALENDAR\r\n").encode()


def main():
    ap = argparse.ArgumentParser()
    for name in ("--bridge", "--user", "--password", "--control"):
        ap.add_argument(name, required=True)
    ap.add_argument("--push-port", type=int, required=True)
    ap.add_argument("--poll", type=int, default=2)
    a = ap.parse_args()
    bridge = a.bridge.rstrip("/")
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", a.push_port), Service)
    threading.Thread(target=srv.serve_forever, daemon=True).start()

    # 1. DAVx5's collection listing.
    s, _, body = request("PROPFIND", bridge + "/dav/alice/calendars/", a.user, a.password,
                         DAVX5_PROPFIND, {"Depth": "1", "Content-Type": "application/xml; charset=utf-8"})
    check(s == 207, f"PROPFIND Depth 1 on the calendar home: 207 (got {s})")
    topics, vapid = {}, None
    for resp in ET.fromstring(body).findall(f"{{{D}}}response"):
        href = resp.findtext(f"{{{D}}}href")
        for ps in resp.findall(f"{{{D}}}propstat"):
            if "200" not in (ps.findtext(f"{{{D}}}status") or ""):
                continue
            t = ps.find(f"{{{D}}}prop/{{{NS}}}topic")
            k = ps.find(f"{{{D}}}prop/{{{NS}}}transports/{{{NS}}}web-push/{{{NS}}}vapid-public-key")
            if t is not None:
                topics[href] = t.text
            if k is not None and k.get("type") == "p256ecdsa":
                vapid = k.text
    cal = "/dav/alice/calendars/home/"
    check(cal in topics and len(topics) >= 2, f"calendars carry a push topic ({len(topics)} of them)")
    check(vapid is not None and len(b64d(vapid)) == 65 and b64d(vapid)[0] == 4,
          "transports: web-push with an uncompressed P-256 VAPID key")
    s, h, _ = request("OPTIONS", bridge + cal, a.user, a.password)
    check("webdav-push" in (h.get("DAV") or ""), "OPTIONS on the calendar: DAV has webdav-push")

    # 2. Two subscriptions registered as DAVx5 does.
    base = f"http://127.0.0.1:{a.push_port}"
    da, db = Device(base + "/up-a?up=1"), Device(base + "/up-b?up=1")
    locs = {}
    for name, d in (("A", da), ("B", db)):
        s, h, body = request("POST", bridge + cal, a.user, a.password, d.register_body(),
                             {"Content-Type": "application/xml; charset=utf-8"})
        loc, exp = h.get("Location", ""), h.get("Expires", "")
        days = (parsedate_to_datetime(exp).timestamp() - time.time()) / 86400 if exp else 0
        check(200 <= s < 300 and loc.startswith("http") and days >= 2.99,
              f"device {name}: push-register {s}, Location, Expires in {days:.1f} days")
        locs[name] = loc

    # 3. B writes, asking not to hear of it; A hears within 2 s.
    t0 = time.monotonic()
    s, _, _ = request("PUT", bridge + cal + f"push-{uuid.uuid4()}.ics", a.user, a.password,
                      event(str(uuid.uuid4())),
                      {"Content-Type": "text/calendar", "Push-Dont-Notify": f'"{locs["B"]}"'})
    check(200 <= s < 300, f"device B writes through the bridge ({s})")
    got = wait("/up-a?up=1", 1, 2)
    if check(got is not None, "device A's push service gets a message within 2 s"):
        print(f"      latency {1000 * (got[3] - t0):.0f} ms")
        msg = da.decrypt(got[2])
        root = ET.fromstring(msg)
        check(root.tag == f"{{{NS}}}push-message" and root.findtext(f"{{{NS}}}topic") == topics.get(cal),
              "it decrypts to a push-message with the calendar's topic (as PushMessageHandler reads it)")
        check(root.find(f"{{{NS}}}content-update/{{{D}}}sync-token") is not None, "with the new sync-token")
        check(got[1].get("Content-Encoding") == "aes128gcm" and "TTL" in got[1],
              "Content-Encoding: aes128gcm, TTL")
        check(vapid_ok(got[1].get("Authorization", ""), vapid, base), "VAPID-signed with the advertised key")
    time.sleep(1.5)
    check(wait("/up-b?up=1", 1, 0) is None, "device B (Push-Dont-Notify) gets nothing")

    # 4. A change made directly in iCloud.
    n = len([g for g in Service.got if g[0] == "/up-a?up=1"])
    t0 = time.monotonic()
    req = urllib.request.Request(a.control.rstrip("/") + "/object?collection=calendars/home&name=elsewhere.ics",
                                 data=event("elsewhere"), method="POST")
    urllib.request.urlopen(req, timeout=10).read()
    got = wait("/up-a?up=1", n + 1, a.poll + 2)
    check(got is not None, f"a change in iCloud reaches device A within poll + 2 s ({a.poll + 2} s)")
    if got:
        print(f"      latency {1000 * (got[3] - t0):.0f} ms")

    # 5. Unsubscribe.
    for name, loc in locs.items():
        s1, _, _ = request("DELETE", loc, a.user, a.password)
        s2, _, _ = request("DELETE", loc, a.user, a.password)
        check((s1, s2) == (204, 404), f"device {name}: DELETE of its registration URL {s1}, again {s2}")
    srv.shutdown()
    print(f"{len(FAILED)} failed")
    return 1 if FAILED else 0


if __name__ == "__main__":
    sys.exit(main())
