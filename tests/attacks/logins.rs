//! Findings 6 and 7: wrong-password floods slow only the address they come from, take turns
//! (one argon2 run at a time per address, so a new device elsewhere is not queued behind
//! them), never delay a remembered login, and are logged summarised; unknown names cost the
//! same argon2 run as known ones, long passwords included. The attacker plays from
//! 127.0.0.2; the victim device is 127.0.0.1.

use std::time::Duration;

use reqwest::Method;

use crate::connections::{client_from, ATTACKER};
use crate::support::*;

fn propfind() -> Method {
    Method::from_bytes(b"PROPFIND").unwrap()
}

/// Create another device login on the running bridge; its password.
async fn add_login(env: &Env, name: &str) -> String {
    let app = env.bridge.app.clone();
    let name = name.to_string();
    tokio::task::spawn_blocking(move || app.auth.logins.add(&name, "alice", false, None).unwrap())
        .await
        .unwrap()
}

/// A discovery PROPFIND (answered by the bridge itself) as `user` from `client`; the status.
async fn login_from(env: &Env, client: &reqwest::Client, user: &str, pass: &str) -> u16 {
    client
        .request(propfind(), env.url("/"))
        .basic_auth(user, Some(pass))
        .header("Depth", "0")
        .body(PROPFIND_PRINCIPAL)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

fn spawn_login(
    env: &Env,
    client: &reqwest::Client,
    user: &str,
    pass: &str,
) -> tokio::task::JoinHandle<u16> {
    let req = client
        .request(propfind(), env.url("/"))
        .basic_auth(user, Some(pass))
        .header("Depth", "0")
        .body(PROPFIND_PRINCIPAL);
    tokio::spawn(async move { req.send().await.map(|r| r.status().as_u16()).unwrap_or(0) })
}

#[tokio::test]
async fn a_wrong_password_flood_does_not_queue_a_new_device_behind_it() {
    let env = start_with(Options {
        tweak: Box::new(|c| c.limits.max_connections_per_ip = 200),
        ..Default::default()
    })
    .await;
    let tablet = add_login(&env, "tablet").await;
    let logins = &env.bridge.app.auth.logins;
    // 120 wrong passwords at once from one address, each on its own connection.
    let attacker = client_from(ATTACKER);
    let flood: Vec<_> = (0..120)
        .map(|i| spawn_login(&env, &attacker, "phone", &format!("guess-{i}")))
        .collect();
    // Every attempt has arrived: it waits for its turn, is in it, or has been answered.
    let throttle = &env.bridge.app.auth.throttle;
    let attacker_ip = ATTACKER.parse().unwrap();
    wait_until(
        Duration::from_secs(10),
        "all 120 wrong attempts reach the throttle",
        || async {
            let answered = flood.iter().filter(|t| t.is_finished()).count();
            throttle.queued(attacker_ip) + answered >= 120
        },
    )
    .await;
    assert!(logins.argon2_runs() > 0, "the flood did not start");
    // A new device's first login from another address.
    let before = logins.argon2_runs();
    let status = login_from(&env, &env.http, "tablet", &tablet).await;
    let runs = logins.argon2_runs() - before;
    assert_eq!(status, 207);
    // Its own run, plus at most the attacker's one in flight and one ahead of it.
    assert!(runs <= 3, "the new device waited for {runs} argon2 runs");
    // The flood itself runs one attempt at a time, each after its delay: most still wait.
    let done = flood.iter().filter(|t| t.is_finished()).count();
    assert!(done < 20, "{done} of 120 wrong attempts already answered");
    for t in &flood {
        t.abort();
    }
    // (Not stopped gracefully: the queued attempts would hold the drain for its full time.)
}

#[tokio::test]
async fn parallel_wrong_attempts_from_one_address_take_turns_and_are_never_locked_out() {
    let env = start().await;
    let attacker = client_from(ATTACKER);
    let attempts: Vec<_> = (0..8)
        .map(|i| spawn_login(&env, &attacker, "phone", &format!("guess-{i}")))
        .collect();
    for a in attempts {
        assert_eq!(a.await.unwrap(), 401);
    }
    let logins = &env.bridge.app.auth.logins;
    assert_eq!(logins.argon2_runs(), 8);
    assert_eq!(logins.peak_argon2_in_flight(), 1, "two checks ran at once");
    // Never locked out: the right password from that address still works.
    assert_eq!(login_from(&env, &attacker, "phone", &env.pass).await, 207);
    env.stop().await;
}

#[tokio::test]
async fn a_remembered_login_never_waits_behind_failures_or_argon2() {
    let env = start().await;
    let device = client_from("127.0.0.1");
    assert_eq!(login_from(&env, &device, "phone", &env.pass).await, 207);
    // A stale app on the same device keeps failing: its address now has a delay.
    for i in 0..6 {
        assert_eq!(
            login_from(&env, &device, "phone", &format!("old-{i}")).await,
            401
        );
    }
    assert!(
        env.bridge
            .app
            .auth
            .throttle
            .delay_for("127.0.0.1".parse().unwrap())
            > Duration::ZERO
    );
    // One more failure from that address (its turn waits for the delay), one from a clean
    // address (one argon2 run, no delay), then the remembered login.
    let same = spawn_login(&env, &device, "phone", "old-again");
    let clean = spawn_login(&env, &client_from("127.0.0.3"), "phone", "a-guess");
    let throttle = &env.bridge.app.auth.throttle;
    wait_until(
        Duration::from_secs(5),
        "both failures wait for or hold their address's turn",
        || async {
            throttle.queued("127.0.0.1".parse().unwrap()) == 1
                && (throttle.queued("127.0.0.3".parse().unwrap()) == 1 || clean.is_finished())
        },
    )
    .await;
    let runs = env.bridge.app.auth.logins.argon2_runs();
    assert_eq!(login_from(&env, &device, "phone", &env.pass).await, 207);
    assert!(
        !clean.is_finished() && !same.is_finished(),
        "the remembered login was answered after an argon2 run or a delay"
    );
    assert!(env.bridge.app.auth.logins.argon2_runs() <= runs + 1);
    assert_eq!(same.await.unwrap(), 401);
    assert_eq!(clean.await.unwrap(), 401);
    env.stop().await;
}

#[tokio::test]
async fn unknown_and_known_names_cost_the_same_even_with_long_passwords() {
    let env = start().await;
    let attacker = client_from(ATTACKER);
    let long = "p".repeat(2048);
    let logins = &env.bridge.app.auth.logins;
    for (name, pass) in [
        ("phone", long.as_str()),
        ("nobody", long.as_str()),
        ("phone", "short-wrong"),
        ("nobody", "short-wrong"),
    ] {
        let before = logins.argon2_runs();
        assert_eq!(login_from(&env, &attacker, name, pass).await, 401);
        assert_eq!(
            logins.argon2_runs(),
            before + 1,
            "{name} with a {}-byte password",
            pass.len()
        );
    }
    env.stop().await;
}

#[tokio::test]
async fn failures_are_logged_once_per_address_per_minute_without_secrets() {
    let logs = LogCapture::start();
    let env = start().await;
    let attacker = client_from(ATTACKER);
    let mut attempts = Vec::new();
    for i in 0..4 {
        attempts.push(spawn_login(
            &env,
            &attacker,
            "phone",
            &format!("secret-guess-{i}"),
        ));
        attempts.push(spawn_login(
            &env,
            &attacker,
            &format!("typed-password-{i}"),
            "x",
        ));
    }
    for a in attempts {
        assert_eq!(a.await.unwrap(), 401);
    }
    assert_eq!(
        login_from(&env, &client_from("127.0.0.3"), "phone", "once").await,
        401
    );
    let text = logs.text();
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("wrong local login"))
        .collect();
    let from = |ip: &str| lines.iter().filter(|l| l.contains(ip)).count();
    assert_eq!(from("127.0.0.2"), 1, "{lines:#?}");
    assert_eq!(from("127.0.0.3"), 1, "{lines:#?}");
    for secret in ["secret-guess", "typed-password"] {
        assert!(!text.contains(secret), "{secret} in the logs:\n{text}");
    }
    env.stop().await;
}
