//! The cache seen from clients: a second client's sync costs no upstream requests, identical
//! concurrent requests share one, writes are seen at once by every client, changes made on
//! iCloud show up within `fresh_secs`, and reads are served (marked stale) while iCloud fails.

mod support;

use icloud_bridge::standin::DEMO_APPLE_ID;
use support::*;

const LIST: &str = r#"<?xml version="1.0"?><d:propfind xmlns:d="DAV:"><d:prop><d:getetag/><d:resourcetype/></d:prop></d:propfind>"#;

fn multiget(hrefs: &[String]) -> String {
    let h: String = hrefs
        .iter()
        .map(|h| format!("<d:href>{h}</d:href>"))
        .collect();
    format!(
        r#"<?xml version="1.0" encoding="utf-8"?><c:calendar-multiget xmlns:d="DAV:" xmlns:c="urn:ietf:params:xml:ns:caldav"><d:prop><d:getetag/><c:calendar-data/></d:prop>{h}</c:calendar-multiget>"#
    )
}

/// Put `n` events `<prefix><i>.ics` into the stand-in's work calendar; their hrefs through
/// the bridge, from a listing (which the cache then holds).
async fn seed(env: &Env, prefix: &str, n: usize, summary: &str) -> Vec<String> {
    let c = env.control();
    for i in 0..n {
        c.put_object(
            DEMO_APPLE_ID,
            "calendars/work",
            &format!("{prefix}{i}.ics"),
            &event(&format!("{prefix}{i}"), summary, true),
        );
    }
    let (_, listing) = env.propfind("/dav/alice/calendars/work/", "1", LIST).await;
    let objects: Vec<String> = hrefs(&listing)
        .into_iter()
        .filter(|h| h.contains(&format!("/{prefix}")))
        .collect();
    assert_eq!(objects.len(), n, "{listing}");
    objects
}

/// Upstream requests in the stand-in's log (of `method`, or all), as "METHOD path" (what
/// failure messages show: never the logged headers, which hold the credential).
fn upstream(c: &icloud_bridge::standin::Control, method: &str) -> Vec<String> {
    c.request_log()
        .into_iter()
        .filter(|r| method == "*" || r.method == method)
        .map(|r| format!("{} {}", r.method, r.path))
        .collect()
}

async fn as_user(
    env: &Env,
    user: &str,
    pass: &str,
    method: &str,
    path: &str,
    depth: &str,
    body: &str,
) -> (u16, String, reqwest::header::HeaderMap) {
    let r = env
        .http
        .request(
            reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
            env.url(path),
        )
        .basic_auth(user, Some(pass))
        .header("Depth", depth)
        .header("Content-Type", "application/xml")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    (status, r.text().await.unwrap(), headers)
}

/// A DAVx5-like sync of one calendar: list, then fetch every object with a multiget.
async fn sync(env: &Env, user: &str, pass: &str, coll: &str) -> (usize, String) {
    let (s, listing, _) = as_user(env, user, pass, "PROPFIND", coll, "1", LIST).await;
    assert_eq!(s, 207, "{listing}");
    let objects: Vec<String> = hrefs(&listing)
        .into_iter()
        .filter(|h| h.ends_with(".ics"))
        .collect();
    let (s, data, _) = as_user(env, user, pass, "REPORT", coll, "1", &multiget(&objects)).await;
    assert_eq!(s, 207, "{data}");
    (objects.len(), data)
}

#[tokio::test]
async fn a_second_client_syncing_the_same_calendar_causes_no_upstream_requests() {
    let env = start().await;
    let c = env.control();
    for i in 0..20 {
        c.put_object(
            DEMO_APPLE_ID,
            "calendars/work",
            &format!("e{i}.ics"),
            &event(&format!("e{i}"), "x", true),
        );
    }
    let laptop = env.second_login();
    let (n, first) = sync(&env, &env.user, &env.pass, "/dav/alice/calendars/work/").await;
    assert!(n >= 20, "{n}");
    c.clear_request_log();
    let (n2, second) = sync(&env, "laptop", &laptop, "/dav/alice/calendars/work/").await;
    assert_eq!(n2, n);
    assert_eq!(first, second);
    assert!(
        upstream(&c, "*").is_empty(),
        "upstream asked: {:?}",
        upstream(&c, "*")
    );
    env.stop().await;
}

#[tokio::test]
async fn identical_concurrent_requests_share_one_upstream_request() {
    let env = start().await;
    // Learn the layout first, so only the listing itself is counted.
    let (s, _) = env.propfind("/dav/alice/calendars/", "1", LIST).await;
    assert_eq!(s, 207);
    let c = env.control();
    c.set_switch("latency_ms", "300").unwrap();
    c.clear_request_log();
    let reqs = (0..20).map(|_| env.propfind("/dav/alice/calendars/home/", "1", LIST));
    let results = futures_util::future::join_all(reqs).await;
    assert!(results.iter().all(|(s, _)| *s == 207));
    assert!(results.windows(2).all(|w| w[0].1 == w[1].1));
    let n = c
        .request_log()
        .iter()
        .filter(|r| r.method == "PROPFIND")
        .count();
    assert_eq!(
        n, 1,
        "{n} upstream PROPFINDs for 20 identical client requests"
    );
    env.stop().await;
}

#[tokio::test]
async fn a_write_by_one_client_is_seen_by_the_other_at_once() {
    let env = start().await;
    let laptop = env.second_login();
    let coll = "/dav/alice/calendars/home/";
    let (_, before, _) = as_user(&env, "laptop", &laptop, "PROPFIND", coll, "1", LIST).await;
    assert!(!before.contains("written-by-phone"));
    // The home listing (with the calendars' ctags) is cached too.
    let (_, home_before, _) = as_user(
        &env,
        "laptop",
        &laptop,
        "PROPFIND",
        "/dav/alice/calendars/",
        "1",
        LIST,
    )
    .await;
    let r = env
        .req("PUT", "/dav/alice/calendars/home/written-by-phone.ics")
        .header("Content-Type", "text/calendar")
        .body(event("written-by-phone", "new", true))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    let (_, after, _) = as_user(&env, "laptop", &laptop, "PROPFIND", coll, "1", LIST).await;
    assert!(after.contains("written-by-phone.ics"), "{after}");
    let (_, home_after, _) = as_user(
        &env,
        "laptop",
        &laptop,
        "PROPFIND",
        "/dav/alice/calendars/",
        "1",
        LIST,
    )
    .await;
    assert_ne!(
        home_before, home_after,
        "the home listing still shows the old ctag/etag"
    );
    // And a delete as well.
    let r = env
        .req("DELETE", "/dav/alice/calendars/home/written-by-phone.ics")
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    let (_, gone, _) = as_user(&env, "laptop", &laptop, "PROPFIND", coll, "1", LIST).await;
    assert!(!gone.contains("written-by-phone.ics"), "{gone}");
    env.stop().await;
}

#[tokio::test]
async fn a_change_made_on_icloud_shows_up_within_fresh_secs() {
    let env = start_with(Options {
        fresh_secs: 1,
        ..Options::default()
    })
    .await;
    let coll = "/dav/alice/calendars/work/";
    let asked = std::time::Instant::now();
    let (_, before) = env.propfind(coll, "1", LIST).await;
    env.control().put_object(
        DEMO_APPLE_ID,
        "calendars/work",
        "from-ipad.ics",
        &event("from-ipad", "x", true),
    );
    // Inside the window the cached answer stands (that is the point of the cache) ...
    let (_, cached) = env.propfind(coll, "1", LIST).await;
    assert_eq!(before, cached);
    // ... and after it the change is there.
    wait_until(
        std::time::Duration::from_secs(3),
        "the listing shows the change made on iCloud",
        || async {
            env.propfind(coll, "1", LIST)
                .await
                .1
                .contains("from-ipad.ics")
        },
    )
    .await;
    assert!(
        asked.elapsed() < std::time::Duration::from_millis(1500),
        "shown {:?} after the first listing (fresh_secs = 1)",
        asked.elapsed()
    );
    env.stop().await;
}

#[tokio::test]
async fn while_icloud_refuses_reads_are_served_stale_and_writes_get_503() {
    let env = start_with(Options {
        fresh_secs: 0,
        ..Options::default()
    })
    .await;
    let coll = "/dav/alice/calendars/home/";
    let (s, fresh) = env.propfind(coll, "1", LIST).await;
    assert_eq!(s, 207);
    env.control().revoke_all_asps(DEMO_APPLE_ID);
    let (s, body, headers) = as_user(&env, &env.user, &env.pass, "PROPFIND", coll, "1", LIST).await;
    assert_eq!(s, 207);
    assert_eq!(body, fresh);
    assert_eq!(headers["x-icloud-bridge-stale"], "auth_rejected");
    assert!(headers.contains_key("warning"));
    // A read the cache cannot answer, and every write, get the row's status.
    let (s, _) = env.propfind("/dav/alice/calendars/work/", "1", LIST).await;
    assert_eq!(s, 503);
    let r = env
        .req("PUT", "/dav/alice/calendars/home/while-refused.ics")
        .body(event("while-refused", "x", true))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.text().await.unwrap().contains("no longer accepts"));
    // The operator sees that clients got saved copies.
    let page = env.page("/status").await;
    assert!(page.contains("saved copies"), "{page}");
    let st: serde_json::Value = env.status_json().await;
    assert_eq!(st["cache"]["stale_served"], 1, "{st}");
    assert!(st["cache"]["entries"].as_u64().unwrap() >= 1, "{st}");
    env.stop().await;
}

#[tokio::test]
async fn metrics_count_hits_misses_and_bytes() {
    let env = start().await;
    let mut listing = String::new();
    for _ in 0..3 {
        let (s, body) = env.propfind("/dav/alice/calendars/home/", "1", LIST).await;
        assert_eq!(s, 207);
        listing = body;
    }
    // The stored answer, plus what it says of each listed object's ETag.
    let listed = listing.matches("<d:getetag>").count() as u64;
    assert!(listed >= 1, "{listing}");
    let m = env.page("/metrics").await;
    let value = |name: &str| -> u64 {
        m.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{name} missing"))
            .parse()
            .unwrap()
    };
    assert_eq!(value("icloud_bridge_cache_misses_total"), 1);
    assert_eq!(value("icloud_bridge_cache_hits_total"), 2);
    assert!(value("icloud_bridge_cache_bytes") > 500);
    assert_eq!(value("icloud_bridge_cache_entries"), 1 + listed);
    // Upstream: the one miss (plus discovery) went out, with its status and latency.
    assert!(value("icloud_bridge_upstream_requests_total{service=\"caldav\",status=\"207\"}") >= 1);
    assert!(value("icloud_bridge_upstream_duration_seconds_count") >= 1);
    env.stop().await;
}

#[tokio::test]
async fn max_bytes_zero_turns_the_cache_off() {
    let env = start_with(Options {
        tweak: Box::new(|c| c.cache.max_bytes = 0),
        ..Options::default()
    })
    .await;
    let (s, _) = env.propfind("/dav/alice/calendars/home/", "1", LIST).await;
    assert_eq!(s, 207);
    env.control().clear_request_log();
    let (s, _) = env.propfind("/dav/alice/calendars/home/", "1", LIST).await;
    assert_eq!(s, 207);
    assert_eq!(
        env.control().request_log().len(),
        1,
        "the second request was not forwarded"
    );
    env.stop().await;
}

#[tokio::test]
async fn a_multiget_of_known_objects_in_another_order_or_grouping_is_answered_from_the_cache() {
    let env = start().await;
    let c = env.control();
    let objects = seed(&env, "m", 12, "x").await;
    let coll = "/dav/alice/calendars/work/";
    let (s, all) = env.report(coll, "1", &multiget(&objects)).await;
    assert_eq!(s, 207);
    c.clear_request_log();
    // Another client asks in reverse order, in two batches.
    let mut rev = objects.clone();
    rev.reverse();
    for batch in rev.chunks(6) {
        let (s, body) = env.report(coll, "1", &multiget(batch)).await;
        assert_eq!(s, 207, "{body}");
        assert_eq!(
            hrefs(&body),
            batch.to_vec(),
            "answer not in the order asked"
        );
        for h in batch {
            let piece = all
                .split("<d:response>")
                .find(|p| p.contains(h.as_str()))
                .unwrap();
            assert!(
                body.contains(piece.trim_end_matches("</d:multistatus>")),
                "{h} differs"
            );
        }
        assert!(body.contains("BEGIN:VCALENDAR"));
    }
    assert!(
        upstream(&c, "*").is_empty(),
        "upstream asked: {:?}",
        upstream(&c, "*")
    );
    // A write to one of them: the next multiget goes upstream and shows the change.
    let r = env
        .req("PUT", &objects[0])
        .header("Content-Type", "text/calendar")
        .body(event("m0", "changed by the phone", true))
        .send()
        .await
        .unwrap();
    let st = r.status();
    assert!(st.is_success(), "{st} {}", r.text().await.unwrap());
    let (_, body) = env.report(coll, "1", &multiget(&objects[..1])).await;
    assert!(body.contains("changed by the phone"), "{body}");
    env.stop().await;
}

#[tokio::test]
async fn objects_a_fresh_listing_shows_unchanged_are_served_from_the_cache_after_fresh_secs() {
    let env = start_with(Options {
        fresh_secs: 1,
        ..Options::default()
    })
    .await;
    let c = env.control();
    let objects = seed(&env, "v", 4, "first words").await;
    let coll = "/dav/alice/calendars/work/";
    let get = |path: String| {
        let r = env.req("GET", &path).send();
        async move {
            let r = r.await.unwrap();
            let etag = r.headers().get("etag").cloned();
            (r.status().as_u16(), etag, r.text().await.unwrap())
        }
    };
    let (s, etag0, body0) = get(objects[0].clone()).await;
    assert_eq!(s, 200);
    let (_, all) = env.report(coll, "1", &multiget(&objects[1..])).await;
    // Entries are fresh while younger than fresh_secs: a pause of exactly that long, begun
    // after they were stored, makes them stale.
    let after_fresh = std::time::Duration::from_secs(1);
    tokio::time::sleep(after_fresh).await;

    // Past fresh_secs with no listing since: the object is asked for again.
    c.clear_request_log();
    let (_, etag, body) = get(objects[0].clone()).await;
    assert_eq!((etag, body), (etag0.clone(), body0.clone()));
    assert_eq!(upstream(&c, "GET").len(), 1, "{:?}", upstream(&c, "*"));

    // A client lists the collection (as DAVx5 and python-caldav do before fetching): the
    // listing goes upstream, the objects it shows unchanged are then served from the cache,
    // by GET and by multiget, however old the stored copies are.
    tokio::time::sleep(after_fresh).await;
    c.clear_request_log();
    let (s, _) = env.propfind(coll, "1", LIST).await;
    assert_eq!(s, 207);
    assert_eq!(upstream(&c, "PROPFIND").len(), 1);
    let (s, etag, body) = get(objects[0].clone()).await;
    assert_eq!((s, etag, body), (200, etag0.clone(), body0.clone()));
    // Its age counts from the listing that vouched for it, not from when it was stored (1 s).
    let r = env.req("GET", &objects[0]).send().await.unwrap();
    assert_eq!(r.headers()["age"], "0");
    let (s, again) = env.report(coll, "1", &multiget(&objects[1..])).await;
    assert_eq!(s, 207);
    assert_eq!(again, all);
    assert!(
        upstream(&c, "GET").is_empty() && upstream(&c, "REPORT").is_empty(),
        "upstream asked: {:?}",
        upstream(&c, "*")
    );

    // Changed on iCloud by another device: the next listing shows a new ETag, so the
    // stored copy no longer counts and the new version is fetched.
    c.put_object(
        DEMO_APPLE_ID,
        "calendars/work",
        "v0.ics",
        &event("v0", "edited on the iPad", true),
    );
    c.put_object(
        DEMO_APPLE_ID,
        "calendars/work",
        "v1.ics",
        &event("v1", "edited on the iPad too", true),
    );
    tokio::time::sleep(after_fresh).await;
    c.clear_request_log();
    env.propfind(coll, "1", LIST).await;
    let (_, etag, body) = get(objects[0].clone()).await;
    assert!(body.contains("edited on the iPad"), "{body}");
    assert_ne!(etag, etag0);
    let (_, again) = env.report(coll, "1", &multiget(&objects[1..])).await;
    assert!(again.contains("edited on the iPad too"), "{again}");
    assert_eq!(upstream(&c, "GET").len(), 1, "{:?}", upstream(&c, "*"));
    assert_eq!(upstream(&c, "REPORT").len(), 1, "{:?}", upstream(&c, "*"));

    // A write through the bridge: copies and what earlier listings said are outdated at once.
    tokio::time::sleep(after_fresh).await;
    env.propfind(coll, "1", LIST).await;
    let r = env
        .req("PUT", &objects[2])
        .header("Content-Type", "text/calendar")
        .body(event("v2", "written by the laptop", true))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    let (_, again) = env.report(coll, "1", &multiget(&objects[2..3])).await;
    assert!(again.contains("written by the laptop"), "{again}");
    env.stop().await;
}

#[tokio::test]
async fn devices_using_other_names_for_the_bridge_share_answers_but_not_bridge_urls() {
    // Photos as links: a bridge URL in an answer names the origin the client used.
    let env = start_with(Options {
        tweak: Box::new(|c| c.carddav.photos = icloud_bridge::config::Photos::Link),
        ..Default::default()
    })
    .await;
    let c = env.control();
    let port = env.bridge.addr.port();
    let (here, there) = (format!("127.0.0.1:{port}"), format!("nas.local:{port}"));
    let get = |path: &str, host: &str| {
        let r = env.req("GET", path).header("Host", host).send();
        async move {
            let r = r.await.unwrap();
            assert_eq!(r.status(), 200);
            r.text().await.unwrap()
        }
    };
    let objects = seed(&env, "n", 1, "x").await;
    let event = get(&objects[0], &here).await;
    c.clear_request_log();
    // The laptop uses another name for the bridge: the same answer, from the cache.
    assert_eq!(get(&objects[0], &there).await, event);
    let (s, _) = env.propfind("/dav/alice/calendars/work/", "1", LIST).await;
    assert_eq!(s, 207);
    assert!(upstream(&c, "*").is_empty(), "{:?}", upstream(&c, "*"));

    // A contact whose photo is an upstream URL: the bridge URL in it names the origin the
    // client used, so each name gets its own answer.
    let (_, listing) = env.propfind("/dav/alice/contacts/card/", "1", LIST).await;
    let mut with_photo = None;
    for href in hrefs(&listing).into_iter().filter(|h| h.ends_with(".vcf")) {
        let card = get(&href, &here).await;
        if card.contains(&format!("http://{here}/dav/alice/_up/")) {
            with_photo = Some(href);
            break;
        }
    }
    let href = with_photo.expect("a seeded contact with a photo URL");
    c.clear_request_log();
    let card = get(&href, &there).await;
    assert!(
        card.contains(&format!("http://{there}/dav/alice/_up/")),
        "{card}"
    );
    assert!(!card.contains(&here), "{card}");
    assert_eq!(upstream(&c, "GET").len(), 1, "{:?}", upstream(&c, "*"));
    // ... and each is served from the cache for its own name.
    c.clear_request_log();
    assert!(get(&href, &here).await.contains(&format!("http://{here}/")));
    assert!(get(&href, &there)
        .await
        .contains(&format!("http://{there}/")));
    assert!(upstream(&c, "*").is_empty(), "{:?}", upstream(&c, "*"));
    env.stop().await;
}

#[tokio::test]
async fn a_client_checking_its_copy_gets_304_from_the_cache() {
    let env = start().await;
    let path = "/dav/alice/calendars/home/1761bf8c-6363-11eb-8fe4-74e5f9bfd8c1.ics";
    let r = env.req("GET", path).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let etag = r.headers()["etag"].to_str().unwrap().to_string();
    env.control().clear_request_log();
    let r = env
        .req("GET", path)
        .header("If-None-Match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 304);
    assert_eq!(r.headers()["etag"].to_str().unwrap(), etag);
    assert!(env.control().request_log().is_empty());
    // Another ETag: the answer comes from upstream, whole.
    let r = env
        .req("GET", path)
        .header("If-None-Match", "\"something-else\"")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("BEGIN:VCALENDAR"));
    assert_eq!(env.control().request_log().len(), 1);
    env.stop().await;
}

#[tokio::test]
async fn no_account_ever_sees_another_accounts_cached_answers() {
    use icloud_bridge::config::AccountConfig;
    use icloud_bridge::standin::{AccountSpec, StandinConfig};
    let mut bob = AccountSpec::new("bob@example.com", "98765432", 42);
    bob.app_passwords = vec!["bbbb-cccc-dddd-eeee".into()];
    let env = start_with(Options {
        standin: StandinConfig::demo().with_account(bob),
        tweak: Box::new(|c| {
            c.accounts.push(AccountConfig {
                name: "bob".into(),
                apple_id: "bob@example.com".into(),
                password_file: None,
                password_command: Some("echo bbbb-cccc-dddd-eeee".into()),
            })
        }),
        ..Options::default()
    })
    .await;
    let bob_pass = env
        .bridge
        .app
        .auth
        .logins
        .add("bobphone", "bob", false, None)
        .unwrap();
    env.control().put_object(
        "bob@example.com",
        "calendars/home",
        "bob-only.ics",
        &event("bob-only", "Bob's", true),
    );
    // Alice fills the cache for her home calendar ...
    let (s, alice) = env.propfind("/dav/alice/calendars/home/", "1", LIST).await;
    assert_eq!(s, 207);
    assert!(!alice.contains("bob-only"));
    // ... and Bob, asking the same shape of request for his, gets his own.
    let (s, bobs, _) = as_user(
        &env,
        "bobphone",
        &bob_pass,
        "PROPFIND",
        "/dav/bob/calendars/home/",
        "1",
        LIST,
    )
    .await;
    assert_eq!(s, 207, "{bobs}");
    assert!(
        bobs.contains("/dav/bob/calendars/home/bob-only.ics"),
        "{bobs}"
    );
    assert!(!bobs.contains("/dav/alice/"), "{bobs}");
    // Neither login reaches the other's tree, cached or not.
    let (s, _, _) = as_user(
        &env,
        "bobphone",
        &bob_pass,
        "PROPFIND",
        "/dav/alice/calendars/home/",
        "1",
        LIST,
    )
    .await;
    assert_eq!(s, 403);
    let (s, _, _) = as_user(
        &env,
        &env.user,
        &env.pass,
        "PROPFIND",
        "/dav/bob/calendars/home/",
        "1",
        LIST,
    )
    .await;
    assert_eq!(s, 403);
    env.stop().await;
}
