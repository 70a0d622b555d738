#!/usr/bin/env python3
"""Generate deterministic calendar and contact test data (standard library only).

  gen-data.py events N DIR   N .ics files (one VEVENT each; every 10th recurs,
                             every 7th is all-day, every 5th uses a TZID+VTIMEZONE)
  gen-data.py vcards N DIR   N .vcf files (vCard 3.0)
  gen-data.py mail   N DIR   N RFC 5322 messages into the Maildir DIR (every 8th with a
                             2 KB attachment; --big K: every K-th one with a --big-size
                             attachment, 1 MiB by default, base64-encoded)

Options: --seed S (default 1), --prefix P (prefix of UIDs / file names,
default "tb"), --start YYYY-MM-DD (first event day, default 2026-01-05).
File names are <prefix>-<kind>-<i>.{ics,vcf}; UIDs are <prefix>-<kind>-<i>@testbed.
Prints the number of files written.
"""
import argparse
import base64
import datetime as dt
import os
import random
import sys

FIRST = ["Ada", "Alan", "Grace", "Linus", "Barbara", "Ken", "Margaret", "Dennis",
         "Frances", "Edsger", "Radia", "Tim", "Hedy", "Donald", "Sophie", "Niklaus",
         "Jürgen", "Zoë", "Åsa", "José"]
LAST = ["Lovelace", "Turing", "Hopper", "Torvalds", "Liskov", "Thompson",
        "Hamilton", "Ritchie", "Allen", "Dijkstra", "Perlman", "Berners-Lee",
        "Lamarr", "Knuth", "Wilson", "Wirth", "Müller", "O'Brien", "Ødegård", "Núñez"]
WORDS = ["planning", "review", "standup", "retro", "lunch", "dentist", "flight",
         "call", "workshop", "demo", "sync", "1:1", "offsite", "gym", "concert",
         "birthday", "deadline", "interview", "budget", "release"]
PLACES = ["Room 1", "Café Zentral", "Online", "HQ, 3rd floor", "Gate B12", ""]

VTIMEZONE_BERLIN = """BEGIN:VTIMEZONE
TZID:Europe/Berlin
BEGIN:DAYLIGHT
TZOFFSETFROM:+0100
TZOFFSETTO:+0200
TZNAME:CEST
DTSTART:19700329T020000
RRULE:FREQ=YEARLY;BYMONTH=3;BYDAY=-1SU
END:DAYLIGHT
BEGIN:STANDARD
TZOFFSETFROM:+0200
TZOFFSETTO:+0100
TZNAME:CET
DTSTART:19701025T030000
RRULE:FREQ=YEARLY;BYMONTH=10;BYDAY=-1SU
END:STANDARD
END:VTIMEZONE"""


def fold(line):
    """Fold a content line at 75 octets (RFC 5545 3.1 / RFC 6350 3.2)."""
    raw = line.encode("utf-8")
    if len(raw) <= 75:
        return line
    out, cur, limit = [], b"", 75
    for ch in line:
        b = ch.encode("utf-8")
        if len(cur) + len(b) > limit:
            out.append(cur.decode("utf-8"))
            cur, limit = b"", 74
        cur += b
    out.append(cur.decode("utf-8"))
    return "\r\n ".join(out)


def esc(text):
    return (text.replace("\\", "\\\\").replace(";", "\\;")
            .replace(",", "\\,").replace("\n", "\\n"))


def crlf(lines):
    return "\r\n".join(fold(line) for line in lines) + "\r\n"


def stamp(t):
    return t.strftime("%Y%m%dT%H%M%SZ")


def gen_events(n, outdir, rnd, prefix, start):
    os.makedirs(outdir, exist_ok=True)
    dtstamp = dt.datetime(2026, 1, 1, 12, 0, 0)
    for i in range(n):
        uid = f"{prefix}-event-{i:05d}@testbed"
        day = start + dt.timedelta(days=i // 4)
        hour = 8 + (i % 4) * 2 + rnd.randint(0, 1)
        title = f"{rnd.choice(WORDS).capitalize()} {rnd.choice(WORDS)} #{i}"
        desc = (f"Generated event {i}.\nAgenda: {', '.join(rnd.sample(WORDS, 3))}; "
                f"owner {rnd.choice(FIRST)} {rnd.choice(LAST)}.")
        lines = ["BEGIN:VCALENDAR", "VERSION:2.0",
                 "PRODID:-//Testbed//gen-data//EN", "CALSCALE:GREGORIAN"]
        use_tz = i % 5 == 0 and i % 7 != 0
        if use_tz:
            lines += VTIMEZONE_BERLIN.split("\n")
        lines += ["BEGIN:VEVENT", f"UID:{uid}", f"DTSTAMP:{stamp(dtstamp)}",
                  f"CREATED:{stamp(dtstamp)}", f"LAST-MODIFIED:{stamp(dtstamp)}",
                  "SEQUENCE:0"]
        if i % 7 == 0:
            lines += [f"DTSTART;VALUE=DATE:{day:%Y%m%d}",
                      f"DTEND;VALUE=DATE:{day + dt.timedelta(days=1):%Y%m%d}",
                      "TRANSP:TRANSPARENT"]
        else:
            s = dt.datetime.combine(day, dt.time(hour, rnd.choice([0, 15, 30, 45])))
            e = s + dt.timedelta(minutes=rnd.choice([15, 30, 45, 60, 90]))
            if use_tz:
                lines += [f"DTSTART;TZID=Europe/Berlin:{s:%Y%m%dT%H%M%S}",
                          f"DTEND;TZID=Europe/Berlin:{e:%Y%m%dT%H%M%S}"]
            else:
                lines += [f"DTSTART:{stamp(s)}", f"DTEND:{stamp(e)}"]
        if i % 10 == 0:
            lines.append(rnd.choice(["RRULE:FREQ=WEEKLY;COUNT=10",
                                     "RRULE:FREQ=DAILY;INTERVAL=2;COUNT=5",
                                     "RRULE:FREQ=MONTHLY;BYMONTHDAY=15;COUNT=6"]))
        lines += [f"SUMMARY:{esc(title)}", f"DESCRIPTION:{esc(desc)}"]
        place = rnd.choice(PLACES)
        if place:
            lines.append(f"LOCATION:{esc(place)}")
        if i % 6 == 0:
            lines += ["BEGIN:VALARM", "ACTION:DISPLAY", "DESCRIPTION:Reminder",
                      "TRIGGER:-PT15M", "END:VALARM"]
        lines += ["END:VEVENT", "END:VCALENDAR"]
        with open(os.path.join(outdir, f"{prefix}-event-{i:05d}.ics"), "w",
                  encoding="utf-8", newline="") as f:
            f.write(crlf(lines))
    return n


def gen_vcards(n, outdir, rnd, prefix):
    os.makedirs(outdir, exist_ok=True)
    for i in range(n):
        uid = f"{prefix}-card-{i:05d}@testbed"
        first, last = rnd.choice(FIRST), rnd.choice(LAST)
        mail = f"{first}.{last}{i}".lower().encode("ascii", "ignore").decode()
        mail = "".join(c for c in mail if c.isalnum() or c == ".") + "@example.org"
        lines = ["BEGIN:VCARD", "VERSION:3.0", "PRODID:-//Testbed//gen-data//EN",
                 f"UID:{uid}", f"FN:{esc(first + ' ' + last)}",
                 f"N:{esc(last)};{esc(first)};;;",
                 f"EMAIL;TYPE=INTERNET;TYPE=HOME:{mail}",
                 f"TEL;TYPE=CELL:+49 170 {rnd.randint(1000000, 9999999)}"]
        if i % 3 == 0:
            lines += [f"ORG:{esc(rnd.choice(LAST))} GmbH;Engineering",
                      f"TITLE:{esc(rnd.choice(WORDS).capitalize())} lead"]
        if i % 4 == 0:
            lines.append(f"ADR;TYPE=HOME:;;{rnd.randint(1, 200)} Main St;Springfield;;"
                         f"{rnd.randint(10000, 99999)};Country")
        if i % 5 == 0:
            lines.append(f"BDAY:{1950 + rnd.randint(0, 50)}-{rnd.randint(1, 12):02d}-"
                         f"{rnd.randint(1, 28):02d}")
        if i % 9 == 0:
            lines.append(f"NOTE:{esc('Generated contact ' + str(i) + ', met at ' + rnd.choice(PLACES or ['x']))}")
        lines.append(f"REV:{stamp(dt.datetime(2026, 1, 1, 12, 0, 0))}")
        lines.append("END:VCARD")
        with open(os.path.join(outdir, f"{prefix}-card-{i:05d}.vcf"), "w",
                  encoding="utf-8", newline="") as f:
            f.write(crlf(lines))
    return n


def gen_mail(n, maildir, rnd, prefix, big=0, big_size=1 << 20):
    for sub in ("cur", "new", "tmp"):
        os.makedirs(os.path.join(maildir, sub), exist_ok=True)
    when0 = dt.datetime(2026, 1, 5, 9, 0, 0, tzinfo=dt.timezone.utc)
    for i in range(n):
        when = when0 + dt.timedelta(minutes=37 * i)
        frm = f"{rnd.choice(FIRST)} {rnd.choice(LAST)}"
        subject = f"{rnd.choice(WORDS).capitalize()} {rnd.choice(WORDS)} #{i}"
        body_lines = [f"Message {i} of {n}.", ""] + [
            " ".join(rnd.choice(WORDS) for _ in range(12)) for _ in range(rnd.randint(3, 40))]
        body = "\r\n".join(body_lines) + "\r\n"
        hdr = [f"From: \"{frm}\" <sender{i % 17}@example.org>",
               "To: Test User <test@example.net>",
               f"Subject: {subject}",
               f"Date: {when.strftime('%a, %d %b %Y %H:%M:%S +0000')}",
               f"Message-ID: <{prefix}-mail-{i:05d}@testbed>",
               "MIME-Version: 1.0"]
        att_size = big_size if big and i % big == 0 else (2048 if i % 8 == 0 else 0)
        if att_size:
            boundary = f"=_tb_{i:05d}"
            att = base64.encodebytes(rnd.randbytes(att_size)).decode()
            hdr.append(f"Content-Type: multipart/mixed; boundary=\"{boundary}\"")
            msg = "\r\n".join(hdr) + "\r\n\r\n" + (
                f"--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{body}"
                f"--{boundary}\r\nContent-Type: application/octet-stream; name=\"data{i}.bin\"\r\n"
                "Content-Transfer-Encoding: base64\r\n"
                f"Content-Disposition: attachment; filename=\"data{i}.bin\"\r\n\r\n"
                + att.replace("\n", "\r\n") + f"--{boundary}--\r\n")
        else:
            hdr.append("Content-Type: text/plain; charset=utf-8")
            msg = "\r\n".join(hdr) + "\r\n\r\n" + body
        data = msg.encode("utf-8")
        flags = "S" if i % 3 == 0 else ""
        name = f"{1767600000 + i}.M{i}P1.testbed,S={len(data)}:2,{flags}"
        path = os.path.join(maildir, "cur", name)
        with open(path, "wb") as f:
            f.write(data)
        ts = when.timestamp()
        os.utime(path, (ts, ts))
    return n


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("kind", choices=["events", "vcards", "mail"])
    ap.add_argument("count", type=int)
    ap.add_argument("dir")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--prefix", default="tb")
    ap.add_argument("--start", default="2026-01-05")
    ap.add_argument("--big", type=int, default=0)
    ap.add_argument("--big-size", type=int, default=1 << 20)
    a = ap.parse_args()
    rnd = random.Random(a.seed)
    if a.kind == "events":
        n = gen_events(a.count, a.dir, rnd, a.prefix, dt.date.fromisoformat(a.start))
    elif a.kind == "mail":
        n = gen_mail(a.count, a.dir, rnd, a.prefix, a.big, a.big_size)
    else:
        n = gen_vcards(a.count, a.dir, rnd, a.prefix)
    print(n)


if __name__ == "__main__":
    sys.exit(main())
