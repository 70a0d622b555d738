//! End-to-end: the iCloud stand-in and a real bridge on loopback, driven with real DAV
//! traffic the way DAVx5, Thunderbird and vdirsyncer drive it.

mod support;

use icloud_bridge::standin::{DEMO_APPLE_ID, DEMO_APP_PASSWORD};
use support::*;

#[tokio::test]
async fn discovery_from_the_root_url_finds_both_homes() {
    let env = start().await;
    // No credentials: a normal 401 with the bridge's own realm, never Apple's.
    let r = env
        .http
        .request(
            reqwest::Method::from_bytes(b"PROPFIND").unwrap(),
            env.url("/"),
        )
        .header("Depth", "0")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let challenge = r.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(challenge.contains("realm=\"icloud-bridge\""), "{challenge}");

    // DAVx5: /.well-known/caldav, then the principal, then the homes.
    for wk in ["/.well-known/caldav", "/.well-known/carddav", "/"] {
        let (s, body) = env.propfind(wk, "0", PROPFIND_PRINCIPAL).await;
        assert_eq!(s, 207, "{wk}: {body}");
        assert!(body.contains("/dav/alice/principal/"), "{wk}: {body}");
    }
    let (s, body) = env
        .propfind("/dav/alice/principal/", "0", PROPFIND_HOMES)
        .await;
    assert_eq!(s, 207);
    assert!(
        body.contains("<d:href>/dav/alice/calendars/</d:href>"),
        "{body}"
    );
    assert!(
        body.contains("<d:href>/dav/alice/contacts/</d:href>"),
        "{body}"
    );
    assert!(body.contains("mailto:"), "{body}");
    env.assert_no_leak("principal", &body);

    // DAVx5 accepts a principal only if OPTIONS advertises the services.
    let r = env
        .req("OPTIONS", "/dav/alice/principal/")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let dav = r.headers()["dav"].to_str().unwrap();
    assert!(
        dav.contains("calendar-access") && dav.contains("addressbook"),
        "{dav}"
    );

    // A plain GET on the well-known URL redirects to the root.
    let r = env.req("GET", "/.well-known/caldav").send().await.unwrap();
    assert_eq!(r.status(), 301);
    env.stop().await;
}

#[tokio::test]
async fn lists_every_calendar_and_exactly_one_address_book() {
    let env = start().await;
    let (s, body) = env
        .propfind("/dav/alice/calendars/", "1", PROPFIND_LIST)
        .await;
    assert_eq!(s, 207, "{body}");
    let hs = hrefs(&body);
    for cal in ["home/", "work/", "tasks/"] {
        assert!(
            hs.iter()
                .any(|h| h == &format!("/dav/alice/calendars/{cal}")),
            "missing {cal} in {hs:?}"
        );
    }
    assert!(body.contains("Reminders"), "{body}");
    env.assert_no_leak("calendar home listing", &body);

    // Percent-encoded names survive the round trip both ways.
    let (s, listing) = env
        .propfind("/dav/alice/calendars/home/", "1", PROPFIND_LIST)
        .await;
    assert_eq!(s, 207);
    let encoded = "/dav/alice/calendars/home/abc%40example.com.ics";
    assert!(hrefs(&listing).contains(&encoded.to_string()), "{listing}");
    let r = env.req("GET", encoded).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("UID:abc@example.com"));
    let mg = format!(
        r#"<?xml version="1.0" encoding="utf-8"?><c:calendar-multiget xmlns:d="DAV:" xmlns:c="urn:ietf:params:xml:ns:caldav"><d:prop><d:getetag/><c:calendar-data/></d:prop><d:href>{encoded}</d:href></c:calendar-multiget>"#
    );
    let (s, body) = env.report("/dav/alice/calendars/home/", "1", &mg).await;
    assert_eq!(s, 207, "{body}");
    assert!(
        body.contains(encoded) && body.contains("UID:abc@example.com"),
        "{body}"
    );
    // Ordinary XML: prefixed, no default namespace games.
    assert!(body.starts_with("<?xml"), "{body}");
    assert!(!body.contains("xmlns=\"DAV:\""), "{body}");

    let (s, body) = env
        .propfind("/dav/alice/contacts/", "1", PROPFIND_LIST)
        .await;
    assert_eq!(s, 207, "{body}");
    let books = body.matches("addressbook").count();
    assert!(books >= 1, "{body}");
    assert!(
        hrefs(&body).contains(&"/dav/alice/contacts/card/".to_string()),
        "{body}"
    );
    env.assert_no_leak("address book home listing", &body);
    env.stop().await;
}

#[tokio::test]
async fn event_crud_with_etags_and_stale_if_match() {
    let env = start().await;
    let path = "/dav/alice/calendars/home/crud-1.ics";
    let body = event("crud-1", "Dentist", true);
    let r = env
        .req("PUT", path)
        .header("Content-Type", "text/calendar; charset=utf-8")
        .header("If-None-Match", "*")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    // iCloud sends no ETag on PUT; the bridge learns it.
    let etag1 = r
        .headers()
        .get("etag")
        .expect("ETag after PUT")
        .to_str()
        .unwrap()
        .to_string();

    let r = env.req("GET", path).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["etag"].to_str().unwrap(), etag1);
    let got = r.text().await.unwrap();
    assert!(got.contains("SUMMARY:Dentist"), "{got}");

    let updated = event("crud-1", "Dentist (moved)", true);
    let r = env
        .req("PUT", path)
        .header("Content-Type", "text/calendar; charset=utf-8")
        .header("If-Match", &etag1)
        .body(updated.clone())
        .send()
        .await
        .unwrap();
    assert!(r.status() == 204 || r.status() == 200, "{}", r.status());
    let etag2 = r
        .headers()
        .get("etag")
        .expect("ETag after update")
        .to_str()
        .unwrap()
        .to_string();
    assert_ne!(etag1, etag2);

    // A stale If-Match is refused and nothing changes.
    let r = env
        .req("PUT", path)
        .header("Content-Type", "text/calendar; charset=utf-8")
        .header("If-Match", &etag1)
        .body(event("crud-1", "lost update", true))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 412);
    let (_, stored) = env
        .control()
        .get_object(DEMO_APPLE_ID, "calendars/home", "crud-1.ics")
        .unwrap();
    assert!(stored.contains("Dentist (moved)"));

    let r = env
        .req("DELETE", path)
        .header("If-Match", &etag2)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let r = env.req("GET", path).send().await.unwrap();
    assert_eq!(r.status(), 404);
    env.stop().await;
}

#[tokio::test]
async fn todo_and_vcard_round_trip() {
    let env = start().await;
    let r = env
        .req("PUT", "/dav/alice/calendars/tasks/todo-1.ics")
        .header("Content-Type", "text/calendar")
        .body(todo("todo-1", "Buy milk"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = env
        .req("GET", "/dav/alice/calendars/tasks/todo-1.ics")
        .send()
        .await
        .unwrap();
    assert!(r.text().await.unwrap().contains("Buy milk"));

    let card = vcard("card-1", "Doe", true);
    let r = env
        .req("PUT", "/dav/alice/contacts/card/card-1.vcf")
        .header("Content-Type", "text/vcard; charset=utf-8")
        .body(card.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert!(r.headers().get("etag").is_some());
    let r = env
        .req("GET", "/dav/alice/contacts/card/card-1.vcf")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/vcard"));
    assert_eq!(r.text().await.unwrap(), card);
    let r = env
        .req("DELETE", "/dav/alice/contacts/card/card-1.vcf")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    env.stop().await;
}

#[tokio::test]
async fn refusals_are_explained_not_passed_through_bare() {
    let env = start().await;
    // iCloud answers 404 to an event without DTEND or DURATION.
    let r = env
        .req("PUT", "/dav/alice/calendars/home/no-end.ics")
        .header("Content-Type", "text/calendar")
        .body(event("no-end", "No end", false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let body = r.text().await.unwrap();
    assert!(
        body.contains("valid-calendar-object-resource") && body.contains("DTEND"),
        "{body}"
    );

    // A vCard without N gets a bare 403 from iCloud.
    let r = env
        .req("PUT", "/dav/alice/contacts/card/no-n.vcf")
        .header("Content-Type", "text/vcard")
        .body(vcard("no-n", "Nameless", false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let body = r.text().await.unwrap();
    assert!(
        body.contains("valid-address-data") && body.contains(" N "),
        "{body}"
    );

    // MKCALENDAR with two component types gets an HTML 400 from iCloud.
    let mk = r#"<?xml version="1.0" encoding="utf-8"?><c:mkcalendar xmlns:d="DAV:" xmlns:c="urn:ietf:params:xml:ns:caldav"><d:set><d:prop><d:displayname>Both</d:displayname><c:supported-calendar-component-set><c:comp name="VEVENT"/><c:comp name="VTODO"/></c:supported-calendar-component-set></d:prop></d:set></c:mkcalendar>"#;
    let r = env
        .req("MKCALENDAR", "/dav/alice/calendars/both-kinds/")
        .body(mk)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let body = r.text().await.unwrap();
    assert!(body.contains("supported-calendar-component"), "{body}");
    assert!(!body.contains("<html"), "{body}");
    env.stop().await;
}

const SYNC: &str = r#"<?xml version="1.0" encoding="utf-8"?><d:sync-collection xmlns:d="DAV:"><d:sync-token>TOKEN</d:sync-token><d:sync-level>1</d:sync-level><d:prop><d:getetag/></d:prop></d:sync-collection>"#;

fn sync_token(xml: &str) -> String {
    let i = xml.find("<d:sync-token>").expect("sync-token") + 14;
    let j = xml[i..].find("</d:sync-token>").unwrap() + i;
    xml[i..j].to_string()
}

#[tokio::test]
async fn sync_collection_reports_changes_deletions_and_invalid_tokens() {
    let env = start().await;
    let c = env.control();
    c.put_object(
        DEMO_APPLE_ID,
        "calendars/work",
        "keep.ics",
        &event("keep", "Keep", true),
    );
    c.put_object(
        DEMO_APPLE_ID,
        "calendars/work",
        "gone.ics",
        &event("gone", "Gone", true),
    );
    let (s, body) = env
        .report(
            "/dav/alice/calendars/work/",
            "0",
            &SYNC.replace("TOKEN", ""),
        )
        .await;
    assert_eq!(s, 207, "{body}");
    assert!(
        body.contains("/dav/alice/calendars/work/keep.ics"),
        "{body}"
    );
    let token = sync_token(&body);
    env.assert_no_leak("sync-collection", &body);
    assert!(
        !hrefs(&body).contains(&"/dav/alice/calendars/work/".to_string()),
        "{body}"
    );

    // Another device edits one event and deletes another.
    c.put_object(
        DEMO_APPLE_ID,
        "calendars/work",
        "keep.ics",
        &event("keep", "Keep v2", true),
    );
    assert!(c.delete_object(DEMO_APPLE_ID, "calendars/work", "gone.ics"));
    let (s, body) = env
        .report(
            "/dav/alice/calendars/work/",
            "0",
            &SYNC.replace("TOKEN", &token),
        )
        .await;
    assert_eq!(s, 207, "{body}");
    assert!(
        body.contains("/dav/alice/calendars/work/keep.ics"),
        "{body}"
    );
    assert!(
        body.contains("/dav/alice/calendars/work/gone.ics"),
        "{body}"
    );
    assert!(body.contains("404"), "{body}");
    assert_ne!(sync_token(&body), token);

    // An invalid token: iCloud says a bare 403; clients get RFC 6578's precondition.
    let (s, body) = env
        .report(
            "/dav/alice/calendars/work/",
            "0",
            &SYNC.replace("TOKEN", "HwoQbogus"),
        )
        .await;
    assert_eq!(s, 403, "{body}");
    assert!(body.contains("valid-sync-token"), "{body}");
    env.stop().await;
}

/// Apple's group cards reach clients as standard groups (`KIND:group` + `MEMBER`), in GET and
/// multiget answers; written back (as Thunderbird or DAVx5 would after an edit) iCloud gets
/// Apple's form again, byte for byte when nothing else changed.
#[tokio::test]
async fn apple_groups_are_standard_groups_for_clients_and_apples_again_upstream() {
    let env = start().await;
    let c = env.control();
    let group = "BEGIN:VCARD\r\nVERSION:3.0\r\nPRODID:-//Apple Inc.//iOS 17.0//EN\r\nN:Family\r\nFN:Family\r\nX-ADDRESSBOOKSERVER-KIND:group\r\nX-ADDRESSBOOKSERVER-MEMBER:urn:uuid:card-a\r\nX-ADDRESSBOOKSERVER-MEMBER:urn:uuid:card-b\r\nUID:group-1\r\nEND:VCARD\r\n";
    c.put_object(DEMO_APPLE_ID, "carddavhome/card", "group-1.vcf", group);
    let path = "/dav/alice/contacts/card/group-1.vcf";
    let r = env.req("GET", path).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let served = r.text().await.unwrap();
    let standard = group
        .replace("X-ADDRESSBOOKSERVER-KIND", "KIND")
        .replace("X-ADDRESSBOOKSERVER-MEMBER", "MEMBER");
    assert_eq!(served, standard);

    let mg = r#"<?xml version="1.0" encoding="utf-8"?><a:addressbook-multiget xmlns:d="DAV:" xmlns:a="urn:ietf:params:xml:ns:carddav"><d:prop><d:getetag/><a:address-data/></d:prop><d:href>/dav/alice/contacts/card/group-1.vcf</d:href><d:href>/dav/alice/contacts/card/missing.vcf</d:href></a:addressbook-multiget>"#;
    let (s, body) = env.report("/dav/alice/contacts/card/", "1", mg).await;
    assert_eq!(s, 207, "{body}");
    assert!(body.contains("MEMBER:urn:uuid:card-b"), "{body}");
    assert!(!body.contains("X-ADDRESSBOOKSERVER"), "{body}");
    assert!(
        body.contains("/dav/alice/contacts/card/missing.vcf"),
        "{body}"
    );
    env.assert_no_leak("multiget", &body);

    // Written back unchanged: iCloud's copy is what it was.
    put_card(&env, path, served.clone()).await;
    let stored = c
        .get_object(DEMO_APPLE_ID, "carddavhome/card", "group-1.vcf")
        .unwrap();
    assert_eq!(stored.1, group);
    // A member added in the client is an Apple member line upstream.
    let edited = served.replace("UID:", "MEMBER:urn:uuid:card-c\r\nUID:");
    put_card(&env, path, edited).await;
    let stored = c
        .get_object(DEMO_APPLE_ID, "carddavhome/card", "group-1.vcf")
        .unwrap();
    assert!(
        stored
            .1
            .contains("\r\nX-ADDRESSBOOKSERVER-MEMBER:urn:uuid:card-c\r\n"),
        "{}",
        stored.1
    );
    assert!(
        !stored.1.contains("\nMEMBER") && !stored.1.contains("\nKIND"),
        "{}",
        stored.1
    );
    env.stop().await;
}

/// A birthday without a year (Apple's `X-APPLE-OMIT-YEAR=1604`) reaches clients as `--MM-DD`
/// and goes back to iCloud in Apple's form.
#[tokio::test]
async fn birthdays_without_a_year_never_show_1604() {
    let env = start().await;
    let c = env.control();
    let card = "BEGIN:VCARD\r\nVERSION:3.0\r\nN:Doe;Jane;;;\r\nFN:Jane Doe\r\nBDAY;X-APPLE-OMIT-YEAR=1604:1604-03-14\r\nUID:jane-1\r\nEND:VCARD\r\n";
    c.put_object(DEMO_APPLE_ID, "carddavhome/card", "jane-1.vcf", card);
    let path = "/dav/alice/contacts/card/jane-1.vcf";
    let served = env
        .req("GET", path)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(served.contains("\r\nBDAY:--03-14\r\n"), "{served}");
    assert!(!served.contains("1604"), "{served}");
    put_card(&env, path, served).await;
    let stored = c
        .get_object(DEMO_APPLE_ID, "carddavhome/card", "jane-1.vcf")
        .unwrap();
    assert_eq!(stored.1, card);
    env.stop().await;
}

/// iCloud's address book has no name of its own (the stand-in, like iCloud, calls it by its
/// path segment `card`): clients are told "Contacts".
#[tokio::test]
async fn the_address_book_is_called_contacts_not_card() {
    let env = start().await;
    let body = r#"<?xml version="1.0"?><d:propfind xmlns:d="DAV:"><d:prop><d:displayname/><d:resourcetype/></d:prop></d:propfind>"#;
    let (s, listing) = env.propfind("/dav/alice/contacts/", "1", body).await;
    assert_eq!(s, 207, "{listing}");
    assert!(
        listing.contains("<d:href>/dav/alice/contacts/card/</d:href><d:propstat><d:prop><d:displayname>Contacts</d:displayname>"),
        "{listing}"
    );
    assert!(!listing.contains(">card</"), "{listing}");
    let (s, one) = env.propfind("/dav/alice/contacts/card/", "0", body).await;
    assert_eq!(s, 207, "{one}");
    assert!(
        one.contains("<d:displayname>Contacts</d:displayname>"),
        "{one}"
    );
    // Calendars keep the names iCloud gives them.
    let (_, cals) = env.propfind("/dav/alice/calendars/", "1", body).await;
    assert!(
        cals.contains("<d:displayname>Home</d:displayname>"),
        "{cals}"
    );
    env.stop().await;
}

/// PUT a vCard through the bridge, as a client writes it back; it must land.
async fn put_card(env: &Env, path: &str, card: impl Into<reqwest::Body>) {
    let put = env
        .req("PUT", path)
        .header("content-type", "text/vcard; charset=utf-8")
        .body(card)
        .send()
        .await
        .unwrap();
    assert!(put.status().is_success(), "{}", put.status());
}

/// The PHOTO line of a card (unfolded), if any.
fn photo_line(card: &str) -> Option<String> {
    let unfolded = card.replace("\r\n ", "").replace("\n ", "");
    unfolded
        .lines()
        .find(|l| l.starts_with("PHOTO"))
        .map(str::to_string)
}

/// Contact photos iCloud keeps by URL reach clients inside the vCard (no second login for
/// an image), in GET and multiget answers; a card written back unchanged keeps iCloud's
/// reference (no second copy of the photo), and a new photo goes up as the client wrote it.
#[tokio::test]
async fn photos_are_inlined_and_written_back_as_icloud_kept_them() {
    use base64::Engine;
    let env = start().await;
    let c = env.control();
    let upstream_photo = |c: &icloud_bridge::standin::Control| {
        let card = c
            .get_object(DEMO_APPLE_ID, "carddavhome/card", "bob.vcf")
            .unwrap()
            .1;
        photo_line(&card).expect("bob has a photo")
    };
    let before = upstream_photo(&c);
    assert!(before.contains("VALUE=uri"), "{before}");
    let path = "/dav/alice/contacts/card/bob.vcf";
    let card = env
        .req("GET", path)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let line = photo_line(&card).unwrap();
    assert!(line.starts_with("PHOTO;ENCODING=b;TYPE=JPEG"), "{line}");
    let b64 = &line[line.rfind(':').unwrap() + 1..];
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();
    assert_eq!(&bytes[..3], &[0xff, 0xd8, 0xff], "a JPEG");
    assert!(card.contains("X-ICLOUD-BRIDGE-PHOTO:"), "{card}");
    assert!(!card.contains("/_up/") && !card.contains("/wcs/"), "{card}");
    env.assert_no_leak("inlined card", &card);

    let mg = r#"<?xml version="1.0" encoding="utf-8"?><a:addressbook-multiget xmlns:d="DAV:" xmlns:a="urn:ietf:params:xml:ns:carddav"><d:prop><d:getetag/><a:address-data/></d:prop><d:href>/dav/alice/contacts/card/bob.vcf</d:href></a:addressbook-multiget>"#;
    let (s, body) = env.report("/dav/alice/contacts/card/", "1", mg).await;
    assert_eq!(s, 207, "{body}");
    assert!(body.contains(&b64[..40]), "{body}");
    assert!(!body.contains("/_up/"), "{body}");

    // Written back unchanged (a client editing the phone number): iCloud keeps its reference.
    c.clear_request_log();
    let edited = card.replace("+1 555 0100", "+1 555 0199");
    put_card(&env, path, edited).await;
    let stored = c
        .get_object(DEMO_APPLE_ID, "carddavhome/card", "bob.vcf")
        .unwrap()
        .1;
    assert!(stored.contains("+1 555 0199"), "{stored}");
    assert_eq!(upstream_photo(&c), before);
    assert!(!stored.contains("X-ICLOUD-BRIDGE-PHOTO"), "{stored}");
    // What went up named the photo by its URL, not as a second copy of the image.
    let sent: Vec<String> = c
        .request_log()
        .into_iter()
        .filter(|r| r.method == "PUT")
        .map(|r| String::from_utf8_lossy(&r.body).into_owned())
        .collect();
    assert_eq!(sent.len(), 1);
    let sent_photo = photo_line(&sent[0]).unwrap();
    assert!(
        sent_photo.contains("VALUE=uri") && sent_photo.contains("/wcs/"),
        "{sent_photo}"
    );
    assert!(!sent[0].contains("ENCODING=b"), "{}", sent[0]);

    // A new photo goes up as the client wrote it (iCloud makes it a new reference).
    let mut other = bytes.clone();
    other.extend_from_slice(b"another photo");
    let new_b64 = base64::engine::general_purpose::STANDARD.encode(&other);
    let card = env
        .req("GET", path)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let unfolded = card.replace("\r\n ", "");
    let changed = unfolded.replace(b64, &new_b64);
    put_card(&env, path, changed).await;
    let after = upstream_photo(&c);
    assert_ne!(after, before);
    let card = env
        .req("GET", path)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(card.replace("\r\n ", "").contains(&new_b64), "{card}");
    env.stop().await;
}

/// Answers that name the same photo at the same time share its one fetch from iCloud.
#[tokio::test]
async fn concurrent_answers_fetch_a_photo_once() {
    let env = start().await;
    let c = env.control();
    // iCloud is slow, so the two answers' photo fetches overlap.
    c.set_switch("latency_ms", "300").unwrap();
    c.clear_request_log();
    let mg = r#"<?xml version="1.0" encoding="utf-8"?><a:addressbook-multiget xmlns:d="DAV:" xmlns:a="urn:ietf:params:xml:ns:carddav"><d:prop><d:getetag/><a:address-data/></d:prop><d:href>/dav/alice/contacts/card/bob.vcf</d:href></a:addressbook-multiget>"#;
    let get = async {
        let r = env
            .req("GET", "/dav/alice/contacts/card/bob.vcf")
            .send()
            .await;
        r.unwrap().text().await.unwrap()
    };
    let (card, (s, listing)) = tokio::join!(get, env.report("/dav/alice/contacts/card/", "1", mg));
    assert_eq!(s, 207, "{listing}");
    assert!(
        photo_line(&card).unwrap().starts_with("PHOTO;ENCODING=b"),
        "{card}"
    );
    assert!(listing.contains("PHOTO;ENCODING=b"), "{listing}");
    let photo_gets = c
        .request_log()
        .into_iter()
        .filter(|r| r.method == "GET" && r.path.contains("/wcs/"))
        .count();
    assert_eq!(photo_gets, 1);
    env.stop().await;
}

/// `carddav.photos = "link"` keeps photos as bridge links behind the device login.
#[tokio::test]
async fn photos_can_stay_links() {
    let env = start_with(Options {
        tweak: Box::new(|c| c.carddav.photos = icloud_bridge::config::Photos::Link),
        ..Default::default()
    })
    .await;
    let card = env
        .req("GET", "/dav/alice/contacts/card/bob.vcf")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let line = photo_line(&card).unwrap();
    assert!(line.contains("/dav/alice/_up/"), "{line}");
    assert!(!card.contains("X-ICLOUD-BRIDGE-PHOTO"), "{card}");
    env.stop().await;
}

#[tokio::test]
async fn no_upstream_host_port_or_apple_header_reaches_a_client() {
    let env = start().await;
    let q = r#"<?xml version="1.0" encoding="utf-8"?><c:calendar-query xmlns:d="DAV:" xmlns:c="urn:ietf:params:xml:ns:caldav"><d:prop><d:getetag/><c:calendar-data/></d:prop><c:filter><c:comp-filter name="VCALENDAR"><c:comp-filter name="VEVENT"/></c:comp-filter></c:filter></c:calendar-query>"#;
    let r = env
        .req("REPORT", "/dav/alice/calendars/home/")
        .header("Depth", "1")
        .body(q)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 207);
    for (name, value) in r.headers() {
        let n = name.as_str();
        assert!(
            !n.starts_with("x-apple")
                && n != "strict-transport-security"
                && n != "x-responding-instance"
                && n != "via",
            "Apple header {n} leaked"
        );
        let v = value.to_str().unwrap_or("");
        env.assert_no_leak(n, v);
        assert!(!v.contains("AppleHttpServer"), "{n}: {v}");
    }
    let body = r.text().await.unwrap();
    assert!(body.contains("BEGIN:VCALENDAR"), "{body}");
    env.assert_no_leak("calendar-query", &body);

    // Contact photos are inlined (the default); any left as links are bridge URLs that fetch
    // with the stored credential.
    let r = env
        .req("PROPFIND", "/dav/alice/contacts/card/")
        .header("Depth", "1")
        .body(r#"<?xml version="1.0"?><d:propfind xmlns:d="DAV:"><d:prop><d:getetag/></d:prop></d:propfind>"#)
        .send()
        .await
        .unwrap();
    let listing = r.text().await.unwrap();
    for href in hrefs(&listing).into_iter().filter(|h| h.ends_with(".vcf")) {
        let card = env
            .req("GET", &href)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        env.assert_no_leak("vCard", &card);
        if let Some(line) = card.lines().find(|l| l.starts_with("PHOTO")) {
            let Some(at) = line.find("http") else {
                assert!(line.starts_with("PHOTO;ENCODING=b"), "{line}");
                continue;
            };
            let url = &line[at..];
            let photo = env
                .http
                .get(url)
                .basic_auth(&env.user, Some(&env.pass))
                .send()
                .await
                .unwrap();
            assert_eq!(photo.status(), 200, "{url}");
            assert!(!photo.bytes().await.unwrap().is_empty());
        }
    }
    env.stop().await;
}

#[tokio::test]
async fn malformed_xml_is_refused_and_not_forwarded() {
    let env = start().await;
    env.control().clear_request_log();
    let (s, body) = env
        .report(
            "/dav/alice/calendars/home/",
            "1",
            "<c:calendar-query xmlns:c=\"urn:ietf:params:xml:ns:caldav\"><unclosed>",
        )
        .await;
    assert_eq!(s, 400, "{body}");
    assert!(body.contains("well-formed"), "{body}");
    let forwarded = env
        .control()
        .request_log()
        .into_iter()
        .filter(|r| r.method == "REPORT")
        .count();
    assert_eq!(forwarded, 0, "malformed body was forwarded");
    env.stop().await;
}

#[tokio::test]
async fn oversized_bodies_get_413() {
    let env = start_with(Options {
        max_body_bytes: 64 * 1024,
        ..Options::default()
    })
    .await;
    let big = event("big", &"x".repeat(100 * 1024), true);
    let r = env
        .req("PUT", "/dav/alice/calendars/home/big.ics")
        .header("Content-Type", "text/calendar")
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    assert!(env
        .control()
        .get_object(DEMO_APPLE_ID, "calendars/home", "big.ics")
        .is_none());
    env.stop().await;
}

#[tokio::test]
async fn wrong_local_password_is_a_plain_401() {
    let env = start().await;
    let r = env
        .http
        .request(
            reqwest::Method::from_bytes(b"PROPFIND").unwrap(),
            env.url("/dav/alice/calendars/"),
        )
        .basic_auth("phone", Some("wrong"))
        .header("Depth", "0")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .contains("icloud-bridge"));
    // Apple's password is not a bridge login either.
    let r = env
        .http
        .get(env.url("/dav/alice/calendars/home/x.ics"))
        .basic_auth(DEMO_APPLE_ID, Some(DEMO_APP_PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    env.stop().await;
}

#[tokio::test]
async fn revoked_app_password_gives_503_with_the_sentence_never_401() {
    let env = start().await;
    // First a working request, so the bridge knows the password was accepted before.
    let (s, _) = env
        .propfind("/dav/alice/calendars/", "1", PROPFIND_LIST)
        .await;
    assert_eq!(s, 207);
    env.control().revoke_all_asps(DEMO_APPLE_ID);
    let r = env
        .req("PROPFIND", "/dav/alice/calendars/home/")
        .header("Depth", "1")
        .body(PROPFIND_LIST)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"].to_str().unwrap(), "60");
    assert!(r.headers().get("www-authenticate").is_none());
    let body = r.text().await.unwrap();
    assert!(
        body.contains("no longer accepts the app-specific password"),
        "{body}"
    );
    assert!(body.contains("icloud-bridge reconnect"), "{body}");
    // Discovery still works from what the bridge learned, so clients can log in.
    let (s, body) = env
        .propfind("/dav/alice/principal/", "0", PROPFIND_HOMES)
        .await;
    assert_eq!(s, 207, "{body}");
    let status: serde_json::Value = env.status_json().await;
    assert_eq!(status["accounts"][0]["state"], "auth_rejected", "{status}");
    assert_eq!(
        status["accounts"][0]["apple_id"], "a…@icloud.com",
        "{status}"
    );
    env.stop().await;
}

#[tokio::test]
async fn primary_password_is_caught_before_calling_apple() {
    let env = start_with(Options {
        app_password: "Correct-Horse-1".into(),
        ..Options::default()
    })
    .await;
    env.control().clear_request_log();
    let (s, body) = env
        .propfind("/dav/alice/calendars/", "1", PROPFIND_LIST)
        .await;
    assert_eq!(s, 503, "{body}");
    assert!(body.contains("not an app-specific password"), "{body}");
    assert!(!body.contains("Correct-Horse-1"), "secret leaked: {body}");
    assert!(
        env.control().request_log().is_empty(),
        "Apple was asked with a non-ASP password"
    );
    env.stop().await;
}

#[tokio::test]
async fn partition_host_down_falls_back_to_the_front_host() {
    let env = start().await;
    let (s, _) = env
        .propfind("/dav/alice/calendars/", "1", PROPFIND_LIST)
        .await;
    assert_eq!(s, 207);
    env.control()
        .set_switch("partition.unreachable", "true")
        .unwrap();
    let (s, body) = env
        .propfind("/dav/alice/calendars/home/", "1", PROPFIND_LIST)
        .await;
    assert_eq!(s, 207, "{body}");
    assert!(
        hrefs(&body).contains(&"/dav/alice/calendars/home/".to_string()),
        "{body}"
    );
    env.assert_no_leak("front-host fallback", &body);
    let r = env
        .req("PUT", "/dav/alice/calendars/home/fallback.ics")
        .header("Content-Type", "text/calendar")
        .body(event("fallback", "Written via the front host", true))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    env.stop().await;
}

#[tokio::test]
async fn a_moved_partition_is_followed_without_leaking_it() {
    let env = start().await;
    let (s, _) = env
        .propfind("/dav/alice/calendars/", "1", PROPFIND_LIST)
        .await;
    assert_eq!(s, 207);
    env.control().move_partition(DEMO_APPLE_ID, 7);
    let (s, body) = env
        .propfind("/dav/alice/calendars/work/", "1", PROPFIND_LIST)
        .await;
    assert_eq!(s, 207, "{body}");
    env.assert_no_leak("after partition move", &body);
    let new_port = url::Url::parse(&env.standin.partition_caldav_url(7).unwrap())
        .unwrap()
        .port()
        .unwrap();
    assert!(!body.contains(&new_port.to_string()), "{body}");
    // The bridge learns the new layout (and keeps it in state.json), so later requests go
    // straight to the new host.
    let new_home = format!("127.0.0.1:{new_port}/");
    wait_until(
        std::time::Duration::from_secs(5),
        "state.json names the new partition's calendar home",
        || async {
            env.state_json().is_some_and(|st| {
                st["accounts"]["alice"]["learned"]["cal_home"]
                    .as_str()
                    .is_some_and(|h| h.contains(&new_home))
            })
        },
    )
    .await;
    env.control().clear_request_log();
    let (s, _) = env
        .propfind("/dav/alice/calendars/work/", "1", PROPFIND_LIST)
        .await;
    assert_eq!(s, 207);
    let log = env.control().request_log();
    assert!(
        log.iter().all(|r| r.status != 301),
        "still bouncing off the old partition: {:?}",
        log.iter().map(|r| (&r.host, r.status)).collect::<Vec<_>>()
    );
    env.stop().await;
}

#[tokio::test]
async fn collections_are_made_changed_and_objects_moved() {
    let env = start().await;
    let mk = r#"<?xml version="1.0" encoding="utf-8"?><c:mkcalendar xmlns:d="DAV:" xmlns:c="urn:ietf:params:xml:ns:caldav"><d:set><d:prop><d:displayname>Trips</d:displayname><c:supported-calendar-component-set><c:comp name="VEVENT"/></c:supported-calendar-component-set></d:prop></d:set></c:mkcalendar>"#;
    let r = env
        .req("MKCALENDAR", "/dav/alice/calendars/trips/")
        .body(mk)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let pp = r#"<?xml version="1.0" encoding="utf-8"?><d:propertyupdate xmlns:d="DAV:" xmlns:i="http://apple.com/ns/ical/"><d:set><d:prop><d:displayname>Trips 2027</d:displayname><i:calendar-color>#FF9500FF</i:calendar-color></d:prop></d:set></d:propertyupdate>"#;
    let r = env
        .req("PROPPATCH", "/dav/alice/calendars/trips/")
        .body(pp)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 207);
    let body = r.text().await.unwrap();
    assert!(body.contains("/dav/alice/calendars/trips/"), "{body}");
    let (_, listing) = env
        .propfind("/dav/alice/calendars/", "1", PROPFIND_LIST)
        .await;
    assert!(listing.contains("Trips 2027"), "{listing}");

    let r = env
        .req("PUT", "/dav/alice/calendars/trips/a.ics")
        .header("Content-Type", "text/calendar")
        .body(event("move-me", "Flight", true))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let dest = env.url("/dav/alice/calendars/work/a.ics");
    let r = env
        .req("MOVE", "/dav/alice/calendars/trips/a.ics")
        .header("Destination", dest)
        .header("Overwrite", "F")
        .send()
        .await
        .unwrap();
    assert!(r.status() == 201 || r.status() == 204, "{}", r.status());
    if let Some(loc) = r.headers().get("location") {
        env.assert_no_leak("Location", loc.to_str().unwrap());
    }
    assert!(env
        .control()
        .get_object(DEMO_APPLE_ID, "calendars/work", "a.ics")
        .is_some());
    assert!(env
        .control()
        .get_object(DEMO_APPLE_ID, "calendars/trips", "a.ics")
        .is_none());
    // A Destination outside the account is refused locally.
    let r = env
        .req("MOVE", "/dav/alice/calendars/work/a.ics")
        .header("Destination", "http://elsewhere.example/x.ics")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = env
        .req("DELETE", "/dav/alice/calendars/trips/")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    env.stop().await;
}

#[tokio::test]
async fn another_accounts_paths_and_unknown_paths_are_refused() {
    let env = start().await;
    let (s, _) = env
        .propfind("/dav/bob/calendars/", "1", PROPFIND_LIST)
        .await;
    assert_eq!(s, 403);
    let r = env.req("GET", "/dav/alice/nowhere/x").send().await.unwrap();
    assert_eq!(r.status(), 404);
    // reqwest would normalise the dot segments away; send the raw request line.
    let raw = raw_request(&env, "GET /dav/alice/calendars/home/%2e%2e/x HTTP/1.1").await;
    assert!(raw.starts_with("HTTP/1.1 400"), "{raw}");
    let r = env.http.get(env.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let m = env.page("/metrics").await;
    assert!(m.contains("icloud_bridge_requests_total"), "{m}");
    assert!(
        m.contains("icloud_bridge_account_state{account=\"alice\""),
        "{m}"
    );
    env.stop().await;
}

async fn raw_request(env: &Env, request_line: &str) -> String {
    use base64::Engine;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut sock = tokio::net::TcpStream::connect(env.bridge.addr)
        .await
        .unwrap();
    let auth =
        base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", env.user, env.pass));
    let req = format!(
        "{request_line}\r\nHost: {}\r\nAuthorization: Basic {auth}\r\nConnection: close\r\n\r\n",
        env.bridge.addr
    );
    sock.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    sock.read_to_string(&mut out).await.unwrap();
    out
}

#[tokio::test]
async fn head_copy_and_collection_options_pass_through() {
    let env = start().await;
    let r = env
        .req("PUT", "/dav/alice/calendars/home/copy-src.ics")
        .header("Content-Type", "text/calendar")
        .body(event("copy-src", "Copy me", true))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let etag = r.headers()["etag"].to_str().unwrap().to_string();
    let r = env
        .req("HEAD", "/dav/alice/calendars/home/copy-src.ics")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["etag"].to_str().unwrap(), etag);
    let r = env
        .req("COPY", "/dav/alice/calendars/home/copy-src.ics")
        .header("Destination", "/dav/alice/calendars/work/copy-dst.ics")
        .send()
        .await
        .unwrap();
    assert!(r.status() == 201 || r.status() == 204, "{}", r.status());
    assert!(env
        .control()
        .get_object(DEMO_APPLE_ID, "calendars/home", "copy-src.ics")
        .is_some());
    assert!(env
        .control()
        .get_object(DEMO_APPLE_ID, "calendars/work", "copy-dst.ics")
        .is_some());
    let r = env
        .req("OPTIONS", "/dav/alice/calendars/home/")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("dav").is_some());
    for (n, v) in r.headers() {
        env.assert_no_leak(n.as_str(), v.to_str().unwrap_or(""));
    }
    env.stop().await;
}

#[tokio::test]
async fn thunderbird_style_carddav_discovery_from_the_root() {
    let env = start().await;
    // Thunderbird asks the root URL for everything at once, then lists the home.
    let body = r#"<?xml version="1.0" encoding="utf-8"?><d:propfind xmlns:d="DAV:" xmlns:card="urn:ietf:params:xml:ns:carddav" xmlns:cs="http://calendarserver.org/ns/"><d:prop><d:resourcetype/><d:displayname/><d:current-user-principal/><card:addressbook-home-set/><cs:getctag/></d:prop></d:propfind>"#;
    let (s, root) = env.propfind("/", "0", body).await;
    assert_eq!(s, 207, "{root}");
    assert!(
        root.contains("<d:href>/dav/alice/contacts/</d:href>"),
        "{root}"
    );
    let (s, home) = env.propfind("/dav/alice/contacts/", "1", body).await;
    assert_eq!(s, 207, "{home}");
    assert!(home.contains("<card:addressbook/>"), "{home}");
    assert!(
        hrefs(&home).contains(&"/dav/alice/contacts/card/".to_string()),
        "{home}"
    );
    env.stop().await;
}

/// Upstream requests in the stand-in's log that carried the (now dead) demo credential.
fn requests_with_dead_credential(env: &Env) -> usize {
    use base64::Engine;
    let dead = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD
            .encode(format!("{DEMO_APPLE_ID}:{DEMO_APP_PASSWORD}"))
    );
    env.control()
        .request_log()
        .iter()
        .filter(|r| {
            r.headers
                .iter()
                .any(|(k, v)| k.eq_ignore_ascii_case("authorization") && *v == dead)
        })
        .count()
}

#[tokio::test]
async fn after_a_rejection_200_client_requests_send_the_dead_credential_at_most_once() {
    let env = start_with(Options {
        auth_probe_secs: 3,
        // 100 connections at once from one address: above the per-address limit, which is
        // not what this test is about.
        tweak: Box::new(|c| c.limits.max_connections_per_ip = 256),
        ..Options::default()
    })
    .await;
    let (s, _) = env
        .propfind("/dav/alice/calendars/", "1", PROPFIND_LIST)
        .await;
    assert_eq!(s, 207);
    env.control().revoke_all_asps(DEMO_APPLE_ID);
    // The request that learns of the rejection.
    let (s, _) = env
        .propfind("/dav/alice/calendars/home/", "1", PROPFIND_LIST)
        .await;
    assert_eq!(s, 503);
    // The calendar service's probe window runs from the rejection, before this moment.
    let rejected = std::time::Instant::now();
    env.control().clear_request_log();

    // 200 requests in the next moment: 100 at once, then 100 one after another, of every kind.
    let started = std::time::Instant::now();
    let burst = (0..100).map(|i| {
        let r = match i % 4 {
            0 => env
                .req("PROPFIND", "/dav/alice/calendars/home/")
                .header("Depth", "1")
                .body(PROPFIND_LIST),
            1 => env.req("GET", "/dav/alice/calendars/home/x.ics"),
            2 => env
                .req("PUT", &format!("/dav/alice/calendars/home/n{i}.ics"))
                .body(event(&format!("n{i}"), "new", true)),
            _ => env.req("DELETE", "/dav/alice/contacts/card/x.vcf"),
        };
        r.send()
    });
    let mut statuses: Vec<u16> = futures_join(burst).await;
    for i in 0..100 {
        let path = if i % 2 == 0 {
            "/dav/alice/calendars/home/"
        } else {
            "/dav/alice/contacts/card/"
        };
        let r = env
            .req("PROPFIND", path)
            .header("Depth", "1")
            .body(PROPFIND_LIST)
            .send()
            .await
            .unwrap();
        statuses.push(r.status().as_u16());
    }
    assert_eq!(statuses.len(), 200);
    assert!(statuses.iter().all(|s| *s == 503), "{statuses:?}");
    // The contacts service had not answered since the rejection: one request checked it
    // (and the other contact requests waited for its answer); nothing else reached Apple.
    assert!(started.elapsed() < std::time::Duration::from_secs(3));
    assert!(
        requests_with_dead_credential(&env) <= 1,
        "{} upstream requests with the dead credential",
        requests_with_dead_credential(&env)
    );

    // After auth_probe_secs, 50 concurrent requests share one probe.
    tokio::time::sleep_until((rejected + std::time::Duration::from_secs(3)).into()).await;
    env.control().clear_request_log();
    let burst = (0..50).map(|_| {
        env.req("PROPFIND", "/dav/alice/calendars/home/")
            .header("Depth", "1")
            .body(PROPFIND_LIST)
            .send()
    });
    let statuses = futures_join(burst).await;
    assert!(statuses.iter().all(|s| *s == 503), "{statuses:?}");
    assert_eq!(
        requests_with_dead_credential(&env),
        1,
        "exactly one probe after the window"
    );
    env.stop().await;
}

async fn futures_join<F>(reqs: impl Iterator<Item = F>) -> Vec<u16>
where
    F: std::future::Future<Output = reqwest::Result<reqwest::Response>>,
{
    let handles: Vec<_> = reqs.collect();
    let mut out = Vec::new();
    for r in futures_util::future::join_all(handles).await {
        out.push(r.unwrap().status().as_u16());
    }
    out
}

#[tokio::test]
async fn the_status_page_explains_task_lists_once_a_client_lists_its_calendars() {
    let env = start().await;
    let st = env.status_json().await;
    assert_eq!(
        st["accounts"][0]["task_lists"],
        serde_json::json!([]),
        "{st}"
    );
    // What DAVx5 and Thunderbird ask of the calendar home.
    let body = r#"<?xml version="1.0"?><d:propfind xmlns:d="DAV:" xmlns:c="urn:ietf:params:xml:ns:caldav"><d:prop><d:displayname/><d:resourcetype/><c:supported-calendar-component-set/></d:prop></d:propfind>"#;
    let (s, listing) = env.propfind("/dav/alice/calendars/", "1", body).await;
    assert_eq!(s, 207, "{listing}");
    let st = env.status_json().await;
    let lists = st["accounts"][0]["task_lists"].as_array().unwrap();
    assert_eq!(lists.len(), 1, "{st}");
    // By URL only: the page needs no login, and display names can be personal.
    assert!(lists[0].get("name").is_none(), "{st}");
    assert!(
        lists[0]["url"]
            .as_str()
            .unwrap()
            .ends_with("/dav/alice/calendars/tasks/"),
        "{st}"
    );
    let page = env.page("/status").await;
    assert!(page.contains("<h3>Task lists</h3>"), "{page}");
    assert!(
        page.contains("<code>/dav/alice/calendars/tasks/</code> only holds tasks"),
        "{page}"
    );
    assert!(!page.contains("Reminders</"), "{page}");
    // A listing that does not say which components (getetag only) changes nothing.
    env.propfind(
        "/dav/alice/calendars/",
        "1",
        r#"<?xml version="1.0"?><d:propfind xmlns:d="DAV:"><d:prop><d:getetag/></d:prop></d:propfind>"#,
    )
    .await;
    assert_eq!(
        env.status_json().await["accounts"][0]["task_lists"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    env.stop().await;
}

/// The whole pipeline (router, login, DAV tree, cache, upstream, rewriter) driven in-process,
/// without a socket: `service` takes any body type.
#[tokio::test]
async fn the_pipeline_runs_in_process_with_any_body_type() {
    use base64::Engine;
    use http_body_util::{BodyExt, Full};
    let env = start().await;
    let auth = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", env.user, env.pass))
    );
    let ask = |method: &str, path: &str, body: &'static str| {
        http::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "localhost")
            .header("authorization", auth.as_str())
            .header("depth", "1")
            .body(Full::new(bytes::Bytes::from_static(body.as_bytes())))
            .unwrap()
    };
    let peer: std::net::SocketAddr = "127.0.0.1:50000".parse().unwrap();
    let app = env.bridge.app.clone();
    let resp = icloud_bridge::server::router::service(
        app.clone(),
        peer,
        ask("PROPFIND", "/dav/alice/calendars/", PROPFIND_LIST),
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), 207);
    let text = String::from_utf8(
        resp.into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
    .unwrap();
    let listed = hrefs(&text);
    assert!(
        listed
            .iter()
            .any(|h| h.starts_with("/dav/alice/calendars/") && h.len() > 21),
        "the home listing names calendars: {listed:?}"
    );
    env.assert_no_leak("in-process PROPFIND", &text);
    // A wrong login is a local 401, never Apple's.
    let mut wrong = ask("PROPFIND", "/dav/alice/calendars/", PROPFIND_LIST);
    wrong.headers_mut().insert(
        "authorization",
        http::HeaderValue::from_static("Basic bm9ib2R5Om5vcGU="),
    );
    let resp = icloud_bridge::server::router::service(app, peer, wrong)
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let challenge = resp.headers()["www-authenticate"].to_str().unwrap();
    assert!(challenge.contains("icloud-bridge"), "{challenge}");
}

/// What iCloud sees of a device's GET: the stored credential (never the device's login), its
/// own Host, the bridge's User-Agent, `Accept: */*` unless the device asked for something,
/// and none of the device's other headers.
#[tokio::test]
async fn upstream_sees_the_bridges_request_not_the_devices() {
    use base64::Engine;
    let env = start().await;
    let path = "/dav/alice/calendars/tasks/seen-1.ics";
    let r = env
        .req("PUT", path)
        .header("Content-Type", "text/calendar")
        .body(todo("seen-1", "Look at me"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let control = env.control();
    let last_get = || {
        control
            .request_log()
            .into_iter()
            .rev()
            .find(|r| r.method == "GET" && r.path.ends_with("/seen-1.ics"))
            .expect("the GET reached the stand-in")
    };
    let header = |r: &icloud_bridge::standin::LoggedRequest, name: &str| {
        r.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
            .collect::<Vec<_>>()
    };
    let r = env
        .req("GET", path)
        .header("Cookie", "session=device-cookie")
        .header("User-Agent", "DAVx5/4.4.3-ose")
        .header("X-Device-Secret", "keep-me-local")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen = last_get();
    let stored = base64::engine::general_purpose::STANDARD
        .encode(format!("{DEMO_APPLE_ID}:{DEMO_APP_PASSWORD}"));
    assert_eq!(header(&seen, "authorization"), [format!("Basic {stored}")]);
    let ua = header(&seen, "user-agent");
    assert!(
        ua.len() == 1 && ua[0].starts_with("icloud-bridge/"),
        "{ua:?}"
    );
    assert_eq!(header(&seen, "accept"), ["*/*"]);
    let bridge = env.url("/");
    let bridge_host = bridge.trim_start_matches("http://").trim_end_matches('/');
    assert!(
        !seen.host.is_empty() && seen.host != bridge_host,
        "{}",
        seen.host
    );
    for name in ["cookie", "x-device-secret"] {
        assert!(header(&seen, name).is_empty(), "{name} reached upstream");
    }
    // A device's own Accept goes through as it asked.
    let r = env
        .req("GET", path)
        .header("Accept", "text/calendar")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&last_get(), "accept"), ["text/calendar"]);
    env.stop().await;
}
