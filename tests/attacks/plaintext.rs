//! Logins in clear on the LAN, a world-readable data_dir, and front ends that disagree on
//! what loopback is: plain listeners on a LAN address start only when asked for, data_dir is
//! private, and every front end treats `::ffff:127.0.0.1` as the loopback it is.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};

use crate::support::*;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_icloud-bridge"))
}

/// Run `serve` with `server_toml` as the [server] section in a fresh directory: `Err(stderr)`
/// when it exits, `Ok(())` when it is still serving after it said it listens.
fn serve(server_toml: &str) -> Result<(), String> {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("icloud-bridge.toml");
    let mut f = std::fs::File::create(&cfg).unwrap();
    writeln!(
        f,
        "[server]\n{server_toml}\ndata_dir = \"data\"\ncerts_dir = \"certs\""
    )
    .unwrap();
    let mut child = bin()
        .args(["--config", cfg.to_str().unwrap(), "serve"])
        .env_remove("ICLOUD_BRIDGE_LISTEN")
        .env_remove("ICLOUD_BRIDGE_ALLOW_PLAINTEXT_LAN")
        .env("ICLOUD_BRIDGE_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    // Read stderr to the end (closing it early would break the child's logging), telling
    // when the server says it listens.
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        let mut out = String::new();
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            out.push_str(&line);
            out.push('\n');
            if line.contains("icloud-bridge listening") {
                let _ = tx.send(out.clone());
            }
        }
        out
    });
    // Either it says it listens, or its stderr ends because it exited.
    match rx.recv_timeout(Duration::from_secs(20)) {
        Ok(text) => {
            let _ = child.kill();
            let _ = child.wait();
            let _ = reader.join();
            assert!(text.contains("listening"), "{text}");
            Ok(())
        }
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
            let status = child.wait().unwrap();
            let text = reader.join().unwrap();
            assert!(!status.success(), "serve exited 0: {text}");
            Err(text)
        }
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            let _ = child.kill();
            panic!("serve neither started nor exited within 20 s");
        }
    }
}

#[test]
fn plain_listeners_on_a_lan_address_start_only_when_asked_for() {
    for (toml, key) in [
        ("listen = \"0.0.0.0:0\"", "server.listen"),
        (
            "listen = \"127.0.0.1:0\"\nimap_listen = \"0.0.0.0:0\"",
            "server.imap_listen",
        ),
        (
            "listen = \"127.0.0.1:0\"\nsmtp_listen = \"[::]:0\"",
            "server.smtp_listen",
        ),
    ] {
        let err = serve(toml).expect_err(toml);
        assert!(
            err.contains(key) && err.contains("tls_listen") && err.contains("allow_plaintext_lan"),
            "{toml}: {err}"
        );
    }
    // Loopback, or the operator's explicit choice, starts.
    serve("listen = \"127.0.0.1:0\"").unwrap();
    serve("listen = \"0.0.0.0:0\"\nallow_plaintext_lan = true").unwrap();
    // HTTPS on the LAN with plain HTTP on loopback is the way the message points to.
    serve("listen = \"127.0.0.1:0\"\ntls_listen = \"0.0.0.0:0\"").unwrap();
}

#[tokio::test]
async fn data_dir_is_made_private() {
    let env = start_with(Options {
        tweak: Box::new(|c| c.server.data_dir = c.server.data_dir.join("fresh/data")),
        ..Default::default()
    })
    .await;
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&env.bridge.app.config.server.data_dir)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700, "data_dir mode {:o}", mode & 0o777);
    env.stop().await;
}

#[tokio::test]
async fn imap_treats_an_ipv4_mapped_loopback_peer_as_loopback() {
    // A dual-stack listener reports IPv4 peers as ::ffff:a.b.c.d.
    let probe = std::net::TcpListener::bind("[::]:0");
    if probe.is_err() {
        eprintln!("no IPv6 on this machine; skipping");
        return;
    }
    drop(probe);
    let env = start_with(Options {
        imap: true,
        tweak: Box::new(|c| {
            c.server.imap_listen = Some("[::]:0".parse().unwrap());
            c.server.allow_plaintext_lan = true;
        }),
        ..Default::default()
    })
    .await;
    let port = env.imap_addr().port();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let mut r = BufReader::new(tcp);
    let mut greeting = String::new();
    r.read_line(&mut greeting).await.unwrap();
    assert!(greeting.starts_with("* OK"), "{greeting}");
    assert!(
        !greeting.contains("LOGINDISABLED"),
        "a client on this machine was told to use STARTTLS: {greeting}"
    );
    env.stop().await;
}
