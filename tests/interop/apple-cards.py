#!/usr/bin/env python3
"""Apple's vCards through the bridge and back with vdirsyncer: nothing lost on iCloud's side.

  apple-cards.py --bridge URL --user U --password P --control URL --work DIR

The bridge at URL serves the iCloud stand-in whose control port is at --control. Three cards
are put into iCloud's address book in Apple's own forms (a birthday and an anniversary without
a year, `X-APPLE-OMIT-YEAR=1604`; a group with `X-ADDRESSBOOKSERVER-KIND/-MEMBER`; a photo
iCloud keeps by URL). vdirsyncer syncs the address book down through the bridge; the local
copies must be in the forms clients read (`--MM-DD`, `KIND:group` + `MEMBER`, the photo inline).
Then every card's FN is edited locally and vdirsyncer syncs up: iCloud's copies must differ
from before in FN alone (same yearless dates, same group lines, the same photo reference).
Prints one line per check and exits 1 if any failed.
"""
import argparse
import base64
import os
import re
import subprocess
import sys
import urllib.parse
import urllib.request

VDIR = os.path.join(os.path.dirname(sys.executable), "vdirsyncer")
BOOK = "carddavhome/card"
FAILED = []

# A few bytes that start like a JPEG: the bridge inlines what iCloud serves, it decodes nothing.
PHOTO = base64.b64encode(bytes([0xFF, 0xD8, 0xFF, 0xE0, 0, 16]) + b"JFIF apple-cards").decode()

CARDS = {
    "ac-bday.vcf": "\r\n".join([
        "BEGIN:VCARD", "VERSION:3.0", "PRODID:-//Apple Inc.//iOS 17.0//EN",
        "N:Yearless;Yola;;;", "FN:Yola Yearless",
        "BDAY;X-APPLE-OMIT-YEAR=1604:1604-03-14",
        "item1.X-ABDATE;X-APPLE-OMIT-YEAR=1604:1604-06-20",
        "item1.X-ABLabel:_$!<Anniversary>!$_",
        "UID:ac-bday", "END:VCARD", ""]),
    "ac-group.vcf": "\r\n".join([
        "BEGIN:VCARD", "VERSION:3.0", "PRODID:-//Apple Inc.//iOS 17.0//EN",
        "N:Climbing;;;;", "FN:Climbing",
        "X-ADDRESSBOOKSERVER-KIND:group",
        "X-ADDRESSBOOKSERVER-MEMBER:urn:uuid:ac-bday",
        "X-ADDRESSBOOKSERVER-MEMBER:urn:uuid:ac-photo",
        "UID:ac-group", "END:VCARD", ""]),
    "ac-photo.vcf": "\r\n".join([
        "BEGIN:VCARD", "VERSION:3.0", "PRODID:-//Apple Inc.//iOS 17.0//EN",
        "N:Portrait;Pia;;;", "FN:Pia Portrait",
        f"PHOTO;ENCODING=b;TYPE=JPEG:{PHOTO}",
        "UID:ac-photo", "END:VCARD", ""]),
}


def check(ok, what):
    print(("ok    " if ok else "FAIL  ") + what, flush=True)
    if not ok:
        FAILED.append(what)


def control(base, path, method="GET", body=None, **q):
    url = base.rstrip("/") + path + "?" + urllib.parse.urlencode(q)
    req = urllib.request.Request(url, data=body, method=method)
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.read().decode()


def unfolded_lines(text):
    text = re.sub(r"\r?\n[ \t]", "", text)
    return [ln for ln in text.replace("\r\n", "\n").split("\n") if ln]


def vd(cfg, *args):
    p = subprocess.run([VDIR, "-c", cfg, *args], input=b"y\n" * 10, capture_output=True,
                       timeout=120)
    if p.returncode != 0:
        print((p.stdout + p.stderr).decode(errors="replace")[-3000:])
        raise SystemExit(f"vdirsyncer {' '.join(args)} failed rc={p.returncode}")


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    for name in ("--bridge", "--user", "--password", "--control", "--work"):
        ap.add_argument(name, required=True)
    a = ap.parse_args()

    for name, body in CARDS.items():
        control(a.control, "/object", "POST", body.encode(), collection=BOOK, name=name)
    before = {n: control(a.control, "/object", collection=BOOK, name=n) for n in CARDS}
    check("PHOTO;VALUE=uri" in before["ac-photo.vcf"], "iCloud keeps the photo by URL")

    os.makedirs(os.path.join(a.work, "contacts"), exist_ok=True)
    cfg = os.path.join(a.work, "config")
    root = a.bridge.rstrip("/") + "/dav/"
    with open(cfg, "w") as f:
        f.write(f"""[general]
status_path = "{a.work}/status/"

[pair book]
a = "book_local"
b = "book_remote"
collections = ["card"]
conflict_resolution = "b wins"

[storage book_local]
type = "filesystem"
path = "{a.work}/contacts/"
fileext = ".vcf"

[storage book_remote]
type = "carddav"
url = "{root}"
username = "{a.user}"
password = "{a.password}"
""")
    vd(cfg, "discover")
    vd(cfg, "sync")
    local_dir = os.path.join(a.work, "contacts", "card")
    local = {}
    for fn in os.listdir(local_dir):
        text = open(os.path.join(local_dir, fn), encoding="utf-8", newline="").read()
        uid = re.search(r"^UID:(.*?)\r?$", text, re.M)
        if uid and uid.group(1).startswith("ac-"):
            local[uid.group(1)] = (os.path.join(local_dir, fn), text)
    check(len(local) == 3, f"vdirsyncer brought the three cards down ({sorted(local)})")
    bday = "\n".join(unfolded_lines(local.get("ac-bday", ("", ""))[1]))
    check("BDAY:--03-14" in bday and "1604" not in bday,
          "the birthday without a year arrives as --03-14, no 1604")
    group = "\n".join(unfolded_lines(local.get("ac-group", ("", ""))[1]))
    check("KIND:group" in group and group.count("MEMBER:urn:uuid:") == 2
          and "X-ADDRESSBOOKSERVER" not in group, "the group arrives as KIND:group + 2 MEMBERs")
    photo = "\n".join(unfolded_lines(local.get("ac-photo", ("", ""))[1]))
    inline = re.search(r"^PHOTO;ENCODING=b;TYPE=JPEG[^:\n]*:(.*)$", photo, re.M)
    check(bool(inline) and inline.group(1) == PHOTO and "/_up/" not in photo,
          "the photo arrives inline, no link that needs a login")

    for uid, (path, text) in local.items():
        text = re.sub(r"^FN:(.*?)(\r?)$", r"FN:\1 [edited]\2", text, count=1, flags=re.M)
        with open(path, "w", encoding="utf-8", newline="") as f:
            f.write(text)
    vd(cfg, "sync")

    after = {n: control(a.control, "/object", collection=BOOK, name=n) for n in CARDS}
    for name in CARDS:
        b = [ln for ln in unfolded_lines(before[name]) if not ln.startswith(("FN:", "REV:"))]
        c = [ln for ln in unfolded_lines(after[name]) if not ln.startswith(("FN:", "REV:"))]
        fn = [ln for ln in unfolded_lines(after[name]) if ln.startswith("FN:")]
        check(fn and fn[0].endswith("[edited]"), f"{name}: the edit reached iCloud ({fn})")
        norm = lambda lines: sorted(ln.replace(";VALUE=date", "") for ln in lines)  # noqa: E731
        check(norm(b) == norm(c), f"{name}: iCloud's copy is otherwise unchanged "
                                  f"(only before: {sorted(set(b) - set(c))[:3]}, "
                                  f"only after: {sorted(set(c) - set(b))[:3]})")
    if FAILED:
        print(f"{len(FAILED)} check(s) failed", flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
