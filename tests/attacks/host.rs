//! Finding 9: the operator's pages answer only to the bridge's own names, so a web page on
//! a name of the attacker's that resolves to the bridge (DNS rebinding) reads nothing.

use crate::support::*;

async fn get_with_host(env: &Env, path: &str, host: &str) -> (u16, String) {
    let r = env
        .http
        .get(env.url(path))
        .header("Host", host)
        .send()
        .await
        .unwrap();
    let s = r.status().as_u16();
    (s, r.text().await.unwrap())
}

#[tokio::test]
async fn pages_refuse_foreign_host_names_with_421() {
    let env = start().await;
    let port = env.bridge.addr.port();
    for path in [
        "/",
        "/status",
        "/status.json",
        "/metrics",
        "/ca.pem",
        "/setup",
    ] {
        for host in [
            format!("rebind.attacker.example:{port}"),
            "rebind.attacker.example".to_string(),
            format!("192.0.2.77:{port}"),
        ] {
            let (s, body) = get_with_host(&env, path, &host).await;
            assert_eq!(s, 421, "{path} with Host {host}: {body}");
            assert!(!body.contains("alice"), "{body}");
        }
    }
    let r = env
        .http
        .post(env.url("/admin/reconnect"))
        .header("Host", "rebind.attacker.example")
        .basic_auth(&env.user, Some(&env.pass))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 421);
    // The bridge's own names work, and so does liveness for any name.
    for host in [format!("127.0.0.1:{port}"), format!("localhost:{port}")] {
        let (s, body) = get_with_host(&env, "/status.json", &host).await;
        assert_eq!(s, 200, "{host}: {body}");
    }
    let (s, _) = get_with_host(&env, "/healthz", "rebind.attacker.example").await;
    assert_eq!(s, 200);
    env.stop().await;
}

#[tokio::test]
async fn public_url_names_the_bridge_too() {
    let env = start_with(Options {
        tweak: Box::new(|c| {
            c.server.public_url = Some("https://calendar.home.example/".parse().unwrap())
        }),
        ..Default::default()
    })
    .await;
    let (s, _) = get_with_host(&env, "/status", "calendar.home.example").await;
    assert_eq!(s, 200);
    let (s, _) = get_with_host(&env, "/status", "other.home.example").await;
    assert_eq!(s, 421);
    env.stop().await;
}
