//! The operator's pages end to end: the status page in each state, the paste form for a new
//! app-specific password (admin login, CSRF token, same origin, Apple's verdict) and the
//! one-time setup page, against the in-process iCloud stand-in.

mod support;

use std::io::Write;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use icloud_bridge::accounts::vault::Vault;
use icloud_bridge::auth::logins::LoginStore;
use icloud_bridge::config::{AccountConfig, Config, UpstreamKind};
use icloud_bridge::secret::Secret;
use icloud_bridge::server::listener;
use icloud_bridge::standin::{Standin, StandinConfig, DEMO_APPLE_ID, DEMO_APP_PASSWORD};
use support::*;

// ----- captured logs -----

static LOGS: Mutex<Vec<u8>> = Mutex::new(Vec::new());

struct Capture;

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOGS.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Capture the bridge's logs (every level) of all tests of this file.
fn capture_logs() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(
                "info,icloud_bridge=trace,hyper=trace,reqwest=trace",
            ))
            .with_ansi(false)
            .with_writer(|| Capture)
            .try_init();
    });
}

fn logs() -> String {
    String::from_utf8_lossy(&LOGS.lock().unwrap()).into_owned()
}

fn assert_not_logged(secrets: &[&str]) {
    let text = logs();
    for s in secrets {
        assert!(!s.is_empty());
        assert!(!text.contains(s), "a secret reached the log");
        // The compact form (as typed without dashes) must not show up either.
        let compact = s.replace('-', "");
        assert!(!text.contains(&compact), "a secret reached the log");
    }
}

// ----- bridge set-ups -----

struct Boot {
    /// (name, admin)
    logins: &'static [(&'static str, bool)],
    account: bool,
    app_password: Option<&'static str>,
}

const ADMIN: &str = "boss";
const PHONE: &str = "phone";

/// A stand-in and a bridge with the given logins (passwords returned in order).
async fn boot(b: Boot) -> (Env, Vec<String>) {
    capture_logs();
    let standin = Standin::start(StandinConfig::demo()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = Config::defaults();
    cfg.server.listen = "127.0.0.1:0".parse().unwrap();
    cfg.server.data_dir = dir.path().to_path_buf();
    cfg.upstream.kind = UpstreamKind::Icloud;
    cfg.upstream.caldav = standin.caldav_url().parse().unwrap();
    cfg.upstream.carddav = standin.carddav_url().parse().unwrap();
    cfg.upstream.timeout_secs = 5;
    cfg.accounts = if b.account {
        vec![AccountConfig {
            name: "alice".into(),
            apple_id: DEMO_APPLE_ID.into(),
            password_file: None,
            password_command: None,
        }]
    } else {
        Vec::new()
    };
    if let Some(pw) = b.app_password {
        Vault::open(dir.path())
            .set("alice", &Secret::new(pw.into()))
            .unwrap();
    }
    let store = LoginStore::open(dir.path()).unwrap();
    let passwords: Vec<String> = b
        .logins
        .iter()
        .map(|(name, admin)| store.add(name, "alice", *admin, None).unwrap())
        .collect();
    let bridge = listener::start(cfg.clone()).await.unwrap();
    let base = format!("http://{}", bridge.addr);
    let (user, pass) = match b.logins.first() {
        Some((n, _)) => (n.to_string(), passwords[0].clone()),
        None => (String::new(), String::new()),
    };
    let env = Env {
        standin,
        bridge,
        base,
        user,
        pass,
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
        dir,
        cfg,
    };
    (env, passwords)
}

/// One working account with a non-admin `phone` and an admin `boss` login.
async fn boot_normal() -> (Env, String) {
    let (env, pw) = boot(Boot {
        logins: &[(PHONE, false), (ADMIN, true)],
        account: true,
        app_password: Some(DEMO_APP_PASSWORD),
    })
    .await;
    (env, pw[1].clone())
}

async fn get_text(env: &Env, path: &str) -> (u16, String) {
    let r = env.http.get(env.url(path)).send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

fn stored(env: &Env) -> Option<String> {
    Vault::open(env.dir.path())
        .get("alice")
        .unwrap()
        .map(|(s, _)| s.expose().to_string())
}

/// `value` of the hidden input named `name`.
fn hidden(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let i = html
        .find(&marker)
        .unwrap_or_else(|| panic!("no {name} in {html}"))
        + marker.len();
    html[i..i + html[i..].find('"').unwrap()].to_string()
}

/// The paste form as the admin sees it; returns its CSRF token.
async fn form_token(env: &Env, admin_pw: &str) -> String {
    let r = env
        .http
        .get(env.url("/admin/reconnect?account=alice"))
        .basic_auth(ADMIN, Some(admin_pw))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    hidden(&r.text().await.unwrap(), "csrf")
}

/// POST the paste form; `origin` None sends neither Origin nor Referer.
async fn post_form(
    env: &Env,
    admin_pw: &str,
    origin: Option<&str>,
    fields: &[(&str, &str)],
) -> reqwest::Response {
    let mut rb = env
        .http
        .post(env.url("/admin/reconnect"))
        .basic_auth(ADMIN, Some(admin_pw))
        .form(fields);
    if let Some(o) = origin {
        rb = rb.header("Origin", o);
    }
    rb.send().await.unwrap()
}

async fn dav_status(env: &Env, user: &str, pass: &str) -> u16 {
    env.http
        .request(
            reqwest::Method::from_bytes(b"PROPFIND").unwrap(),
            env.url("/dav/alice/calendars/"),
        )
        .basic_auth(user, Some(pass))
        .header("Depth", "1")
        .body(PROPFIND_LIST)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// A write, which always needs iCloud (a cache may answer reads while iCloud refuses):
/// PUT a new event as `phone`; its status.
async fn write_status(env: &Env) -> u16 {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let uid = format!(
        "admin-{}-{}",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    env.http
        .put(env.url(&format!("/dav/alice/calendars/home/{uid}.ics")))
        .basic_auth(&env.user, Some(&env.pass))
        .header("Content-Type", "text/calendar; charset=utf-8")
        .header("If-None-Match", "*")
        .body(event(&uid, "Check-up", true))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

// ----- status page -----

#[tokio::test]
async fn status_page_when_working_masks_the_apple_id_and_lists_client_urls() {
    let (env, admin_pw) = boot_normal().await;
    assert_eq!(dav_status(&env, PHONE, &env.pass).await, 207);
    let (s, html) = get_text(&env, "/").await;
    assert_eq!(s, 200);
    assert!(html.contains("a…@icloud.com"), "{html}");
    assert!(!html.contains(DEMO_APPLE_ID), "{html}");
    assert!(html.contains("Working <code>ok</code>"), "{html}");
    assert!(!html.contains("Fix now"), "{html}");
    assert!(html.contains("Last contact with iCloud"), "{html}");
    assert!(html.contains("set just now"), "{html}");
    assert!(
        html.contains("caldav") && html.contains("carddav"),
        "{html}"
    );
    for url in [
        format!("<code>{}/</code>", env.base),
        format!("<code>{}/dav/alice/calendars/</code>", env.base),
        format!("<code>{}/dav/alice/contacts/</code>", env.base),
    ] {
        assert!(html.contains(&url), "{url} missing: {html}");
    }
    // Phone-friendly, self-contained, no scripts.
    assert!(html.contains("name=\"viewport\""), "{html}");
    assert!(!html.contains("<script"), "{html}");
    assert!(!html.contains("<link") && !html.contains("src="), "{html}");
    assert!(get_text(&env, "/status")
        .await
        .1
        .contains("Working <code>ok</code>"));
    // /status.json keeps its shape.
    let (_, json) = get_text(&env, "/status.json").await;
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["accounts"][0]["state"], "ok");
    assert_eq!(v["accounts"][0]["apple_id"], "a…@icloud.com");
    assert!(v["accounts"][0]["services"]["caldav"].is_object());
    assert!(v["accounts"][0].get("view").is_none(), "{v}");
    assert_not_logged(&[DEMO_APP_PASSWORD, &admin_pw, &env.pass]);
    env.stop().await;
}

#[tokio::test]
async fn status_page_after_a_revocation_says_why_and_offers_fix_now() {
    let (env, admin_pw) = boot_normal().await;
    assert_eq!(dav_status(&env, PHONE, &env.pass).await, 207);
    env.control().revoke_all_asps(DEMO_APPLE_ID);
    assert_eq!(write_status(&env).await, 503);
    let (s, html) = get_text(&env, "/status").await;
    assert_eq!(s, 200);
    assert!(
        html.contains("Password rejected <code>auth_rejected</code>"),
        "{html}"
    );
    assert!(
        html.contains("iCloud no longer accepts the app-specific password for a…@icloud.com"),
        "{html}"
    );
    assert!(
        !html.contains(DEMO_APPLE_ID),
        "the sentence must mask it too: {html}"
    );
    assert!(html.contains("Fix now"), "{html}");
    assert!(
        html.contains("href=\"https://account.apple.com/account/manage\" target=\"_blank\""),
        "{html}"
    );
    assert!(
        html.contains("href=\"/admin/reconnect?account=alice\""),
        "{html}"
    );
    assert_not_logged(&[DEMO_APP_PASSWORD, &admin_pw]);
    env.stop().await;
}

#[tokio::test]
async fn status_page_without_a_password_offers_fix_now() {
    let (env, _) = boot(Boot {
        logins: &[(ADMIN, true)],
        account: true,
        app_password: None,
    })
    .await;
    let (s, html) = get_text(&env, "/").await;
    assert_eq!(s, 200);
    assert!(
        html.contains("No password set <code>unconfigured</code>"),
        "{html}"
    );
    assert!(html.contains("Fix now"), "{html}");
    assert!(
        html.contains("App-specific password</dt><dd>not set"),
        "{html}"
    );
    env.stop().await;
}

// ----- the paste form -----

#[tokio::test]
async fn paste_form_needs_an_admin_login() {
    let (env, admin_pw) = boot_normal().await;
    let r = env
        .http
        .get(env.url("/admin/reconnect?account=alice"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let challenge = r.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(challenge.contains("realm=\"icloud-bridge\""), "{challenge}");
    let r = env
        .http
        .get(env.url("/admin/reconnect?account=alice"))
        .basic_auth(ADMIN, Some("wrong-password"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = env
        .http
        .get(env.url("/admin/reconnect?account=alice"))
        .basic_auth(PHONE, Some(&env.pass))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let body = r.text().await.unwrap();
    assert!(body.contains("not an admin login"), "{body}");
    assert!(!body.contains("name=\"csrf\""), "{body}");
    let r = env
        .http
        .get(env.url("/admin/reconnect?account=alice"))
        .basic_auth(ADMIN, Some(&admin_pw))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body = r.text().await.unwrap();
    assert!(
        body.contains("type=\"password\" name=\"password\""),
        "{body}"
    );
    assert_eq!(hidden(&body, "csrf").len(), 64);
    // A non-admin cannot post either.
    let r = env
        .http
        .post(env.url("/admin/reconnect"))
        .basic_auth(PHONE, Some(&env.pass))
        .header("Origin", env.base.clone())
        .form(&[("account", "alice"), ("password", "abcd-efgh-ijkl-mnop")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(stored(&env).as_deref(), Some(DEMO_APP_PASSWORD));
    env.stop().await;
}

#[tokio::test]
async fn paste_form_refuses_bad_tokens_and_foreign_origins() {
    let (env, admin_pw) = boot_normal().await;
    let fresh = env
        .control()
        .generate_asp(DEMO_APPLE_ID, "csrf test")
        .unwrap();
    let token = form_token(&env, &admin_pw).await;
    let origin = env.base.clone();
    let zeros = "0".repeat(64);
    type Case<'a> = (Option<&'a str>, Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case> = vec![
        (
            Some(&origin),
            vec![("account", "alice"), ("password", &fresh)],
            "no token",
        ),
        (
            Some(&origin),
            vec![("account", "alice"), ("csrf", &zeros), ("password", &fresh)],
            "wrong token",
        ),
        (
            Some("http://evil.example"),
            vec![("account", "alice"), ("csrf", &token), ("password", &fresh)],
            "foreign origin",
        ),
        (
            None,
            vec![("account", "alice"), ("csrf", &token), ("password", &fresh)],
            "no origin or referer",
        ),
    ];
    for (o, fields, what) in cases {
        let r = post_form(&env, &admin_pw, o, &fields).await;
        assert_eq!(r.status(), 403, "{what}");
        let body = r.text().await.unwrap();
        assert!(!body.contains(&fresh), "{what}: password echoed");
        assert_eq!(stored(&env).as_deref(), Some(DEMO_APP_PASSWORD), "{what}");
    }
    // A Referer from the bridge itself is enough when Origin is absent.
    let r = env
        .http
        .post(env.url("/admin/reconnect"))
        .basic_auth(ADMIN, Some(&admin_pw))
        .header(
            "Referer",
            format!("{}/admin/reconnect?account=alice", env.base),
        )
        .form(&[("account", "alice"), ("csrf", &token), ("password", &fresh)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(stored(&env).as_deref(), Some(fresh.as_str()));
    // An oversized form is refused without reading it all.
    let big = "x".repeat(64 * 1024);
    let r = post_form(
        &env,
        &admin_pw,
        Some(&origin),
        &[("account", "alice"), ("csrf", &token), ("password", &big)],
    )
    .await;
    assert_eq!(r.status(), 413);
    assert_not_logged(&[DEMO_APP_PASSWORD, &fresh, &admin_pw]);
    env.stop().await;
}

#[tokio::test]
async fn paste_form_refuses_an_apple_id_password_before_asking_apple() {
    let (env, admin_pw) = boot_normal().await;
    let token = form_token(&env, &admin_pw).await;
    env.control().clear_request_log();
    let typed = "Correct-Horse-Battery-1";
    let r = post_form(
        &env,
        &admin_pw,
        Some(&env.base),
        &[("account", "alice"), ("csrf", &token), ("password", typed)],
    )
    .await;
    assert_eq!(r.status(), 422);
    let body = r.text().await.unwrap();
    assert!(
        body.contains("looks like the Apple ID password, not an app-specific password"),
        "{body}"
    );
    assert!(body.contains("The old password is still stored"), "{body}");
    assert!(!body.contains(typed), "{body}");
    assert!(env.control().request_log().is_empty(), "Apple was asked");
    assert_eq!(stored(&env).as_deref(), Some(DEMO_APP_PASSWORD));
    // The re-shown form carries a fresh, working token.
    assert_eq!(hidden(&body, "csrf").len(), 64);
    assert_not_logged(&[typed, &admin_pw]);
    env.stop().await;
}

#[tokio::test]
async fn paste_form_keeps_the_old_password_when_apple_rejects_the_new_one() {
    let (env, admin_pw) = boot_normal().await;
    assert_eq!(dav_status(&env, PHONE, &env.pass).await, 207);
    let token = form_token(&env, &admin_pw).await;
    let unknown = "zzzz-yyyy-xxxx-wwww";
    let r = post_form(
        &env,
        &admin_pw,
        Some(&env.base),
        &[
            ("account", "alice"),
            ("csrf", &token),
            ("password", unknown),
        ],
    )
    .await;
    assert_eq!(r.status(), 422);
    let body = r.text().await.unwrap();
    assert!(
        body.contains("iCloud refused the app-specific password"),
        "{body}"
    );
    assert!(!body.contains(unknown), "{body}");
    assert_eq!(stored(&env).as_deref(), Some(DEMO_APP_PASSWORD));
    // The live account was not disturbed by the test.
    assert_eq!(write_status(&env).await, 201);
    let (_, json) = get_text(&env, "/status.json").await;
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["accounts"][0]["state"], "ok", "{v}");
    assert_not_logged(&[DEMO_APP_PASSWORD, unknown, &admin_pw]);
    env.stop().await;
}

#[tokio::test]
async fn paste_form_recovers_a_revoked_account_without_restart() {
    let (env, admin_pw) = boot_normal().await;
    assert_eq!(dav_status(&env, PHONE, &env.pass).await, 207);
    env.control().revoke_all_asps(DEMO_APPLE_ID);
    assert_eq!(write_status(&env).await, 503);
    let fresh = env.control().generate_asp(DEMO_APPLE_ID, "bridge").unwrap();
    // Pasted as Apple shows it, upper case in groups with spaces.
    let pasted = fresh.replace('-', " ").to_uppercase();
    let token = form_token(&env, &admin_pw).await;
    let r = post_form(
        &env,
        &admin_pw,
        Some(&env.base),
        &[
            ("account", "alice"),
            ("csrf", &token),
            ("password", &pasted),
        ],
    )
    .await;
    assert_eq!(r.status(), 303);
    assert_eq!(
        r.headers()["location"].to_str().unwrap(),
        "/status?reconnected=alice"
    );
    let body = r.text().await.unwrap();
    assert!(!body.contains(&fresh) && !body.contains(&pasted));
    wait_until(Duration::from_secs(2), "a write succeeds again", || async {
        write_status(&env).await == 201
    })
    .await;
    assert_eq!(stored(&env).as_deref(), Some(fresh.as_str()));
    let (_, html) = get_text(&env, "/status?reconnected=alice").await;
    assert!(html.contains("is in use now"), "{html}");
    assert!(html.contains("Working <code>ok</code>"), "{html}");
    assert!(!html.contains("Fix now"), "{html}");
    assert!(!html.contains(&fresh), "{html}");
    assert_not_logged(&[DEMO_APP_PASSWORD, &fresh, &admin_pw]);
    env.stop().await;
}

// ----- setup -----

/// `Ready` page → the generated password.
fn shown_password(html: &str) -> String {
    let marker = "<code class=\"secret\">";
    let i = html.find(marker).unwrap_or_else(|| panic!("{html}")) + marker.len();
    html[i..i + html[i..].find('<').unwrap()].to_string()
}

async fn post_setup(env: &Env, origin: Option<&str>, fields: &[(&str, &str)]) -> reqwest::Response {
    let mut rb = env.http.post(env.url("/setup")).form(fields);
    if let Some(o) = origin {
        rb = rb.header("Origin", o);
    }
    rb.send().await.unwrap()
}

#[tokio::test]
async fn setup_page_needs_its_token_creates_an_admin_and_closes() {
    let (env, _) = boot(Boot {
        logins: &[],
        account: true,
        app_password: None,
    })
    .await;
    let token = env.bridge.app.admin.setup_token().expect("a setup token");
    assert!(
        logs().contains(&format!("/setup?token={token} to create the first login")),
        "the setup URL was not logged"
    );
    let (_, status_html) = get_text(&env, "/").await;
    assert!(status_html.contains("Set up first"), "{status_html}");
    assert!(!status_html.contains(&token), "the token is not public");
    assert_eq!(get_text(&env, "/setup").await.0, 403);
    assert_eq!(get_text(&env, "/setup?token=nope").await.0, 403);
    let (s, html) = get_text(&env, &format!("/setup?token={token}")).await;
    assert_eq!(s, 200);
    assert!(
        html.contains(DEMO_APPLE_ID),
        "the Apple ID is fixed: {html}"
    );
    assert!(!html.contains("name=\"apple_id\""), "{html}");
    let origin = env.base.clone();
    // Wrong token, and no origin: refused.
    let r = post_setup(
        &env,
        Some(&origin),
        &[
            ("token", "nope"),
            ("login", "admin"),
            ("password", DEMO_APP_PASSWORD),
        ],
    )
    .await;
    assert_eq!(r.status(), 403);
    let r = post_setup(
        &env,
        None,
        &[
            ("token", &token),
            ("login", "admin"),
            ("password", DEMO_APP_PASSWORD),
        ],
    )
    .await;
    assert_eq!(r.status(), 403);
    // A password Apple does not know: refused with the sentence, nothing created.
    let r = post_setup(
        &env,
        Some(&origin),
        &[
            ("token", &token),
            ("login", "admin"),
            ("password", "qqqq-qqqq-qqqq-qqqq"),
        ],
    )
    .await;
    assert_eq!(r.status(), 422);
    let body = r.text().await.unwrap();
    assert!(
        body.contains("iCloud refused the app-specific password"),
        "{body}"
    );
    assert!(!body.contains("qqqq-qqqq-qqqq-qqqq"), "{body}");
    assert!(env.bridge.app.auth.logins.is_empty());
    assert_eq!(stored(&env), None);
    // The right one: an admin login is made and shown once.
    let r = post_setup(
        &env,
        Some(&origin),
        &[
            ("token", &token),
            ("login", "admin"),
            ("password", DEMO_APP_PASSWORD),
        ],
    )
    .await;
    assert_eq!(r.status(), 200);
    let html = r.text().await.unwrap();
    assert!(!html.contains(DEMO_APP_PASSWORD), "{html}");
    let pw = shown_password(&html);
    assert!(pw.len() >= 16, "{pw}");
    assert_eq!(stored(&env).as_deref(), Some(DEMO_APP_PASSWORD));
    assert_eq!(dav_status(&env, "admin", &pw).await, 207);
    let r = env
        .http
        .get(env.url("/admin/reconnect?account=alice"))
        .basic_auth("admin", Some(&pw))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "the setup login is an admin");
    // Single use: the token is gone, the page answers 410.
    assert!(env.bridge.app.admin.setup_token().is_none());
    let r = post_setup(
        &env,
        Some(&origin),
        &[
            ("token", &token),
            ("login", "second"),
            ("password", DEMO_APP_PASSWORD),
        ],
    )
    .await;
    assert_eq!(r.status(), 410);
    assert_eq!(
        get_text(&env, &format!("/setup?token={token}")).await.0,
        410
    );
    assert_eq!(env.bridge.app.auth.logins.list().unwrap().len(), 1);
    assert!(!get_text(&env, "/").await.1.contains("Set up first"));
    assert_not_logged(&[DEMO_APP_PASSWORD, &pw]);
    env.stop().await;
}

#[tokio::test]
async fn setup_page_is_gone_once_a_login_exists() {
    let (env, _) = boot_normal().await;
    assert!(env.bridge.app.admin.setup_token().is_none());
    assert_eq!(get_text(&env, "/setup?token=anything").await.0, 410);
    assert_eq!(get_text(&env, "/setup").await.0, 410);
    env.stop().await;
}

#[tokio::test]
async fn setup_page_creates_the_account_when_none_is_configured() {
    let (env, _) = boot(Boot {
        logins: &[],
        account: false,
        app_password: None,
    })
    .await;
    let token = env.bridge.app.admin.setup_token().unwrap();
    let (s, html) = get_text(&env, &format!("/setup?token={token}")).await;
    assert_eq!(s, 200);
    assert!(html.contains("name=\"apple_id\""), "{html}");
    let (_, json) = get_text(&env, "/status.json").await;
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&json).unwrap()["accounts"],
        serde_json::json!([])
    );
    let r = post_setup(
        &env,
        Some(&env.base),
        &[
            ("token", &token),
            ("login", "me"),
            ("apple_id", DEMO_APPLE_ID),
            ("password", DEMO_APP_PASSWORD),
        ],
    )
    .await;
    assert_eq!(r.status(), 200);
    let pw = shown_password(&r.text().await.unwrap());
    let name = DEMO_APPLE_ID
        .split('@')
        .next()
        .unwrap()
        .to_ascii_lowercase();
    // Served at once, and remembered in data_dir for the next start.
    let (_, json) = get_text(&env, "/status.json").await;
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["accounts"][0]["name"], name.as_str(), "{v}");
    assert_eq!(v["accounts"][0]["state"], "ok", "{v}");
    let toml = std::fs::read_to_string(env.dir.path().join("accounts.toml")).unwrap();
    assert!(toml.contains(DEMO_APPLE_ID), "{toml}");
    let r = env
        .http
        .request(
            reqwest::Method::from_bytes(b"PROPFIND").unwrap(),
            env.url(&format!("/dav/{name}/calendars/")),
        )
        .basic_auth("me", Some(&pw))
        .header("Depth", "1")
        .body(PROPFIND_LIST)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 207);
    assert_not_logged(&[DEMO_APP_PASSWORD, &pw]);
    env.stop().await;
}
