//! End-to-end: WebDAV-Push. A real bridge on the stand-in and a test push service on
//! loopback that decrypts what it receives with the subscribing device's private key (as a
//! phone's push client would). Devices register the way DAVx5 does; a write through the
//! bridge, or a change made directly in iCloud, reaches the other devices' push services.

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use icloud_bridge::config::{Config, PushAllow};
use icloud_bridge::push::webpush::{self, Receiver};
use support::*;

const POLL_SECS: u64 = 2;

/// One message the push service took in.
#[derive(Debug, Clone)]
struct Got {
    path: String,
    headers: HashMap<String, String>,
    body: Vec<u8>,
    at: Instant,
}

/// A Web Push service on 127.0.0.1: records every POST; `/gone/...` answers 410,
/// `/flaky/...` 503 to its first message.
struct PushService {
    addr: std::net::SocketAddr,
    got: Arc<Mutex<Vec<Got>>>,
    task: tokio::task::JoinHandle<()>,
}

impl PushService {
    async fn start() -> PushService {
        let got = Arc::new(Mutex::new(Vec::new()));
        let g = got.clone();
        let (addr, task) = http_server(move |parts, body| {
            let g = g.clone();
            async move {
                let path = parts.uri.path().to_string();
                let gone = path.starts_with("/gone/");
                g.lock().unwrap().push(Got {
                    path,
                    headers: headers_by_name(&parts.headers),
                    body: body.to_vec(),
                    at: Instant::now(),
                });
                if gone {
                    http::StatusCode::GONE
                } else {
                    http::StatusCode::CREATED
                }
            }
        })
        .await;
        PushService { addr, got, task }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn to(&self, path: &str) -> Vec<Got> {
        self.got
            .lock()
            .unwrap()
            .iter()
            .filter(|g| g.path == path)
            .cloned()
            .collect()
    }

    /// Wait up to `within` for the `n`-th message to `path`.
    async fn wait(&self, path: &str, n: usize, within: Duration) -> Option<Got> {
        let end = Instant::now() + within;
        loop {
            if let Some(g) = self.to(path).get(n - 1) {
                return Some(g.clone());
            }
            if Instant::now() > end {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for PushService {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A device's Web Push key pair and auth secret (what UnifiedPush makes on the phone).
struct Device {
    secret: p256::SecretKey,
    receiver: Receiver,
}

impl Device {
    fn new() -> Device {
        use p256::elliptic_curve::sec1::ToEncodedPoint;
        let secret = loop {
            if let Ok(s) = p256::SecretKey::from_slice(&rand::random::<[u8; 32]>()) {
                break s;
            }
        };
        let public = secret.public_key().to_encoded_point(false);
        let receiver = Receiver::from_b64(
            &webpush::b64(public.as_bytes()),
            &webpush::b64(&rand::random::<[u8; 16]>()),
        )
        .unwrap();
        Device { secret, receiver }
    }

    fn register_body(&self, resource: &str) -> String {
        // DAVx5's shape (PushRegistrationManager.subscribe): no trigger, no content-encoding.
        let expires =
            httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(3 * 86400));
        format!(
            r#"<?xml version='1.0' encoding='UTF-8' standalone='yes' ?><push-register xmlns="https://bitfire.at/webdav-push"><subscription><web-push-subscription><push-resource>{resource}</push-resource><subscription-public-key type="p256dh">{}</subscription-public-key><auth-secret>{}</auth-secret></web-push-subscription></subscription><expires>{expires}</expires></push-register>"#,
            webpush::b64(&self.receiver.public),
            webpush::b64(&self.receiver.auth),
        )
    }

    /// The message's plaintext, decrypted as the device would.
    fn read(&self, body: &[u8]) -> String {
        let plain = webpush::decrypt(body, &self.receiver, |sender| {
            let sender = p256::PublicKey::from_sec1_bytes(sender).ok()?;
            let shared =
                p256::ecdh::diffie_hellman(self.secret.to_nonzero_scalar(), sender.as_affine());
            Some(shared.raw_secret_bytes().to_vec())
        })
        .expect("the device decrypts the message");
        String::from_utf8(plain).unwrap()
    }
}

fn with_push(service: std::net::SocketAddr) -> Box<dyn FnOnce(&mut Config)> {
    Box::new(move |cfg: &mut Config| {
        cfg.push.allow = vec![PushAllow::parse(&service.to_string()).unwrap()];
        cfg.push.poll_secs = POLL_SECS;
        cfg.cache.fresh_secs = 1;
    })
}

async fn start_push(service: &PushService) -> Env {
    start_with(Options {
        tweak: with_push(service.addr),
        fresh_secs: 1,
        ..Options::default()
    })
    .await
}

/// POST a push-register as `user`; (status, Location, Expires, body).
async fn register(
    env: &Env,
    user: (&str, &str),
    path: &str,
    body: &str,
) -> (u16, String, String, String) {
    let r = env
        .http
        .post(env.url(path))
        .basic_auth(user.0, Some(user.1))
        .header("content-type", "application/xml; charset=utf-8")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let h = |n: &str| {
        r.headers()
            .get(n)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default()
    };
    let (loc, exp) = (h("location"), h("expires"));
    let s = r.status().as_u16();
    (s, loc, exp, r.text().await.unwrap())
}

fn text_of(xml: &str, tag: &str) -> Option<String> {
    let open = xml.find(&format!("{tag}>"))?;
    let rest = &xml[open + tag.len() + 1..];
    let end = rest.find("</")?;
    Some(rest[..end].to_string())
}

async fn sync_token(env: &Env, path: &str) -> String {
    let (s, body) = env
        .propfind(path, "0", r#"<?xml version="1.0"?><d:propfind xmlns:d="DAV:"><d:prop><d:sync-token/></d:prop></d:propfind>"#)
        .await;
    assert_eq!(s, 207, "{body}");
    text_of(&body, "sync-token").expect("a sync-token")
}

const DAVX5_LISTING: &str = r#"<?xml version="1.0" encoding="UTF-8"?><d:propfind xmlns:d="DAV:" xmlns:P="https://bitfire.at/webdav-push" xmlns:C="urn:ietf:params:xml:ns:caldav"><d:prop><d:current-user-privilege-set/><d:displayname/><d:owner/><d:resourcetype/><P:transports/><P:topic/><C:supported-calendar-component-set/></d:prop></d:propfind>"#;

#[tokio::test]
async fn a_write_through_the_bridge_reaches_other_devices_at_once_and_not_the_writer() {
    let service = PushService::start().await;
    let env = start_push(&service).await;
    let laptop_pass = env.second_login();
    let phone = (env.user.clone(), env.pass.clone());
    let laptop = ("laptop".to_string(), laptop_pass);

    // DAVx5's collection listing: the calendars carry the VAPID key and a topic.
    let (s, listing) = env
        .propfind("/dav/alice/calendars/", "1", DAVX5_LISTING)
        .await;
    assert_eq!(s, 207, "{listing}");
    let home = listing
        .split("<d:response>")
        .find(|r| r.contains("/dav/alice/calendars/home/"))
        .expect("home listed");
    let topic = text_of(home, "P:topic").expect("a topic for the calendar");
    let vapid = text_of(home, "P:vapid-public-key type=\"p256ecdsa\"").expect("the VAPID key");
    assert!(home.contains("<P:web-push>"), "{home}");
    assert!(!topic.contains("home") && topic.len() >= 16, "{topic}");
    env.assert_no_leak("the listing", &listing);
    // Depth 0 on the calendar, with supported-triggers.
    let (_, own) = env
        .propfind("/dav/alice/calendars/home/", "0", r#"<d:propfind xmlns:d="DAV:" xmlns:P="https://bitfire.at/webdav-push"><d:prop><P:topic/><P:supported-triggers/></d:prop></d:propfind>"#)
        .await;
    assert_eq!(
        text_of(&own, "P:topic").as_deref(),
        Some(topic.as_str()),
        "{own}"
    );
    assert!(own.contains("<P:content-update><depth>1</depth>"), "{own}");
    // The address book too (its listing also gets its display name from the bridge).
    let (s, books) = env
        .propfind("/dav/alice/contacts/", "1", DAVX5_LISTING)
        .await;
    assert_eq!(s, 207, "{books}");
    let card = books
        .split("<d:response>")
        .find(|r| r.contains("/dav/alice/contacts/card/"))
        .expect("the address book listed");
    let book_topic = text_of(card, "P:topic").expect("a topic for the address book");
    assert_ne!(book_topic, topic);
    assert!(card.contains("Contacts"), "{card}");
    // OPTIONS on the calendar advertises webdav-push.
    let r = env
        .req("OPTIONS", "/dav/alice/calendars/home/")
        .send()
        .await
        .unwrap();
    let dav = r
        .headers()
        .get("dav")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        dav.contains("webdav-push") && dav.contains("calendar-access"),
        "{dav}"
    );

    let (dphone, dlaptop) = (Device::new(), Device::new());
    let (s, phone_loc, expires, _) = register(
        &env,
        (&phone.0, &phone.1),
        "/dav/alice/calendars/home/",
        &dphone.register_body(&service.url("/phone")),
    )
    .await;
    assert_eq!(s, 201);
    assert!(
        phone_loc.starts_with(&env.base) && phone_loc.contains("/dav/alice/_push/"),
        "{phone_loc}"
    );
    let exp = httpdate::parse_http_date(&expires).unwrap();
    assert!(
        exp > std::time::SystemTime::now() + Duration::from_secs(3 * 86400 - 60),
        "{expires}"
    );
    // Registering the same push resource again updates it: 204, same URL.
    let (s, again, _, _) = register(
        &env,
        (&phone.0, &phone.1),
        "/dav/alice/calendars/home/",
        &dphone.register_body(&service.url("/phone")),
    )
    .await;
    assert_eq!((s, again.as_str()), (204, phone_loc.as_str()));
    let (s, laptop_loc, _, _) = register(
        &env,
        (&laptop.0, &laptop.1),
        "/dav/alice/calendars/home/",
        &dlaptop.register_body(&service.url("/laptop")),
    )
    .await;
    assert_eq!(s, 201);

    // The laptop writes, asking not to be told of its own change.
    let t0 = Instant::now();
    let s = env
        .http
        .put(env.url("/dav/alice/calendars/home/push-1.ics"))
        .basic_auth(&laptop.0, Some(&laptop.1))
        .header("content-type", "text/calendar")
        .header("push-dont-notify", format!("\"{laptop_loc}\""))
        .body(event("push-1", "Pushed", true))
        .send()
        .await
        .unwrap()
        .status();
    assert!(s.is_success(), "{s}");
    let got = service
        .wait("/phone", 1, Duration::from_secs(2))
        .await
        .expect("the phone is told within 2 s");
    let latency = got.at - t0;
    let msg = dphone.read(&got.body);
    assert!(
        msg.contains(&format!("<P:topic>{topic}</P:topic>")),
        "{msg}"
    );
    let token = sync_token(&env, "/dav/alice/calendars/home/").await;
    assert!(
        msg.contains(&format!(
            "<D:sync-token>{}</D:sync-token>",
            token.replace('&', "&amp;")
        )),
        "{msg} vs {token}"
    );
    assert_eq!(got.headers["content-encoding"], "aes128gcm");
    // Nothing of the Apple ID's password (or any Basic credential) goes to a push service.
    let app_password = icloud_bridge::standin::DEMO_APP_PASSWORD;
    for g in service.got.lock().unwrap().iter() {
        assert!(!g.headers["authorization"]
            .to_ascii_lowercase()
            .starts_with("basic"));
        assert!(!g.headers.values().any(|v| v.contains(app_password)));
        assert!(!g
            .body
            .windows(app_password.len())
            .any(|w| w == app_password.as_bytes()));
    }
    assert!(got.headers.contains_key("ttl") && got.headers.contains_key("urgency"));
    // VAPID: an ES256 JWT for this push service, signed with the advertised key.
    let auth = &got.headers["authorization"];
    let (jwt, k) = auth
        .strip_prefix("vapid t=")
        .unwrap()
        .split_once(", k=")
        .unwrap();
    assert_eq!(k, vapid);
    let parts: Vec<&str> = jwt.split('.').collect();
    let claims: serde_json::Value =
        serde_json::from_slice(&webpush::decode_b64(parts[1]).unwrap()).unwrap();
    assert_eq!(claims["aud"], format!("http://{}", service.addr));
    ring::signature::UnparsedPublicKey::new(
        &ring::signature::ECDSA_P256_SHA256_FIXED,
        webpush::decode_b64(k).unwrap(),
    )
    .verify(
        format!("{}.{}", parts[0], parts[1]).as_bytes(),
        &webpush::decode_b64(parts[2]).unwrap(),
    )
    .expect("the VAPID signature verifies");
    // The writer heard nothing.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        service.to("/laptop").is_empty(),
        "the writer was told of its own change"
    );
    // The phone's write reaches the laptop (and the laptop's registration is its own).
    assert!(
        env.put_event(
            "/dav/alice/calendars/home/push-2.ics",
            "push-2",
            "From the phone"
        )
        .await
            < 300
    );
    let got = service
        .wait("/laptop", 1, Duration::from_secs(2))
        .await
        .expect("the laptop is told of the phone's write");
    assert!(dlaptop.read(&got.body).contains(&topic));
    // `Push-Dont-Notify: *`: nobody is told.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let before = service.got.lock().unwrap().len();
    let s = env
        .req("PUT", "/dav/alice/calendars/home/push-3.ics")
        .header("content-type", "text/calendar")
        .header("push-dont-notify", "*")
        .body(event("push-3", "Quiet", true))
        .send()
        .await
        .unwrap()
        .status();
    assert!(s.is_success());
    // Both devices are on the status page and in status.json; /metrics counts deliveries.
    let st = env.status_json().await;
    let subs = st["accounts"][0]["push_subscriptions"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(subs.len(), 2, "{subs:?}");
    assert!(subs
        .iter()
        .any(|s| s["device"] == "laptop" && s["last_result"] == "delivered"));
    assert!(
        !st.to_string().contains(&service.url("/")),
        "push resources are capabilities: not shown"
    );
    let page = env.page("/status").await;
    assert!(page.contains("WebDAV-Push") && page.contains("/dav/alice/calendars/home/"));
    // Three messages: the phone's own write (it sent no Push-Dont-Notify) reached it too;
    // none for the quiet write.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let n = service.got.lock().unwrap().len();
    assert_eq!((before, n), (3, 3));
    let metrics = env.page("/metrics").await;
    assert!(
        metrics.contains(&format!(
            "icloud_bridge_push_deliveries_total{{result=\"delivered\"}} {n}"
        )),
        "{metrics}"
    );
    eprintln!("push latency after a write through the bridge: {latency:?}");
    env.stop().await;
}

#[tokio::test]
async fn a_change_made_in_icloud_is_pushed_within_poll_secs() {
    let service = PushService::start().await;
    let env = start_push(&service).await;
    let d = Device::new();
    let (s, _, _, body) = register(
        &env,
        (&env.user, &env.pass),
        "/dav/alice/calendars/work/",
        &d.register_body(&service.url("/p")),
    )
    .await;
    assert_eq!(s, 201, "{body}");
    // Another device writes straight to iCloud.
    let t0 = Instant::now();
    let etag = env.control().put_object(
        icloud_bridge::standin::DEMO_APPLE_ID,
        "calendars/work",
        "elsewhere.ics",
        &event("elsewhere", "From an iPhone", true),
    );
    assert!(!etag.is_empty());
    let got = service
        .wait("/p", 1, Duration::from_secs(POLL_SECS + 2))
        .await
        .expect("the change in iCloud is pushed within poll_secs + 2 s");
    let msg = d.read(&got.body);
    let token = sync_token(&env, "/dav/alice/calendars/work/").await;
    assert!(
        msg.contains(&format!("<D:sync-token>{token}</D:sync-token>")),
        "{msg} vs {token}"
    );
    eprintln!("push latency after a change in iCloud: {:?}", got.at - t0);
    // Nothing changes: nothing more is pushed, and the watch costs one upstream request per
    // collection and period.
    env.control().clear_request_log();
    tokio::time::sleep(Duration::from_secs(POLL_SECS * 3)).await;
    assert_eq!(service.to("/p").len(), 1, "pushed without a change");
    let checks = env
        .control()
        .request_log()
        .iter()
        .filter(|r| r.method == "PROPFIND" && r.path.contains("/work/"))
        .count();
    assert!(
        (2..=4).contains(&checks),
        "{checks} upstream checks in 3 periods"
    );
    // A change made while the bridge is stopped is pushed at its first check.
    let env = env
        .restart_with(|dir, standin| {
            let seen = std::fs::read_to_string(dir.join("push-seen.json")).unwrap();
            assert!(seen.contains("\"work\""), "{seen}");
            standin.control().put_object(
                icloud_bridge::standin::DEMO_APPLE_ID,
                "calendars/work",
                "while-stopped.ics",
                &event("while-stopped", "Made while the bridge was stopped", true),
            );
        })
        .await;
    service
        .wait("/p", 2, Duration::from_secs(POLL_SECS + 2))
        .await
        .expect("a change made while the bridge was stopped is pushed after the restart");
    // A burst of writes is one message (or two, when the first already went out).
    let before = service.to("/p").len();
    for i in 0..5 {
        assert!(
            env.put_event(
                &format!("/dav/alice/calendars/work/burst-{i}.ics"),
                &format!("burst-{i}"),
                "b"
            )
            .await
                < 300
        );
    }
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let burst = service.to("/p").len() - before;
    assert!(
        (1..=2).contains(&burst),
        "{burst} messages for a burst of 5 writes"
    );
    // A property change of the calendar is a property update.
    let n = service.to("/p").len();
    let (s, body) = env
        .xml("PROPPATCH", "/dav/alice/calendars/work/", "0", r#"<d:propertyupdate xmlns:d="DAV:"><d:set><d:prop><d:displayname>Work (renamed)</d:displayname></d:prop></d:set></d:propertyupdate>"#)
        .await;
    assert!(s < 300, "{s} {body}");
    let got = service
        .wait("/p", n + 1, Duration::from_secs(3))
        .await
        .expect("a property update is pushed");
    let msg = d.read(&got.body);
    // (A content update the poller saw in the same moment may be merged into it.)
    assert!(msg.contains("<P:property-update/>"), "{msg}");
    env.stop().await;
}

#[tokio::test]
async fn deleted_gone_and_expired_registrations_get_nothing() {
    let service = PushService::start().await;
    let env = start_push(&service).await;
    let laptop_pass = env.second_login();
    let phone = (env.user.clone(), env.pass.clone());
    let (a, b, c) = (Device::new(), Device::new(), Device::new());
    let cal = "/dav/alice/calendars/home/";
    let (_, a_loc, _, _) = register(
        &env,
        (&phone.0, &phone.1),
        cal,
        &a.register_body(&service.url("/a")),
    )
    .await;
    let (_, b_loc, _, _) = register(
        &env,
        (&phone.0, &phone.1),
        cal,
        &b.register_body(&service.url("/gone/b")),
    )
    .await;
    let (s, _, _, _) = register(
        &env,
        (&phone.0, &phone.1),
        cal,
        &c.register_body(&service.url("/c")),
    )
    .await;
    assert_eq!(s, 201);
    // Another device cannot remove (or even see) the phone's registration.
    let r = env
        .http
        .delete(&a_loc)
        .basic_auth("laptop", Some(&laptop_pass))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = env
        .http
        .delete(&a_loc)
        .basic_auth(&phone.0, Some(&phone.1))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let r = env
        .http
        .delete(&a_loc)
        .basic_auth(&phone.0, Some(&phone.1))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "deleted once");
    // A write: the deleted one gets nothing; the gone one's service answers 410 and the
    // registration is dropped.
    assert!(env.put_event(&format!("{cal}d-1.ics"), "d-1", "x").await < 300);
    service
        .wait("/c", 1, Duration::from_secs(2))
        .await
        .expect("the live registration is told");
    service
        .wait("/gone/b", 1, Duration::from_secs(2))
        .await
        .expect("the gone one was tried");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        service.to("/a").is_empty(),
        "a deleted registration was pushed"
    );
    let r = env
        .http
        .delete(&b_loc)
        .basic_auth(&phone.0, Some(&phone.1))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        404,
        "a 410 from the push service removes the registration"
    );
    let st = env.status_json().await;
    assert_eq!(
        st["accounts"][0]["push_subscriptions"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert!(env
        .page("/metrics")
        .await
        .contains("icloud_bridge_push_deliveries_total{result=\"gone\"} 1"));

    // A removed login's registrations go with it (within a poll period).
    let l = Device::new();
    let (s, _, _, _) = register(
        &env,
        ("laptop", &laptop_pass),
        cal,
        &l.register_body(&service.url("/l")),
    )
    .await;
    assert_eq!(s, 201);
    assert!(env.bridge.app.auth.logins.remove("laptop").unwrap());
    tokio::time::sleep(Duration::from_secs(POLL_SECS + 1)).await;
    assert_eq!(
        env.status_json().await["accounts"][0]["push_subscriptions"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert!(env.put_event(&format!("{cal}d-3.ics"), "d-3", "z").await < 300);
    service
        .wait("/c", 2, Duration::from_secs(3))
        .await
        .expect("the phone is told");
    assert!(
        service.to("/l").is_empty(),
        "a removed login's device was pushed"
    );

    // Registrations survive a restart; an expired one gets nothing.
    let env = env.restart().await;
    let file = env.dir.path().join("push.json");
    let mut doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(doc["registrations"].as_array().unwrap().len(), 1);
    assert_eq!(
        env.status_json().await["accounts"][0]["push_subscriptions"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    doc["registrations"][0]["expires"] = serde_json::json!(1);
    let env = {
        // Stop, expire it on disk, start again.
        let Env {
            standin,
            bridge,
            user,
            pass,
            http,
            dir,
            cfg,
            ..
        } = env;
        bridge.stop().await;
        std::fs::write(&file, serde_json::to_vec(&doc).unwrap()).unwrap();
        let bridge = icloud_bridge::server::listener::start(cfg.clone())
            .await
            .unwrap();
        Env {
            base: format!("http://{}", bridge.addr),
            standin,
            bridge,
            user,
            pass,
            http,
            dir,
            cfg,
        }
    };
    let before = service.to("/c").len();
    assert!(env.put_event(&format!("{cal}d-2.ics"), "d-2", "y").await < 300);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        service.to("/c").len(),
        before,
        "an expired registration was pushed"
    );
    env.stop().await;
}

#[tokio::test]
async fn bad_registrations_are_refused_with_the_drafts_preconditions() {
    let service = PushService::start().await;
    let env = start_push(&service).await;
    let d = Device::new();
    let user = (env.user.as_str(), env.pass.as_str());
    let cal = "/dav/alice/calendars/home/";
    // A push service outside [push] allow: never contacted.
    for outside in [
        "http://127.0.0.1:1/p",
        "https://push.example/p",
        "http://10.0.0.1/p",
    ] {
        let (s, loc, _, body) = register(&env, user, cal, &d.register_body(outside)).await;
        assert_eq!(s, 403, "{outside}: {body}");
        assert!(
            body.contains("invalid-subscription")
                && body.contains("https://bitfire.at/webdav-push"),
            "{body}"
        );
        assert!(body.contains("[push] allow"), "{body}");
        assert!(loc.is_empty());
    }
    // No encryption keys.
    let plain = d
        .register_body(&service.url("/p"))
        .replace("<auth-secret>", "<x>")
        .replace("</auth-secret>", "</x>");
    let (s, _, _, body) = register(&env, user, cal, &plain).await;
    assert_eq!(s, 403, "{body}");
    assert!(body.contains("invalid-subscription"));
    // A broken key.
    let broken = d.register_body(&service.url("/p")).replace(
        &webpush::b64(&d.receiver.public)[..20],
        "AAAAAAAAAAAAAAAAAAAA",
    );
    assert_eq!(register(&env, user, cal, &broken).await.0, 403);
    // Only unsupported triggers.
    let odd = d
        .register_body(&service.url("/p"))
        .replace("<expires>", "<trigger><other/></trigger><expires>");
    let (s, _, _, body) = register(&env, user, cal, &odd).await;
    assert_eq!(s, 403);
    assert!(body.contains("no-supported-trigger"), "{body}");
    // Malformed and oversized bodies: clear 4xx.
    let cut = &d.register_body(&service.url("/p"))[..200];
    assert_eq!(register(&env, user, cal, cut).await.0, 400);
    let big = d.register_body(&service.url("/p")).replace(
        "<expires>",
        &format!("<pad>{}</pad><expires>", "x".repeat(40_000)),
    );
    assert_eq!(register(&env, user, cal, &big).await.0, 413);
    // A collection that does not exist.
    let (s, _, _, body) = register(
        &env,
        user,
        "/dav/alice/calendars/nothing-here/",
        &d.register_body(&service.url("/p")),
    )
    .await;
    assert_eq!(s, 403, "{body}");
    assert!(body.contains("push-not-available"), "{body}");
    // A registration URL of another account's path, or made up: 404.
    let r = env
        .req("DELETE", "/dav/alice/_push/nothing-here")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(service.got.lock().unwrap().is_empty(), "nothing was pushed");
    assert!(env.status_json().await["accounts"][0]["push_subscriptions"]
        .as_array()
        .unwrap()
        .is_empty());
    env.stop().await;
}

#[tokio::test]
async fn with_push_off_nothing_is_offered_or_kept() {
    let env = start_with(Options {
        tweak: Box::new(|cfg: &mut Config| cfg.push.enabled = false),
        ..Options::default()
    })
    .await;
    let (s, listing) = env
        .propfind("/dav/alice/calendars/", "1", DAVX5_LISTING)
        .await;
    assert_eq!(s, 207);
    assert!(!listing.contains("vapid-public-key"), "{listing}");
    let r = env
        .req("OPTIONS", "/dav/alice/calendars/home/")
        .send()
        .await
        .unwrap();
    let dav = r
        .headers()
        .get("dav")
        .map(|v| v.to_str().unwrap().to_string());
    assert!(!dav.unwrap_or_default().contains("webdav-push"));
    assert!(!env.dir.path().join("push-keys.json").exists());
    assert!(!env.page("/metrics").await.contains("push_deliveries"));
    env.stop().await;
}
