//! The command line as users and scripts see it: `demo`, `client`, config errors.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_icloud-bridge"));
    c.env_remove("ICLOUD_BRIDGE_CONFIG")
        .env_remove("ICLOUD_BRIDGE_LISTEN")
        .env_remove("ICLOUD_BRIDGE_DATA_DIR")
        .env_remove("ICLOUD_BRIDGE_APP_PASSWORD");
    c
}

type Stdout = BufReader<std::process::ChildStdout>;

/// Start `demo` on a free port; return the child, its stdout and the three lines it printed.
fn start_demo(cmd: &mut Command) -> (std::process::Child, Stdout, Vec<String>) {
    let mut child = cmd
        .args(["demo", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut lines = Vec::new();
    for _ in 0..3 {
        let mut l = String::new();
        out.read_line(&mut l).unwrap();
        lines.push(l.trim_end().to_string());
    }
    (child, out, lines)
}

#[test]
fn demo_prints_exactly_three_lines_and_serves() {
    let (mut child, mut out, lines) = start_demo(bin().stderr(Stdio::null()));
    assert!(lines[0].starts_with("url: http://127.0.0.1:"), "{lines:?}");
    assert_eq!(lines[1], "user: demo");
    assert!(
        lines[2].starts_with("password: ") && lines[2].len() > 20,
        "{lines:?}"
    );
    let url = lines[0].trim_start_matches("url: ").to_string();
    let pw = lines[2].trim_start_matches("password: ").to_string();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let status = rt.block_on(async {
        reqwest::Client::new()
            .request(
                reqwest::Method::from_bytes(b"PROPFIND").unwrap(),
                format!("{url}dav/alice/calendars/"),
            )
            .basic_auth("demo", Some(pw))
            .header("Depth", "1")
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    });
    assert_eq!(status, 207);
    // Nothing more on stdout: logs go to stderr.
    unsafe_kill(&child);
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
    assert_eq!(rest, "", "extra stdout output");
    let st = child.wait().unwrap();
    assert!(st.code().is_none() || st.success(), "{st:?}");
}

/// SIGTERM, as systemd and Docker send it, for a clean shutdown.
/// Read one reply of a line protocol: lines until `done` says the reply is complete.
fn reply(r: &mut impl BufRead, done: impl Fn(&str) -> bool) -> String {
    let mut all = String::new();
    loop {
        let mut l = String::new();
        assert!(
            r.read_line(&mut l).unwrap() > 0,
            "connection closed after {all:?}"
        );
        all.push_str(&l);
        if done(&l) {
            return all;
        }
    }
}

#[test]
fn demo_serves_mail_too_with_the_same_login() {
    let (mut child, _out, lines) = start_demo(bin().stderr(Stdio::piped()));
    let pw = lines[2].trim_start_matches("password: ").to_string();
    // The mail addresses are in the log (stdout keeps its three lines); keep draining it.
    let err = BufReader::new(child.stderr.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in err.lines().map_while(Result::ok) {
            if line.contains("demo mail:") {
                let _ = tx.send(line);
            }
        }
    });
    let line = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("a demo mail log line");
    let addr = |key: &str| -> std::net::SocketAddr {
        let at = line.find(&format!("{key}=")).expect(key) + key.len() + 1;
        line[at..]
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let connect = |a| {
        let s = std::net::TcpStream::connect_timeout(&a, Duration::from_secs(5)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        (BufReader::new(s.try_clone().unwrap()), s)
    };

    // IMAP: log in with the demo login, open the inbox of the stand-in's mailbox.
    let (mut r, mut w) = connect(addr("imap"));
    assert!(reply(&mut r, |_| true).starts_with("* OK"));
    write!(w, "a LOGIN demo \"{pw}\"\r\n").unwrap();
    let login = reply(&mut r, |l| l.starts_with("a "));
    assert!(login.lines().last().unwrap().starts_with("a OK"), "{login}");
    write!(w, "b SELECT INBOX\r\n").unwrap();
    let select = reply(&mut r, |l| l.starts_with("b "));
    assert!(
        select.contains("EXISTS") && select.contains("b OK"),
        "{select}"
    );
    write!(w, "c LOGOUT\r\n").unwrap();

    // SMTP submission: the same login is accepted.
    let (mut r, mut w) = connect(addr("smtp"));
    assert!(reply(&mut r, |l| l.as_bytes().get(3) == Some(&b' ')).starts_with("220"));
    write!(w, "EHLO laptop\r\n").unwrap();
    let ehlo = reply(&mut r, |l| l.as_bytes().get(3) == Some(&b' '));
    assert!(ehlo.contains("AUTH"), "{ehlo}");
    use base64::Engine;
    let token = base64::engine::general_purpose::STANDARD.encode(format!("\0demo\0{pw}"));
    write!(w, "AUTH PLAIN {token}\r\n").unwrap();
    let auth = reply(&mut r, |l| l.as_bytes().get(3) == Some(&b' '));
    assert!(auth.starts_with("235"), "{auth}");
    write!(w, "QUIT\r\n").unwrap();

    unsafe_kill(&child);
    let st = child.wait().unwrap();
    assert!(st.code().is_none() || st.success(), "{st:?}");
}

fn unsafe_kill(child: &std::process::Child) {
    let pid = libc::pid_t::try_from(child.id()).expect("pid fits");
    // SAFETY: sending a signal to our own child process.
    unsafe {
        libc::kill(pid, libc::SIGTERM);
    }
    // Callers then read its output to the end or wait for it: both end when it has exited.
}

#[test]
fn bad_config_exits_non_zero_with_one_sentence_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(&cfg, "[server]\nlisten = \"nowhere\"\n").unwrap();
    let out = bin()
        .args(["--config", cfg.to_str().unwrap(), "check"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("server.listen"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");

    std::fs::write(&cfg, "[server]\nlisen = \"127.0.0.1:1\"\n").unwrap();
    let out = bin()
        .args(["check", "--config", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("line 2") && err.contains("lisen"), "{err}");
}

#[test]
fn client_add_list_remove() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        "[[account]]\nname = \"alice\"\napple_id = \"alice@icloud.com\"\n",
    )
    .unwrap();
    let c = cfg.to_str().unwrap();
    let out = bin()
        .args(["--config", c, "client", "add", "laptop"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let pw = String::from_utf8(out.stdout).unwrap();
    assert_eq!(pw.lines().count(), 1);
    assert!(pw.trim().len() >= 20);

    let mut child = bin()
        .args([
            "--config",
            c,
            "client",
            "add",
            "phone",
            "--admin",
            "--password-stdin",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"chosen-password-1\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap().trim(),
        "chosen-password-1"
    );

    let out = bin()
        .args(["--config", c, "client", "list"])
        .output()
        .unwrap();
    let list = String::from_utf8(out.stdout).unwrap();
    assert!(
        list.contains("laptop\talice") && list.contains("phone\talice\tadmin"),
        "{list}"
    );
    // The file holds hashes, never the passwords.
    let stored = std::fs::read_to_string(dir.path().join("data/logins.json")).unwrap();
    assert!(!stored.contains("chosen-password-1") && !stored.contains(pw.trim()));

    assert!(bin()
        .args(["--config", c, "client", "remove", "laptop"])
        .status()
        .unwrap()
        .success());
    let out = bin()
        .args(["--config", c, "client", "remove", "laptop"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    // Duplicate names are refused.
    let out = bin()
        .args(["--config", c, "client", "add", "phone"])
        .output()
        .unwrap();
    assert!(!out.status.success());
}

#[test]
fn no_secret_reaches_the_log_even_at_trace_level() {
    use base64::Engine;
    let (mut child, _out, lines) = start_demo(
        bin()
            .env("ICLOUD_BRIDGE_LOG", "trace")
            .stderr(Stdio::piped()),
    );
    let url = lines[0].trim_start_matches("url: ").to_string();
    let pw = lines[2].trim_start_matches("password: ").to_string();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let c = reqwest::Client::new();
        for (user, pass) in [("demo", pw.as_str()), ("demo", "wrong-password-xyz")] {
            let _ = c
                .request(
                    reqwest::Method::from_bytes(b"PROPFIND").unwrap(),
                    format!("{url}dav/alice/calendars/home/"),
                )
                .basic_auth(user, Some(pass))
                .header("Depth", "1")
                .send()
                .await
                .unwrap()
                .text()
                .await;
        }
    });
    unsafe_kill(&child);
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    let _ = child.wait();
    assert!(
        err.len() > 1000,
        "expected a verbose log, got {} bytes",
        err.len()
    );
    let b64 =
        |u: &str, p: &str| base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"));
    for secret in [
        icloud_bridge::standin::DEMO_APP_PASSWORD.to_string(),
        pw.clone(),
        "wrong-password-xyz".to_string(),
        b64("demo", &pw),
        b64(
            icloud_bridge::standin::DEMO_APPLE_ID,
            icloud_bridge::standin::DEMO_APP_PASSWORD,
        ),
    ] {
        assert!(!err.contains(&secret), "secret found in the log");
    }
}

/// A config for the binary with the in-process stand-in as its iCloud.
fn standin_config(
    dir: &std::path::Path,
    s: &icloud_bridge::standin::Standin,
) -> std::path::PathBuf {
    let cfg = dir.join("bridge.toml");
    std::fs::write(
        &cfg,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\ndata_dir = \"data\"\n\n[[account]]\nname = \"alice\"\napple_id = \"{}\"\n\n[upstream]\ncaldav = \"{}\"\ncarddav = \"{}\"\n",
            icloud_bridge::standin::DEMO_APPLE_ID,
            s.caldav_url(),
            s.carddav_url()
        ),
    )
    .unwrap();
    cfg
}

fn reconnect_with(cfg: &std::path::Path, password: &str, crash: bool) -> std::process::ExitStatus {
    let mut cmd = bin();
    cmd.args([
        "--config",
        cfg.to_str().unwrap(),
        "reconnect",
        "--password-stdin",
    ])
    .stdin(Stdio::piped())
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    if crash {
        cmd.env("ICLOUD_BRIDGE_TEST_CRASH_BEFORE_RENAME", "1");
    }
    let mut child = cmd.spawn().unwrap();
    writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
    child.wait().unwrap()
}

#[test]
fn a_crash_between_vault_write_and_rename_keeps_the_old_password() {
    use icloud_bridge::standin::{Standin, StandinConfig, DEMO_APPLE_ID, DEMO_APP_PASSWORD};
    let rt = tokio::runtime::Runtime::new().unwrap();
    let s = rt.block_on(Standin::start(StandinConfig::demo())).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = standin_config(dir.path(), &s);
    let vault = dir.path().join("data/vault.json");
    let data = dir.path().join("data");

    assert!(reconnect_with(&cfg, DEMO_APP_PASSWORD, false).success());
    let before = std::fs::read_to_string(&vault).unwrap();
    assert!(before.contains(DEMO_APP_PASSWORD));

    // A new password, tested against the stand-in, then the process dies before the rename.
    let new = s.control().generate_asp(DEMO_APPLE_ID, "new").unwrap();
    let st = reconnect_with(&cfg, &new, true);
    assert!(
        !st.success() && st.code().is_none(),
        "expected an abort: {st:?}"
    );
    // The temporary file was written (so the crash came between write and rename) ...
    let temps: Vec<_> = std::fs::read_dir(&data)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(".vault.json.tmp.")
        })
        .collect();
    assert_eq!(temps.len(), 1, "no temporary vault file was left behind");
    // ... and the vault still holds the old password, byte for byte.
    assert_eq!(std::fs::read_to_string(&vault).unwrap(), before);
    // `check` uses it: with the new password revoked, the old one still works.
    assert!(s.control().revoke_asp(DEMO_APPLE_ID, &new));
    let out = bin()
        .args(["--config", cfg.to_str().unwrap(), "check"])
        .stderr(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("alice caldav ok"), "{text}");
    // A later reconnect works despite the leftover temporary file.
    let newer = s.control().generate_asp(DEMO_APPLE_ID, "newer").unwrap();
    assert!(reconnect_with(&cfg, &newer, false).success());
    assert!(std::fs::read_to_string(&vault).unwrap().contains(&newer));
    rt.block_on(s.stop());
}

fn init(
    dir: &std::path::Path,
    s: &icloud_bridge::standin::Standin,
    password: &str,
    extra: &[&str],
) -> std::process::Output {
    let cfg = dir.join("conf/icloud-bridge.toml");
    let mut child = bin()
        .args([
            "--config",
            cfg.to_str().unwrap(),
            "init",
            "--password-stdin",
        ])
        .args(["--apple-id", icloud_bridge::standin::DEMO_APPLE_ID])
        .args(["--caldav", &s.caldav_url(), "--carddav", &s.carddav_url()])
        .args(["--listen", "127.0.0.1:18008"])
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn init_writes_a_working_setup_only_when_the_password_works() {
    use icloud_bridge::standin::{Standin, StandinConfig, DEMO_APP_PASSWORD};
    let rt = tokio::runtime::Runtime::new().unwrap();
    let s = rt.block_on(Standin::start(StandinConfig::demo())).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("conf/icloud-bridge.toml");

    // An Apple ID password is refused before asking Apple; nothing is written.
    let out = init(dir.path(), &s, "Correct-Horse-9", &[]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not an app-specific password"));
    assert!(!cfg.exists());
    // A well-formed password Apple rejects: nothing written either.
    let out = init(dir.path(), &s, "zzzz-zzzz-zzzz-zzzz", &[]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("refused"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!cfg.exists());
    assert!(!dir.path().join("conf/data/vault.json").exists());

    // The right one: config, vault and an admin login; the three lines on stdout.
    let out = init(
        dir.path(),
        &s,
        &DEMO_APP_PASSWORD.to_uppercase().replace('-', " "),
        &[],
    );
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    assert_eq!(lines[0], "url: http://127.0.0.1:18008/");
    assert_eq!(lines[1], "user: admin");
    assert!(lines[2].starts_with("password: ") && lines[2].len() > 20);
    assert!(!stdout.contains(DEMO_APP_PASSWORD));
    let text = std::fs::read_to_string(&cfg).unwrap();
    assert!(text.contains("apple_id = \"alice@icloud.com\""), "{text}");
    assert!(
        !text.contains(DEMO_APP_PASSWORD),
        "the password went into the config"
    );
    // The local CA and a server certificate signed by it, keys private, and where to find
    // the CA file is said on stderr (never on stdout: three lines only).
    let certs = dir.path().join("conf/certs");
    for f in ["ca.pem", "ca-key.pem", "server.pem", "server-key.pem"] {
        assert!(certs.join(f).is_file(), "{f} missing");
    }
    {
        use std::os::unix::fs::PermissionsExt;
        for f in ["ca-key.pem", "server-key.pem"] {
            let mode = std::fs::metadata(certs.join(f))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{f}");
        }
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&certs.join("ca.pem").display().to_string()),
        "{stderr}"
    );
    let server_pem = std::fs::read_to_string(certs.join("server.pem")).unwrap();
    let ca_pem = std::fs::read_to_string(certs.join("ca.pem")).unwrap();
    assert!(
        server_pem.trim_end().ends_with(ca_pem.trim_end()),
        "chain: leaf, then the CA"
    );
    assert!(!stderr.contains("PRIVATE KEY") && !stdout.contains("PRIVATE KEY"));
    // `check` and `client list` work on what init wrote.
    let check = bin()
        .args(["--config", cfg.to_str().unwrap(), "check"])
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );
    let list = bin()
        .args(["--config", cfg.to_str().unwrap(), "client", "list"])
        .output()
        .unwrap();
    let list = String::from_utf8_lossy(&list.stdout);
    assert!(list.contains("admin") && list.contains("alice"), "{list}");
    // A second init does not overwrite without --force.
    let again = init(dir.path(), &s, DEMO_APP_PASSWORD, &[]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
    // --force with the first login's name again: refused before anything is replaced.
    let before = std::fs::read_to_string(&cfg).unwrap();
    let same = init(dir.path(), &s, DEMO_APP_PASSWORD, &["--force"]);
    assert!(!same.status.success());
    assert!(
        String::from_utf8_lossy(&same.stderr).contains("--client NAME"),
        "{}",
        String::from_utf8_lossy(&same.stderr)
    );
    assert_eq!(std::fs::read_to_string(&cfg).unwrap(), before);
    // With --tls-listen: HTTPS is on in the config, and stderr names its address.
    let tls = init(
        dir.path(),
        &s,
        DEMO_APP_PASSWORD,
        &[
            "--force",
            "--client",
            "laptop",
            "--tls-listen",
            "127.0.0.1:18443",
        ],
    );
    let stderr = String::from_utf8_lossy(&tls.stderr);
    assert!(tls.status.success(), "{stderr}");
    let text = std::fs::read_to_string(&cfg).unwrap();
    assert!(
        text.lines()
            .any(|l| l.starts_with("tls_listen = \"127.0.0.1:18443\"")),
        "{text}"
    );
    assert!(
        stderr.contains("HTTPS: https://127.0.0.1:18443/"),
        "{stderr}"
    );
    assert_eq!(String::from_utf8_lossy(&tls.stdout).lines().count(), 3);
    rt.block_on(s.stop());
}
