//! End-to-end: telling the operator. A real bridge on the stand-in, a webhook sink on
//! loopback; iCloud revokes the password or disappears, and the operator hears about it once.

mod support;

use std::time::Duration;

use hmac::Mac;
use icloud_bridge::config::Config;
use icloud_bridge::standin::DEMO_APPLE_ID;
use support::*;

const APPLE_ID_URL: &str = "https://account.apple.com/account/manage";

fn with_notify(
    webhook: String,
    min_secs: u64,
    secret: Option<&str>,
) -> Box<dyn FnOnce(&mut Config)> {
    let secret = secret.map(|s| icloud_bridge::secret::Secret::new(s.into()));
    Box::new(move |cfg: &mut Config| {
        cfg.notify.webhook = Some(webhook.parse().unwrap());
        cfg.notify.min_secs = min_secs;
        cfg.notify.secret = secret;
    })
}

async fn list_calendars(env: &Env) -> (u16, String) {
    env.propfind("/dav/alice/calendars/", "1", PROPFIND_LIST)
        .await
}

/// A first successful request that the cache will not answer for `list_calendars` later
/// (while iCloud fails, cached reads are served stale and would hide the failure).
async fn first_success(env: &Env) -> (u16, String) {
    env.propfind("/dav/alice/calendars/", "0", PROPFIND_LIST)
        .await
}

fn state_changes(log: &str, state: &str) -> usize {
    log.lines()
        .filter(|l| {
            l.contains("account state changed") && l.contains(&format!("state=\"{state}\""))
        })
        .count()
}

async fn metrics(env: &Env) -> String {
    env.page("/metrics").await
}

#[tokio::test]
async fn a_revoked_password_is_told_once_by_webhook_and_log_line() {
    let log = LogCapture::start();
    let sink = Sink::start(0).await;
    let env = start_with(Options {
        tweak: with_notify(sink.url("/hook"), 300, None),
        ..Options::default()
    })
    .await;
    let (s, body) = first_success(&env).await;
    assert_eq!(s, 207, "{body}");
    env.control().revoke_all_asps(DEMO_APPLE_ID);
    // 200 failing client requests after the rejection: one event, one webhook.
    for i in 0..200 {
        let (s, body) = list_calendars(&env).await;
        assert_eq!(s, 503, "request {i}: {body}");
        if i == 0 {
            assert!(body.contains("no longer accepts"), "{body}");
        }
    }
    let got = sink.wait_for(1, 10).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let got_later = sink.received();
    assert_eq!(got_later.len(), 1, "{got_later:?}");
    assert_eq!(got[0].method, "POST");
    assert_eq!(got[0].path, "/hook");
    assert_eq!(got[0].headers["content-type"], "application/json");
    let j = got[0].json();
    assert_eq!(j["event"], "state");
    assert_eq!(j["account"], "alice");
    assert_eq!(j["apple_id"], DEMO_APPLE_ID);
    assert_eq!(j["state"], "auth_rejected");
    assert_eq!(j["previous_state"], "ok");
    assert!(
        j["reason"].as_str().unwrap().contains("no longer accepts"),
        "{j}"
    );
    assert_eq!(j["fix_url"], APPLE_ID_URL);
    assert!(
        j["status_url"].as_str().unwrap().ends_with("/status"),
        "{j}"
    );
    let time = j["time"].as_str().unwrap();
    assert!(time.len() == 20 && time.ends_with('Z'), "{time}");
    assert!(!got[0].headers.contains_key("x-icloud-bridge-signature"));

    let text = log.text();
    assert_eq!(state_changes(&text, "auth_rejected"), 1, "{text}");
    let m = metrics(&env).await;
    assert!(
        m.contains(
            "icloud_bridge_state_changes_total{account=\"alice\",state=\"auth_rejected\"} 1"
        ),
        "{m}"
    );
    assert!(
        m.contains("icloud_bridge_webhook_deliveries_total{result=\"ok\"} 1"),
        "{m}"
    );
    env.stop().await;
}

#[tokio::test]
async fn unreachable_icloud_is_told_and_a_failing_webhook_is_retried_with_a_signature() {
    let sink = Sink::start(2).await;
    let env = start_with(Options {
        tweak: with_notify(sink.url("/hook?topic=t"), 0, Some("hook-secret")),
        ..Options::default()
    })
    .await;
    let (s, _) = first_success(&env).await;
    assert_eq!(s, 207);
    // Partition and front host both gone.
    let Env {
        standin,
        bridge,
        base,
        user,
        pass,
        http,
        ..
    } = env;
    standin.stop().await;
    let r = http
        .request(
            reqwest::Method::from_bytes(b"PROPFIND").unwrap(),
            format!("{base}/dav/alice/calendars/"),
        )
        .basic_auth(&user, Some(&pass))
        .header("Depth", "1")
        .body(PROPFIND_LIST)
        .send()
        .await
        .unwrap();
    assert!(matches!(r.status().as_u16(), 502 | 504), "{}", r.status());
    // Two 500s, then delivered (backoff about 1 + 2 s).
    let got = sink.wait_for(1, 15).await;
    assert_eq!(got.len(), 1, "attempts: {:?}", sink.attempts);
    assert_eq!(sink.attempts.load(std::sync::atomic::Ordering::SeqCst), 3);
    let j = got[0].json();
    assert_eq!(j["state"], "unreachable");
    assert!(j["fix_url"].as_str().unwrap().ends_with("/status"), "{j}");
    assert_eq!(got[0].method, "POST");
    assert_eq!(got[0].path, "/hook?topic=t");
    // The signature verifies against the exact body.
    let sig = got[0].headers["x-icloud-bridge-signature"].clone();
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(b"hook-secret").unwrap();
    mac.update(got[0].body.as_bytes());
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(sig, format!("sha256={hex}"));
    let m = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        m.contains("icloud_bridge_webhook_deliveries_total{result=\"retry\"} 2"),
        "{m}"
    );
    assert!(
        m.contains("icloud_bridge_state_changes_total{account=\"alice\",state=\"unreachable\"} 1"),
        "{m}"
    );
    bridge.stop().await;
}

async fn wait_for_file(path: &std::path::Path, needle: &str) -> String {
    wait_for(
        Duration::from_secs(5),
        &format!("{} contains {needle}", path.display()),
        || async {
            std::fs::read_to_string(path)
                .ok()
                .filter(|t| t.contains(needle))
        },
    )
    .await
}

#[tokio::test]
async fn state_json_survives_a_restart_and_nothing_is_told_twice() {
    let sink = Sink::start(0).await;
    let env = start_with(Options {
        tweak: with_notify(sink.url("/hook"), 300, None),
        ..Options::default()
    })
    .await;
    let (s, _) = list_calendars(&env).await;
    assert_eq!(s, 207);
    let path = env.dir.path().join("state.json");
    let text = wait_for_file(&path, "\"accepted_before\":true").await;
    assert!(text.contains("\"learned\""), "{text}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    }

    // Restarted with the password still good: the acceptance is remembered, so a rejection
    // after the restart reads as "revoked", not "never accepted".
    let env = env.restart().await;
    env.control().revoke_all_asps(DEMO_APPLE_ID);
    let (s, body) = list_calendars(&env).await;
    assert_eq!(s, 503, "{body}");
    assert!(body.contains("no longer accepts"), "{body}");
    assert_eq!(sink.wait_for(1, 10).await.len(), 1);
    let text = wait_for_file(&path, "\"notified_state\":\"auth_rejected\"").await;
    assert!(text.contains("auth_rejected"), "{text}");

    // Another restart, still rejected: the webhook is not sent again.
    let env = env.restart().await;
    let (s, body) = list_calendars(&env).await;
    assert_eq!(s, 503, "{body}");
    assert!(body.contains("no longer accepts"), "{body}");
    let status = env.page("/status.json").await;
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["accounts"][0]["state"], "auth_rejected", "{status}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(sink.received().len(), 1, "{:?}", sink.received());
    env.stop().await;
}

#[tokio::test]
async fn a_state_json_of_the_previous_version_still_loads() {
    let env = start().await;
    let (s, _) = list_calendars(&env).await;
    assert_eq!(s, 207);
    let path = env.dir.path().join("state.json");
    let text = wait_for_file(&path, "\"learned\"").await;
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let learned = v["accounts"]["alice"]["learned"].clone();
    let env = {
        let Env {
            standin,
            bridge,
            dir,
            ..
        } = env;
        bridge.stop().await;
        let old = serde_json::json!({ "accounts": { "alice": { "learned": learned } } });
        std::fs::write(&path, old.to_string()).unwrap();
        // Discovery comes from the old file: no PROPFIND to the front host is needed.
        standin.control().clear_request_log();
        (standin, dir)
    };
    let (standin, dir) = env;
    let mut cfg = Config::defaults();
    cfg.server.listen = "127.0.0.1:0".parse().unwrap();
    cfg.server.data_dir = dir.path().to_path_buf();
    cfg.upstream.caldav = standin.caldav_url().parse().unwrap();
    cfg.upstream.carddav = standin.carddav_url().parse().unwrap();
    cfg.accounts = vec![icloud_bridge::config::AccountConfig {
        name: "alice".into(),
        apple_id: DEMO_APPLE_ID.into(),
        password_file: None,
        password_command: None,
    }];
    let app = icloud_bridge::app::App::new(cfg).unwrap();
    let acc = app.accounts.get("alice").unwrap();
    assert!(acc.learned().is_some());
    assert_eq!(acc.persisted().services.len(), 0);
    // The next save keeps `learned` readable and adds the new fields beside it.
    app.accounts.save();
    let text = std::fs::read_to_string(&path).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert!(
        v["accounts"]["alice"]["learned"]["cal_home"].is_string(),
        "{text}"
    );
    assert!(
        v["accounts"]["alice"]["accepted_before"].is_boolean(),
        "{text}"
    );
    standin.stop().await;
}

/// The webhook's path and query and the signing secret stay out of the log, at trace level,
/// in the real binary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_token_and_secret_never_reach_the_log() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let standin =
        icloud_bridge::standin::Standin::start(icloud_bridge::standin::StandinConfig::demo())
            .await
            .unwrap();
    let sink = Sink::start(1).await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    icloud_bridge::accounts::vault::Vault::open(&data)
        .set(
            "alice",
            &icloud_bridge::secret::Secret::new(icloud_bridge::standin::DEMO_APP_PASSWORD.into()),
        )
        .unwrap();
    let pass = icloud_bridge::auth::logins::LoginStore::open(&data)
        .unwrap()
        .add("phone", "alice", false, None)
        .unwrap();
    let token_path = "/tok-PATHSECRET-4711";
    let query = "auth=QUERYSECRET-0815";
    let secret = "hmac-KEYSECRET-xyz";
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\ndata_dir = \"data\"\n\n[[account]]\nname = \"alice\"\napple_id = \"{DEMO_APPLE_ID}\"\n\n[upstream]\ncaldav = \"{}\"\ncarddav = \"{}\"\ntimeout_secs = 5\n\n[notify]\nwebhook = \"{}\"\nmin_secs = 0\nsecret = \"{secret}\"\n",
            standin.caldav_url(),
            standin.carddav_url(),
            sink.url(&format!("{token_path}?{query}")),
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_icloud-bridge"))
        .env_remove("ICLOUD_BRIDGE_CONFIG")
        .env_remove("ICLOUD_BRIDGE_LISTEN")
        .env_remove("ICLOUD_BRIDGE_DATA_DIR")
        .env_remove("ICLOUD_BRIDGE_APP_PASSWORD")
        .env("ICLOUD_BRIDGE_LOG", "trace")
        .args(["--config", cfg.to_str().unwrap(), "serve"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let l = log.clone();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if line.contains("icloud-bridge listening") {
                if let Some(a) = line.split("addr=").nth(1) {
                    let _ = addr_tx.send(a.split_whitespace().next().unwrap_or("").to_string());
                }
            }
            let mut g = l.lock().unwrap();
            g.push_str(&line);
            g.push('\n');
        }
    });
    let addr = tokio::task::spawn_blocking(move || addr_rx.recv_timeout(Duration::from_secs(30)))
        .await
        .unwrap()
        .expect("the bridge logs its address");
    let http = reqwest::Client::new();
    let propfind = |depth: &'static str| {
        http.request(
            reqwest::Method::from_bytes(b"PROPFIND").unwrap(),
            format!("http://{addr}/dav/alice/calendars/"),
        )
        .basic_auth("phone", Some(&pass))
        .header("Depth", depth)
        .body(PROPFIND_LIST)
        .send()
    };
    // Depth 0 first, Depth 1 after: the cache would answer a repeat of the first.
    assert_eq!(propfind("0").await.unwrap().status(), 207);
    standin.control().revoke_all_asps(DEMO_APPLE_ID);
    assert_eq!(propfind("1").await.unwrap().status(), 503);
    // One 500 first: the retry path logs too.
    let got = sink.wait_for(1, 15).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].json()["state"], "auth_rejected");
    let pid = libc::pid_t::try_from(child.id()).unwrap();
    // SAFETY: sending SIGTERM to our own child process.
    unsafe {
        libc::kill(pid, libc::SIGTERM);
    }
    let _ = tokio::task::spawn_blocking(move || {
        let _ = child.wait();
        let _ = reader.join();
    })
    .await;
    let text = log.lock().unwrap().clone();
    assert!(text.len() > 1000, "expected a verbose log: {text}");
    assert!(
        text.contains(&format!("http://{}", sink.addr)),
        "the webhook's origin is logged: {text}"
    );
    assert!(text.contains("account state changed"), "{text}");
    for s in ["PATHSECRET", "QUERYSECRET", "KEYSECRET"] {
        assert!(!text.contains(s), "{s} found in the log");
    }
    standin.stop().await;
}
