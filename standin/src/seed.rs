//! Seed data for `StandinConfig::demo()`: a few events, a task, person and group vCards.

use crate::config::{ObjectSpec, DEMO_HEX_CALENDAR, DEMO_UUID_CALENDAR};
use base64::Engine;

/// A small 16×16 baseline JPEG (a blue gradient) used as the seeded contact photo: baseline
/// Huffman coding, which every client decodes (Thunderbird shows no arithmetic-coded JPEG).
pub const DEMO_JPEG: &[u8] = &[
    0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x10, 0x4A, 0x46, 0x49, 0x46, 0x00, 0x01, 0x01, 0x00, 0x00, 0x01,
    0x00, 0x01, 0x00, 0x00, 0xFF, 0xDB, 0x00, 0x43, 0x00, 0x06, 0x04, 0x05, 0x06, 0x05, 0x04, 0x06,
    0x06, 0x05, 0x06, 0x07, 0x07, 0x06, 0x08, 0x0A, 0x10, 0x0A, 0x0A, 0x09, 0x09, 0x0A, 0x14, 0x0E,
    0x0F, 0x0C, 0x10, 0x17, 0x14, 0x18, 0x18, 0x17, 0x14, 0x16, 0x16, 0x1A, 0x1D, 0x25, 0x1F, 0x1A,
    0x1B, 0x23, 0x1C, 0x16, 0x16, 0x20, 0x2C, 0x20, 0x23, 0x26, 0x27, 0x29, 0x2A, 0x29, 0x19, 0x1F,
    0x2D, 0x30, 0x2D, 0x28, 0x30, 0x25, 0x28, 0x29, 0x28, 0xFF, 0xDB, 0x00, 0x43, 0x01, 0x07, 0x07,
    0x07, 0x0A, 0x08, 0x0A, 0x13, 0x0A, 0x0A, 0x13, 0x28, 0x1A, 0x16, 0x1A, 0x28, 0x28, 0x28, 0x28,
    0x28, 0x28, 0x28, 0x28, 0x28, 0x28, 0x28, 0x28, 0x28, 0x28, 0x28, 0x28, 0x28, 0x28, 0x28, 0x28,
    0x28, 0x28, 0x28, 0x28, 0x28, 0x28, 0x28, 0x28, 0x28, 0x28, 0x28, 0x28, 0x28, 0x28, 0x28, 0x28,
    0x28, 0x28, 0x28, 0x28, 0x28, 0x28, 0x28, 0x28, 0x28, 0x28, 0x28, 0x28, 0x28, 0x28, 0xFF, 0xC0,
    0x00, 0x11, 0x08, 0x00, 0x10, 0x00, 0x10, 0x03, 0x01, 0x22, 0x00, 0x02, 0x11, 0x01, 0x03, 0x11,
    0x01, 0xFF, 0xC4, 0x00, 0x16, 0x00, 0x01, 0x01, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x04, 0x06, 0xFF, 0xC4, 0x00, 0x17, 0x10, 0x00, 0x03,
    0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x14,
    0x61, 0x62, 0xFF, 0xC4, 0x00, 0x14, 0x01, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x06, 0xFF, 0xC4, 0x00, 0x15, 0x11, 0x01, 0x01, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x13, 0xFF,
    0xDA, 0x00, 0x0C, 0x03, 0x01, 0x00, 0x02, 0x11, 0x03, 0x11, 0x00, 0x3F, 0x00, 0x81, 0xFD, 0x07,
    0xF4, 0x64, 0xDF, 0xA1, 0xFA, 0x2C, 0xB0, 0xC4, 0x9F, 0xFF, 0xD9,
];

fn crlf(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 64);
    for line in s.lines() {
        let line = line.trim_start();
        if line.is_empty() {
            continue;
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    out
}

fn obj(collection: &str, name: &str, body: &str) -> ObjectSpec {
    ObjectSpec {
        collection: collection.to_string(),
        name: name.to_string(),
        body: crlf(body),
    }
}

/// The demo account's objects.
pub fn demo_objects() -> Vec<ObjectSpec> {
    let photo = base64::engine::general_purpose::STANDARD.encode(DEMO_JPEG);
    let fam = format!("calendars/{DEMO_UUID_CALENDAR}");
    let hol = format!("calendars/{DEMO_HEX_CALENDAR}");
    vec![
        obj(
            "calendars/home",
            "abc@example.com.ics",
            "BEGIN:VCALENDAR
            VERSION:2.0
            PRODID:-//Apple Inc.//iPhone OS 17.6.1//EN
            CALSCALE:GREGORIAN
            BEGIN:VEVENT
            UID:abc@example.com
            DTSTAMP:20260105T090000Z
            DTSTART:20260110T100000Z
            DTEND:20260110T110000Z
            SUMMARY:Dentist
            LOCATION:Main Street 1
            X-APPLE-CREATOR-IDENTITY:com.apple.mobilecal
            X-APPLE-CREATOR-TEAM-IDENTITY:0000000000
            END:VEVENT
            END:VCALENDAR",
        ),
        obj(
            "calendars/home",
            "1761bf8c-6363-11eb-8fe4-74e5f9bfd8c1.ics",
            "BEGIN:VCALENDAR
            VERSION:2.0
            PRODID:-//Apple Inc.//iPhone OS 17.6.1//EN
            BEGIN:VEVENT
            UID:1761bf8c-6363-11eb-8fe4-74e5f9bfd8c1
            DTSTAMP:20260101T080000Z
            DTSTART:20260105T073000Z
            DTEND:20260105T080000Z
            RRULE:FREQ=WEEKLY;COUNT=10
            SUMMARY:Morning run
            END:VEVENT
            BEGIN:VEVENT
            UID:1761bf8c-6363-11eb-8fe4-74e5f9bfd8c1
            DTSTAMP:20260101T080000Z
            RECURRENCE-ID:20260119T073000Z
            DTSTART:20260119T090000Z
            DTEND:20260119T093000Z
            SUMMARY:Morning run (late start)
            RELATED-TO;RELTYPE=X-CALENDARSERVER-RECURRENCE-SET:a8c1e2f0-0000-4000-8000-000000000001
            END:VEVENT
            END:VCALENDAR",
        ),
        obj(
            "calendars/work",
            "5A3C2B1D-0F9E-4D8C-B7A6-1E2F3D4C5B6A.ics",
            "BEGIN:VCALENDAR
            VERSION:2.0
            PRODID:-//Apple Inc.//Mac OS X 14.5//EN
            BEGIN:VEVENT
            UID:5A3C2B1D-0F9E-4D8C-B7A6-1E2F3D4C5B6A
            DTSTAMP:20260102T120000Z
            DTSTART:20260112T140000Z
            DURATION:PT1H
            SUMMARY:Quarterly planning
            END:VEVENT
            END:VCALENDAR",
        ),
        obj(
            "calendars/work",
            "allday-offsite.ics",
            "BEGIN:VCALENDAR
            VERSION:2.0
            PRODID:-//Apple Inc.//Mac OS X 14.5//EN
            BEGIN:VEVENT
            UID:allday-offsite
            DTSTAMP:20260102T120000Z
            DTSTART;VALUE=DATE:20260120
            DTEND;VALUE=DATE:20260122
            SUMMARY:Team offsite
            END:VEVENT
            END:VCALENDAR",
        ),
        obj(
            &fam,
            "birthday-bob.ics",
            "BEGIN:VCALENDAR
            VERSION:2.0
            PRODID:-//Apple Inc.//iPhone OS 17.6.1//EN
            BEGIN:VEVENT
            UID:birthday-bob
            DTSTAMP:20250101T000000Z
            DTSTART;VALUE=DATE:20260314
            DTEND;VALUE=DATE:20260315
            RRULE:FREQ=YEARLY
            SUMMARY:Bob's birthday
            END:VEVENT
            END:VCALENDAR",
        ),
        obj(
            &hol,
            "new-year.ics",
            "BEGIN:VCALENDAR
            VERSION:2.0
            PRODID:-//Apple Inc.//iPhone OS 17.6.1//EN
            BEGIN:VEVENT
            UID:new-year-2027
            DTSTAMP:20250101T000000Z
            DTSTART;VALUE=DATE:20270101
            DTEND;VALUE=DATE:20270102
            SUMMARY:New Year's Day
            END:VEVENT
            END:VCALENDAR",
        ),
        obj(
            "calendars/tasks",
            "task-1.ics",
            "BEGIN:VCALENDAR
            VERSION:2.0
            PRODID:-//Apple Inc.//iPhone OS 12.4//EN
            BEGIN:VTODO
            UID:task-1
            DTSTAMP:20190101T000000Z
            SUMMARY:Buy milk
            STATUS:NEEDS-ACTION
            END:VTODO
            END:VCALENDAR",
        ),
        obj(
            "carddavhome/card",
            "bob.vcf",
            &format!(
                "BEGIN:VCARD
                VERSION:3.0
                PRODID:-//Apple Inc.//iOS 12.0//EN
                N:Builder;Bob;;;
                FN:Bob Builder
                ORG:Builder Ltd;
                TEL;type=CELL;type=VOICE;type=pref:+1 555 0100
                EMAIL;type=INTERNET;type=HOME;type=pref:bob@example.com
                BDAY;X-APPLE-OMIT-YEAR=1604:1604-03-14
                PHOTO;ENCODING=b;TYPE=JPEG:{photo}
                UID:7c1f0c2e-1b2a-4d3c-9e8f-0a1b2c3d4e5f
                REV:2026-01-01T10:00:00Z
                END:VCARD"
            ),
        ),
        obj(
            "carddavhome/card",
            "carol.vcf",
            "BEGIN:VCARD
            VERSION:3.0
            PRODID:-//Apple Inc.//iCloud Web Address Book 2601B10//EN
            N:Jones;Carol;;;
            FN:Carol Jones
            item1.EMAIL;type=INTERNET;type=pref:carol@work.example
            item1.X-ABLabel:_$!<Other>!$_
            item2.URL;type=pref:https://carol.example
            item2.X-ABLabel:blog
            UID:2d4f6a8c-0e1f-4a3b-8c5d-6e7f8a9b0c1d
            REV:2026-01-02T10:00:00Z
            END:VCARD",
        ),
        obj(
            "carddavhome/card",
            "dave.vcf",
            "BEGIN:VCARD
            VERSION:3.0
            PRODID:-//Apple Inc.//AddressBookCore 1.0//EN
            N:Smith;Dave;;;
            FN:Dave Smith
            TEL;type=HOME;type=VOICE:+1 555 0199
            UID:9a8b7c6d-5e4f-4a3b-2c1d-0e9f8a7b6c5d
            REV:2026-01-03T10:00:00Z
            END:VCARD",
        ),
        obj(
            "carddavhome/card",
            "friends-group.vcf",
            "BEGIN:VCARD
            VERSION:3.0
            PRODID:-//Apple Inc.//AddressBook 6.1//EN
            N:Friends
            FN:Friends
            X-ADDRESSBOOKSERVER-KIND:group
            X-ADDRESSBOOKSERVER-MEMBER:urn:uuid:7c1f0c2e-1b2a-4d3c-9e8f-0a1b2c3d4e5f
            X-ADDRESSBOOKSERVER-MEMBER:urn:uuid:2d4f6a8c-0e1f-4a3b-8c5d-6e7f8a9b0c1d
            UID:f0e1d2c3-b4a5-4968-8776-655443322110
            REV:2026-01-04T10:00:00Z
            END:VCARD",
        ),
    ]
}
