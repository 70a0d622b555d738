#!/usr/bin/env python3
"""What Thunderbird makes of crafted vCards and IMAP login answers (research for issue 12).

  tb-research.py vcards [--work DIR]   # BDAY, groups, PHOTO forms; what a list edit PUTs
  tb-research.py imap [--work DIR]     # [ALERT] / NO [UNAVAILABLE] variants: alerts, prompts

Needs the interop venv (marionette-driver) and Thunderbird + Xvfb, as thunderbird.sh
installs them. A tiny CardDAV server and a tiny IMAP server (both on 127.0.0.1, in this
process) serve exactly the bytes under test; the result is JSON on stdout.
"""
import argparse
import base64
import http.server
import json
import os
import socketserver
import subprocess
import sys
import tempfile
import threading
import time
from xml.sax.saxutils import escape

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import thunderbird as tbm  # noqa: E402


def jpeg():
    """A small real JPEG (imagemagick), so that a loaded photo has a size."""
    out = os.path.join(tempfile.mkdtemp(), "p.jpg")
    subprocess.run(["convert", "-size", "32x32", "xc:#c04040", out], check=True)
    with open(out, "rb") as f:
        return f.read()


def vcards(photo_url, photo_b64):
    c = {}

    def card(uid, version, fn, *lines):
        c[uid] = "\r\n".join(["BEGIN:VCARD", f"VERSION:{version}", f"UID:{uid}", f"FN:{fn}",
                              f"N:{fn};;;;", *lines, "END:VCARD"]) + "\r\n"

    # (i) birthdays without a year
    card("bday-v3-1", "3.0", "v3 BDAY:--0314", "BDAY:--0314")
    card("bday-v3-2", "3.0", "v3 BDAY:--03-14", "BDAY:--03-14")
    card("bday-v3-3", "3.0", "v3 BDAY;X-APPLE-OMIT-YEAR=1604:1604-03-14",
         "BDAY;X-APPLE-OMIT-YEAR=1604:1604-03-14")
    card("bday-v3-4", "3.0", "v3 BDAY;VALUE=text:--0314", "BDAY;VALUE=text:--0314")
    card("bday-v3-5", "3.0", "v3 BDAY;VALUE=date:--0314", "BDAY;VALUE=date:--0314")
    card("bday-v4-1", "4.0", "v4 BDAY:--0314", "BDAY:--0314")
    card("bday-v4-2", "4.0", "v4 BDAY:--03-14", "BDAY:--03-14")
    card("bday-v4-3", "4.0", "v4 BDAY;X-APPLE-OMIT-YEAR=1604:1604-03-14",
         "BDAY;X-APPLE-OMIT-YEAR=1604:1604-03-14")
    card("bday-v4-4", "4.0", "v4 BDAY;VALUE=text:--0314", "BDAY;VALUE=text:--0314")
    card("bday-v4-5", "4.0", "v4 BDAY;VALUE=date:--0314", "BDAY;VALUE=date:--0314")
    card("bday-v3-full", "3.0", "v3 BDAY:1990-03-14 (control)", "BDAY:1990-03-14")
    card("anniv-v4", "4.0", "v4 ANNIVERSARY:--0314", "ANNIVERSARY:--0314")
    card("anniv-v3-apple", "3.0", "v3 item1.X-ABDATE;X-APPLE-OMIT-YEAR=1604",
         "item1.X-ABDATE;X-APPLE-OMIT-YEAR=1604:1604-03-14", "item1.X-ABLabel:_$!<Anniversary>!$_")
    # (ii) groups; members are the two photo cards below
    m1, m2 = "urn:uuid:photo-v3-b", "urn:uuid:photo-v4-data"
    card("group-v4", "4.0", "Group v4 KIND+MEMBER", "KIND:group", f"MEMBER:{m1}", f"MEMBER:{m2}")
    card("group-v3-apple", "3.0", "Group v3 X-ADDRESSBOOKSERVER",
         "X-ADDRESSBOOKSERVER-KIND:group", f"X-ADDRESSBOOKSERVER-MEMBER:{m1}",
         f"X-ADDRESSBOOKSERVER-MEMBER:{m2}")
    card("group-v3-kind", "3.0", "Group v3 KIND+MEMBER", "KIND:group", f"MEMBER:{m1}",
         f"MEMBER:{m2}")
    # (iii) photos
    fold = lambda line: "\r\n ".join(line[i:i + 74] for i in range(0, len(line), 74))  # noqa: E731
    card("photo-v3-b", "3.0", "Photo v3 ENCODING=b", "EMAIL:p1@example.com",
         fold(f"PHOTO;ENCODING=b;TYPE=JPEG:{photo_b64}"))
    card("photo-v4-data", "4.0", "Photo v4 data: URI", "EMAIL:p2@example.com",
         fold(f"PHOTO:data:image/jpeg;base64,{photo_b64}"))
    card("photo-v3-uri", "3.0", "Photo v3 VALUE=uri (no auth)", f"PHOTO;VALUE=uri:{photo_url}")
    card("photo-v4-uri", "4.0", "Photo v4 URL (no auth)", f"PHOTO;MEDIATYPE=image/jpeg:{photo_url}")
    card("photo-v3-B", "3.0", "Photo v3 ENCODING=BASE64", fold(f"PHOTO;ENCODING=BASE64;TYPE=JPEG:{photo_b64}"))
    return c


class CardDAV:
    """One address book at /books/b/, discovery from the root; PUTs are kept and logged."""

    def __init__(self, cards, photo):
        self.cards = dict(cards)  # uid -> text
        self.puts = []
        self.requests = []
        self.etag = {u: 1 for u in cards}
        dav = self

        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def reply(self, code, body=b"", ctype="application/xml; charset=utf-8", extra=()):
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("DAV", "1, 2, 3, addressbook")
                for k, v in extra:
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

            def authed(self):
                # Thunderbird's CardDAV set-up needs a login (without one, create() fails).
                if self.headers.get("Authorization"):
                    return True
                self.body()
                self.reply(401, b"login", "text/plain", [("WWW-Authenticate", 'Basic realm="research"')])
                return False

            def body(self):
                n = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(n).decode("utf-8", "replace") if n else ""

            def ms(self, responses):
                x = ['<?xml version="1.0" encoding="utf-8"?>',
                     '<d:multistatus xmlns:d="DAV:" xmlns:card="urn:ietf:params:xml:ns:carddav"'
                     ' xmlns:cs="http://calendarserver.org/ns/">']
                for href, props in responses:
                    x.append(f"<d:response><d:href>{href}</d:href><d:propstat><d:prop>{props}"
                             "</d:prop><d:status>HTTP/1.1 200 OK</d:status></d:propstat></d:response>")
                x.append("</d:multistatus>")
                self.reply(207, "".join(x).encode())

            def book_props(self):
                return ("<d:resourcetype><d:collection/><card:addressbook/></d:resourcetype>"
                        "<d:displayname>Research</d:displayname>"
                        "<d:current-user-privilege-set><d:privilege><d:all/></d:privilege>"
                        "<d:privilege><d:read/></d:privilege><d:privilege><d:write/></d:privilege>"
                        "</d:current-user-privilege-set>"
                        f"<cs:getctag>{sum(dav.etag.values())}</cs:getctag>"
                        f"<d:sync-token>http://x/sync/{sum(dav.etag.values())}</d:sync-token>"
                        "<d:supported-report-set><d:supported-report><d:report><d:sync-collection/>"
                        "</d:report></d:supported-report></d:supported-report-set>")

            def card_props(self, uid, data=False):
                p = f'<d:getetag>"{dav.etag[uid]}"</d:getetag>' \
                    '<d:getcontenttype>text/vcard; charset=utf-8</d:getcontenttype>'
                if data:
                    p += f"<card:address-data>{escape(dav.cards[uid])}</card:address-data>"
                return p

            def do_PROPFIND(self):
                if not self.authed():
                    return
                b = self.body()
                depth = self.headers.get("Depth", "0")
                dav.requests.append({"method": "PROPFIND", "path": self.path, "depth": depth, "body": b[:800]})
                p = self.path
                principal = ("<d:current-user-principal><d:href>/p/</d:href></d:current-user-principal>"
                             "<card:addressbook-home-set><d:href>/books/</d:href></card:addressbook-home-set>")
                if p in ("/", "/.well-known/carddav", "/p/"):
                    self.ms([(p, "<d:resourcetype><d:collection/></d:resourcetype>" + principal)])
                elif p == "/books/":
                    r = [("/books/", "<d:resourcetype><d:collection/></d:resourcetype>")]
                    if depth != "0":
                        r.append(("/books/b/", self.book_props()))
                    self.ms(r)
                elif p == "/books/b/":
                    r = [("/books/b/", self.book_props())]
                    if depth != "0":
                        r += [(f"/books/b/{u}.vcf", self.card_props(u)) for u in dav.cards]
                    self.ms(r)
                else:
                    self.reply(404)

            def do_REPORT(self):
                if not self.authed():
                    return
                b = self.body()
                dav.requests.append({"method": "REPORT", "path": self.path,
                                     "depth": self.headers.get("Depth"), "body": b[:800]})
                if "addressbook-multiget" in b:
                    import re
                    hrefs = re.findall(r"<[^>]*href>([^<]+)</", b)
                    uids = [h.rsplit("/", 1)[-1][:-4] for h in hrefs if h.endswith(".vcf")]
                    self.ms([(f"/books/b/{u}.vcf", self.card_props(u, True))
                             for u in uids if u in dav.cards])
                else:  # sync-collection: everything, every time
                    x = ['<?xml version="1.0" encoding="utf-8"?><d:multistatus xmlns:d="DAV:">']
                    for u in dav.cards:
                        x.append(f"<d:response><d:href>/books/b/{u}.vcf</d:href><d:propstat><d:prop>"
                                 f'<d:getetag>"{dav.etag[u]}"</d:getetag></d:prop>'
                                 "<d:status>HTTP/1.1 200 OK</d:status></d:propstat></d:response>")
                    x.append(f"<d:sync-token>http://x/sync/{sum(dav.etag.values())}</d:sync-token>"
                             "</d:multistatus>")
                    self.reply(207, "".join(x).encode())

            def do_GET(self):
                dav.requests.append({"method": "GET", "path": self.path})
                if self.path == "/photo.jpg":
                    return self.reply(200, photo, "image/jpeg")
                if not self.authed():
                    return
                u = self.path.rsplit("/", 1)[-1][:-4]
                if u in dav.cards:
                    return self.reply(200, dav.cards[u].encode(), "text/vcard; charset=utf-8",
                                      [("ETag", f'"{dav.etag[u]}"')])
                self.reply(404)

            def do_PUT(self):
                if not self.authed():
                    return
                b = self.body()
                u = self.path.rsplit("/", 1)[-1][:-4]
                dav.puts.append({"path": self.path, "if-match": self.headers.get("If-Match"),
                                 "if-none-match": self.headers.get("If-None-Match"),
                                 "content-type": self.headers.get("Content-Type"), "body": b})
                dav.cards[u] = b
                dav.etag[u] = dav.etag.get(u, 0) + 1
                self.reply(201 if dav.etag[u] == 1 else 204, extra=[("ETag", f'"{dav.etag[u]}"')])

            def do_DELETE(self):
                if not self.authed():
                    return
                dav.requests.append({"method": "DELETE", "path": self.path})
                self.reply(204)

            def do_OPTIONS(self):
                self.reply(200)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


EDIT_JS = r"""
const resolve = arguments[arguments.length - 1];
const { setTimeout } = ChromeUtils.importESModule("resource://gre/modules/Timer.sys.mjs");
(async () => {
  const { MailServices } = ChromeUtils.importESModule("resource:///modules/MailServices.sys.mjs");
  const dir = MailServices.ab.directories.find(d => d.dirType == Ci.nsIAbManager.CARDDAV_DIRECTORY_TYPE);
  const out = {};
  // Edit what a user can edit on a group card (it is a contact to Thunderbird): its name.
  for (const uid of ["group-v4", "group-v3-apple", "bday-v3-3", "photo-v3-b"]) {
    const card = dir.childCards.find(c => c.UID == uid);
    if (!card) { out[uid] = "missing"; continue; }
    card.vCardProperties.getFirstEntry("note") ||
      card.vCardProperties.addValue("note", "edited in Thunderbird");
    card.displayName = card.displayName + " (edited)";
    dir.modifyCard(card);
    out[uid] = "modified";
  }
  // A new mailing list in the CardDAV book, as "New List" does.
  try {
    const list = Cc["@mozilla.org/addressbook/directoryproperty;1"].createInstance(Ci.nsIAbDirectory);
    list.isMailList = true;
    list.dirName = "New list from Thunderbird";
    dir.addMailList(list);
    out.addMailList = "ok";
  } catch (e) { out.addMailList = String(e).slice(0, 200); }
  await new Promise(r => setTimeout(r, 4000));
  return out;
})().then(r => resolve({ ok: r }), e => resolve({ error: String(e) + "\n" + (e.stack || "") }));
"""


def research_vcards(work):
    photo = jpeg()
    b64 = base64.b64encode(photo).decode()
    dav = CardDAV({}, photo)
    dav.cards = vcards(dav.url + "photo.jpg", b64)
    dav.etag = {u: 1 for u in dav.cards}
    tb = tbm.Thunderbird(os.path.join(work, "vcards"))
    out = {}
    try:
        out["setup"] = tb.js(tbm.CARDDAV_SETUP_JS, dav.url, "u", "p")
        snap = tbm.snapshot(tb, "Research", 800)
        out["addressbooks"] = [b for b in snap["addressbooks"] if b["url"]]
        out["contactPane"] = snap.get("contactPane")
        out["dialogs"] = snap["dialogs"]
        tb.screenshot(os.path.join(work, "vcards.png"))
        before = len(dav.requests)
        out["edit"] = tb.js(EDIT_JS)
        out["puts"] = dav.puts
        out["requestsAfterEdit"] = dav.requests[before:]
        out["photoFetches"] = [r for r in dav.requests if r["path"] == "/photo.jpg"]
    finally:
        tb.close()
    return out


# ---------------------------------------------------------------------------
SENTENCE = ("Apple refused the app-specific password for alice@icloud.com. "
            "Make a new one at https://account.apple.com and run icloud-bridge reconnect.")

VARIANTS = {
    # name: (untagged lines before the tagged reply, tagged reply after the tag)
    "alert+no-unavailable-same": ([f"* OK [ALERT] {SENTENCE}"], f"NO [UNAVAILABLE] {SENTENCE}"),
    "alert+no-unavailable-short": ([f"* OK [ALERT] {SENTENCE}"],
                                   "NO [UNAVAILABLE] iCloud refused the password (see the alert)"),
    "no-alert-only": ([], f"NO [ALERT] {SENTENCE}"),
    "no-unavailable-only": ([], f"NO [UNAVAILABLE] {SENTENCE}"),
    "no-authenticationfailed": ([], f"NO [AUTHENTICATIONFAILED] {SENTENCE}"),
    "alert+no-plain": ([f"* OK [ALERT] {SENTENCE}"], "NO LOGIN failed"),
    "no-unavailable-dot": ([], "NO [UNAVAILABLE] ."),
    "no-contactadmin": ([], f"NO [CONTACTADMIN] {SENTENCE}"),
    "no-unavailable-alert-both": ([], f"NO [UNAVAILABLE] [ALERT] {SENTENCE}"),
    "untagged-no-alert+no-unavailable": ([f"* NO [ALERT] {SENTENCE}"], f"NO [UNAVAILABLE] {SENTENCE}"),
}


class FakeImap(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, variant):
        self.variant = variant
        self.log = []
        pre, tagged = VARIANTS[variant]
        srv = self

        class H(socketserver.StreamRequestHandler):
            def handle(self):
                def send(line):
                    srv.log.append("S: " + line)
                    self.wfile.write(line.encode() + b"\r\n")
                    self.wfile.flush()
                send("* OK [CAPABILITY IMAP4rev1 LITERAL+ ID] fake ready")
                while True:
                    line = self.rfile.readline()
                    if not line:
                        return
                    line = line.decode("utf-8", "replace").rstrip("\r\n")
                    parts = line.split(" ", 2)
                    tag, cmd = parts[0], (parts[1].upper() if len(parts) > 1 else "")
                    srv.log.append("C: " + (line if cmd != "LOGIN" else f"{tag} LOGIN ..."))
                    if cmd == "CAPABILITY":
                        send("* CAPABILITY IMAP4rev1 LITERAL+ ID")
                        send(f"{tag} OK done")
                    elif cmd == "ID":
                        send('* ID ("name" "fake")')
                        send(f"{tag} OK done")
                    elif cmd in ("LOGIN", "AUTHENTICATE"):
                        for p in pre:
                            send(p)
                        send(f"{tag} {tagged}")
                    elif cmd == "LOGOUT":
                        send("* BYE bye")
                        send(f"{tag} OK done")
                        return
                    elif cmd == "NOOP":
                        send(f"{tag} OK done")
                    else:
                        send(f"{tag} BAD not now")

        super().__init__(("127.0.0.1", 0), H)
        self.port = self.server_address[1]
        threading.Thread(target=self.serve_forever, daemon=True).start()


IMAP_TRIGGER_JS = r"""
// "Get Messages" for the account on this port; the outcome is read later from the recorder
// (a modal alert makes an async script's result get lost).
const [port] = arguments;
const { MailServices } = ChromeUtils.importESModule("resource:///modules/MailServices.sys.mjs");
const main = Services.wm.getMostRecentWindow("mail:3pane");
const srv = MailServices.accounts.allServers.find(s => s.type == "imap" && s.port == port);
const { setTimeout } = ChromeUtils.importESModule("resource://gre/modules/Timer.sys.mjs");
setTimeout(() => srv.getNewMessages(
  srv.rootFolder.getFolderWithFlags(Ci.nsMsgFolderFlags.Inbox) || srv.rootFolder, main.msgWindow, null), 10);
return true;
"""

STATE_JS = r"""
const am = Cc["@mozilla.org/activity-manager;1"].getService(Ci.nsIActivityManager);
return JSON.stringify({ rec: Services.__tb, warnings: am.getActivities()
  .filter(a => a instanceof Ci.nsIActivityWarning).map(a => a.displayText) });
"""


def research_imap(work, variants, human=False):
    servers = {v: FakeImap(v) for v in variants}
    tb = tbm.Thunderbird(os.path.join(work, "imap"))
    out = {}
    try:
        for v, s in servers.items():
            tb.js(tbm.IMAP_SETUP_JS, "127.0.0.1", s.port, "user-" + v, "pw", "a@example.com")
        if human:
            # A person reads a modal alert for longer than alertHook's 5 s de-duplication.
            tb.m.execute_script("Services.__tb.cancelMs = 8000; return true;")
        for v, s in servers.items():
            before = json.loads(tb.m.execute_script(STATE_JS))
            tb.m.execute_script(IMAP_TRIGGER_JS, script_args=[s.port])
            time.sleep(40 if human else 12)
            after = json.loads(tb.m.execute_script(STATE_JS))
            r = {k: after["rec"][k][len(before["rec"][k]):] for k in ("dialogs", "alerts", "windows")}
            r["windows"] = [w for w in r["windows"] if "commonDialog" not in str(w.get("url"))]
            r["activityWarnings"] = after["warnings"][len(before["warnings"]):]
            r["server"] = s.log
            out[v] = r
            tbm.log(v, "dialogs", len(r["dialogs"]), "alerts", len(r["alerts"]))
            time.sleep(6)  # past alertHook's 5 s window for identical alerts
    finally:
        tb.close()
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["vcards", "imap"])
    ap.add_argument("--work", default=None)
    ap.add_argument("--variant", action="append")
    ap.add_argument("--human", action="store_true",
                    help="dismiss each dialog after 8 s instead of 0.5 s")
    a = ap.parse_args()
    work = a.work or tempfile.mkdtemp(prefix="tb-research-")
    import signal
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if a.what == "vcards":
        out = research_vcards(work)
    else:
        out = research_imap(work, a.variant or list(VARIANTS), a.human)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
