//! The `icloud-bridge` command line: parses arguments and calls into the library.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use icloud_bridge::accounts::vault::Vault;
use icloud_bridge::auth::logins::LoginStore;
use icloud_bridge::config::{AccountConfig, Config, UpstreamKind};
use icloud_bridge::secret::Secret;
use icloud_bridge::server::listener;
use icloud_bridge::standin::{Standin, StandinConfig, DEMO_APPLE_ID, DEMO_APP_PASSWORD};
use icloud_bridge::upstream::imap::ImapClient;
use icloud_bridge::upstream::smtp::SmtpClient;

#[derive(Parser)]
#[command(
    name = "icloud-bridge",
    version,
    about = "Use iCloud calendars and contacts from any CalDAV/CardDAV client"
)]
struct Cli {
    /// Config file (default: $ICLOUD_BRIDGE_CONFIG, else config/icloud-bridge.toml if present, else built-in defaults)
    #[arg(long, global = true, value_name = "PATH")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the bridge.
    Serve,
    /// Run the bridge against the built-in iCloud stand-in with seeded data.
    Demo {
        /// Address to listen on (port 0 picks a free one).
        #[arg(long, default_value = "127.0.0.1:8008")]
        listen: String,
    },
    /// First run: write the config, test and store the app-specific password, create the
    /// first (admin) login; prints url/user/password like `demo`.
    Init {
        /// The Apple ID (asked for when missing and standard input is a terminal).
        #[arg(long)]
        apple_id: Option<String>,
        /// Local name of the account (default: from the Apple ID).
        #[arg(long)]
        account: Option<String>,
        /// Read the app-specific password from standard input instead of prompting.
        #[arg(long)]
        password_stdin: bool,
        /// Name of the first client login (an admin).
        #[arg(long, default_value = "admin")]
        client: String,
        /// Listen address to write into the config.
        #[arg(long)]
        listen: Option<String>,
        /// Also serve HTTPS on this address (e.g. 0.0.0.0:8443), with the local CA's certificate.
        #[arg(long)]
        tls_listen: Option<String>,
        /// Another CalDAV upstream than iCloud's (any standards server, or a test stand-in).
        #[arg(long)]
        caldav: Option<String>,
        /// Another CardDAV upstream than iCloud's.
        #[arg(long)]
        carddav: Option<String>,
        /// The upstream is a generic DAV server, not iCloud (no app-specific password rules).
        #[arg(long)]
        generic: bool,
        /// Replace an existing config file.
        #[arg(long)]
        force: bool,
    },
    /// Validate the config and test the stored credential against each upstream.
    Check,
    /// Manage local client logins.
    Client {
        #[command(subcommand)]
        action: ClientAction,
    },
    /// Replace the stored app-specific password (tested against iCloud first).
    Reconnect {
        #[arg(long)]
        account: Option<String>,
        /// Read the password from standard input instead of prompting.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Print the running server's status (as /status.json).
    Status,
    /// Run only the iCloud stand-in (for benchmarks and scripts); prints its URLs, its control
    /// port and its TLS CA as one line of JSON.
    #[command(hide = true)]
    Standin {
        /// Seed the demo data.
        #[arg(long)]
        seed: bool,
    },
}

#[derive(Subcommand)]
enum ClientAction {
    /// Create a login for one device; prints the generated password.
    Add {
        name: String,
        #[arg(long)]
        account: Option<String>,
        #[arg(long)]
        admin: bool,
        /// Read the password from standard input instead of generating one.
        #[arg(long)]
        password_stdin: bool,
    },
    /// List logins.
    List,
    /// Remove a login (takes effect in a running server at once).
    Remove { name: String },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    limit_heap_retention();
    init_tracing();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(&format!("cannot start the async runtime: {e}")),
    };
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => fail(&msg),
    }
}

/// glibc raises its mmap threshold after large frees, so the 19 MiB argon2 blocks end up in
/// per-thread arenas and stay resident. A fixed threshold returns them to the system.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn limit_heap_retention() {
    // SAFETY: mallopt only adjusts allocator tunables; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 4 * 1024 * 1024);
        libc::mallopt(libc::M_ARENA_MAX, 4);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn limit_heap_retention() {}

fn fail(msg: &str) -> ExitCode {
    eprintln!("icloud-bridge: {msg}");
    ExitCode::FAILURE
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("ICLOUD_BRIDGE_LOG")
        .or_else(|_| tracing_subscriber::EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
}

async fn run(cli: Cli) -> Result<(), String> {
    match cli.command {
        Command::Serve => {
            let cfg = load(&cli.config)?;
            serve(cfg).await
        }
        Command::Demo { listen } => demo(&listen).await,
        Command::Init {
            apple_id,
            account,
            password_stdin,
            client,
            listen,
            tls_listen,
            caldav,
            carddav,
            generic,
            force,
        } => {
            let config_path = cli
                .config
                .clone()
                .or_else(|| std::env::var_os("ICLOUD_BRIDGE_CONFIG").map(PathBuf::from))
                .unwrap_or_else(|| PathBuf::from("config/icloud-bridge.toml"));
            let apple_id = match apple_id {
                Some(a) => a,
                None if password_stdin => {
                    return Err("--password-stdin needs --apple-id as well".into())
                }
                None => {
                    eprint!("Apple ID: ");
                    read_stdin_line()?.trim().to_string()
                }
            };
            if !password_stdin {
                eprint!("App-specific password for {apple_id} (account.apple.com, Sign-In and Security): ");
            }
            let app_password = read_stdin_line()?;
            let out = icloud_bridge::init::run(icloud_bridge::init::InitOptions {
                config_path: config_path.clone(),
                apple_id,
                account,
                app_password,
                client,
                listen,
                tls_listen,
                caldav,
                carddav,
                generic,
                force,
            })
            .await?;
            match &out.certs {
                icloud_bridge::tls::CertSource::LocalCa { ca, ca_created, .. } => {
                    eprintln!(
                        "{} the local CA {}: for HTTPS (tls_listen) and IMAPS, let each device (DAVx5, Thunderbird, iOS) trust that file once; it is also served at /ca.pem",
                        if *ca_created { "made" } else { "kept" },
                        ca.display()
                    );
                    if let Some(info) = icloud_bridge::tls::ca_info(&out.certs_dir) {
                        eprintln!(
                            "its SHA-256 fingerprint (compare it on each device before trusting it): {}",
                            info.sha256
                        );
                        if !info.constrained {
                            eprintln!(
                                "this CA has no name constraints; to move to one limited to the bridge's names, {}",
                                icloud_bridge::tls::MOVE_TO_CONSTRAINED
                            );
                        }
                    }
                }
                icloud_bridge::tls::CertSource::Provided => eprintln!(
                    "using your own server.pem and server-key.pem in {} for HTTPS and IMAPS",
                    out.certs_dir.display()
                ),
            }
            if let Some(https) = &out.https_url {
                eprintln!("HTTPS: {https} (once the devices trust the CA)");
            }
            eprintln!(
                "wrote {}; run `icloud-bridge serve`, then use these in Thunderbird or DAVx5:",
                config_path.display()
            );
            println!(
                "url: {}\nuser: {}\npassword: {}",
                out.url, out.user, out.password
            );
            Ok(())
        }
        Command::Check => check(load(&cli.config)?).await,
        Command::Client { action } => client(load(&cli.config)?, action),
        Command::Reconnect {
            account,
            password_stdin,
        } => reconnect(load(&cli.config)?, account, password_stdin).await,
        Command::Status => status(load(&cli.config)?).await,
        Command::Standin { seed } => standin(seed).await,
    }
}

fn load(path: &Option<PathBuf>) -> Result<Config, String> {
    let mut cfg = Config::resolve(path.as_deref()).map_err(|e| e.to_string())?;
    // Accounts made by the setup page count like configured ones.
    icloud_bridge::accounts::stored::merge(&mut cfg);
    Ok(cfg)
}

async fn serve(cfg: Config) -> Result<(), String> {
    let running = listener::start(cfg).await.map_err(|e| e.to_string())?;
    let token = running.token();
    tokio::spawn(async move {
        icloud_bridge::shutdown::signal().await;
        token.cancel();
    });
    running.wait().await;
    Ok(())
}

async fn demo(listen: &str) -> Result<(), String> {
    let listen = listen
        .parse()
        .map_err(|_| format!("--listen {listen:?} is not an address of the form IP:PORT"))?;
    let standin = Standin::start(StandinConfig::demo())
        .await
        .map_err(|e| format!("cannot start the iCloud stand-in: {e}"))?;
    let dir = std::env::temp_dir().join(format!("icloud-bridge-demo-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut cfg = Config::defaults();
    cfg.server.listen = listen;
    cfg.server.data_dir = dir.clone();
    // The demo's data and login are made up: trying it from a phone on the LAN is allowed.
    cfg.server.allow_plaintext_lan = true;
    cfg.upstream.kind = UpstreamKind::Icloud;
    let url = |u: String| {
        u.parse::<url::Url>()
            .map_err(|_| format!("the stand-in gave a bad URL: {u:?}"))
    };
    cfg.upstream.caldav = url(standin.caldav_url())?;
    cfg.upstream.carddav = url(standin.carddav_url())?;
    cfg.accounts = vec![AccountConfig {
        name: "alice".into(),
        apple_id: DEMO_APPLE_ID.into(),
        password_file: None,
        password_command: None,
    }];
    icloud_bridge::files::ensure_private_dir(&dir)
        .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    // Mail too, on free ports next to the DAV address (named in the log, not on stdout):
    // IMAP (STARTTLS; plain login on loopback) and SMTP submission, the stand-in behind them.
    cfg.server.certs_dir = dir.join("certs");
    let mail_addr = std::net::SocketAddr::new(listen.ip(), 0);
    cfg.server.imap_listen = Some(mail_addr);
    cfg.server.smtp_listen = Some(mail_addr);
    cfg.upstream.imap = url(standin.imap_url())?;
    cfg.upstream.smtp = url(standin.smtp_url())?;
    let standin_ca = dir.join("standin-ca.pem");
    std::fs::write(&standin_ca, standin.ca_pem())
        .map_err(|e| format!("cannot write {}: {e}", standin_ca.display()))?;
    cfg.upstream.ca_file = Some(standin_ca);
    Vault::open(&dir)
        .set("alice", &Secret::new(DEMO_APP_PASSWORD.into()))
        .map_err(|e| e.to_string())?;
    let logins = LoginStore::open(&dir).map_err(|e| e.to_string())?;
    let password = logins
        .add("demo", "alice", true, None)
        .map_err(|e| e.to_string())?;
    let running = listener::start(cfg).await.map_err(|e| e.to_string())?;
    if let (Some(imap), Some(smtp)) = (running.imap_addr, running.smtp_addr) {
        tracing::info!(
            %imap,
            %smtp,
            "demo mail: IMAP and SMTP submission with the same user and password"
        );
    }
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "url: http://{}/", running.addr);
    let _ = writeln!(out, "user: demo");
    let _ = writeln!(out, "password: {password}");
    let _ = out.flush();
    drop(out);
    let token = running.token();
    tokio::spawn(async move {
        icloud_bridge::shutdown::signal().await;
        token.cancel();
    });
    running.wait().await;
    standin.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

async fn standin(seed: bool) -> Result<(), String> {
    let cfg = if seed {
        StandinConfig::demo()
    } else {
        StandinConfig::empty()
    };
    let s = Standin::start(cfg)
        .await
        .map_err(|e| format!("cannot start the iCloud stand-in: {e}"))?;
    let control = s
        .serve_control()
        .await
        .map_err(|e| format!("cannot start the stand-in's control port: {e}"))?;
    println!(
        "{}",
        serde_json::json!({
            "control": control,
            "imap": s.imap_url(),
            "smtp": s.smtp_url(),
            "ca_pem": s.ca_pem(),
            "caldav": s.caldav_url(),
            "carddav": s.carddav_url(),
            "apple_id": DEMO_APPLE_ID,
            "password": DEMO_APP_PASSWORD,
        })
    );
    icloud_bridge::shutdown::signal().await;
    s.stop().await;
    Ok(())
}

fn pick_account(cfg: &Config, account: Option<String>) -> Result<String, String> {
    match account {
        Some(a) => cfg
            .account(&a)
            .map(|a| a.name.clone())
            .ok_or_else(|| format!("no account named {a:?} in the configuration")),
        None => match cfg.accounts.as_slice() {
            [one] => Ok(one.name.clone()),
            [] => Err("no [[account]] is configured; add one to the config file first".into()),
            _ => Err("several accounts are configured; say which with --account".into()),
        },
    }
}

fn read_stdin_line() -> Result<String, String> {
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| format!("cannot read standard input: {e}"))?;
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

fn client(cfg: Config, action: ClientAction) -> Result<(), String> {
    icloud_bridge::files::ensure_private_dir(&cfg.server.data_dir).map_err(|e| {
        format!(
            "cannot create data_dir {}: {e}",
            cfg.server.data_dir.display()
        )
    })?;
    let store = LoginStore::open(&cfg.server.data_dir).map_err(|e| e.to_string())?;
    match action {
        ClientAction::Add {
            name,
            account,
            admin,
            password_stdin,
        } => {
            let account = pick_account(&cfg, account)?;
            let chosen = if password_stdin {
                Some(read_stdin_line()?)
            } else {
                None
            };
            let pw = store
                .add(&name, &account, admin, chosen.as_deref())
                .map_err(|e| e.to_string())?;
            println!("{pw}");
            Ok(())
        }
        ClientAction::List => {
            for l in store.list().map_err(|e| e.to_string())? {
                println!(
                    "{}\t{}{}",
                    l.name,
                    l.account,
                    if l.admin { "\tadmin" } else { "" }
                );
            }
            Ok(())
        }
        ClientAction::Remove { name } => {
            if store.remove(&name).map_err(|e| e.to_string())? {
                Ok(())
            } else {
                Err(format!("no login named {name:?}"))
            }
        }
    }
}

async fn check(cfg: Config) -> Result<(), String> {
    use icloud_bridge::accounts::startup;
    use icloud_bridge::app::App;
    let app = std::sync::Arc::new(App::new(cfg).map_err(|e| e.to_string())?);
    let server = &app.config.server;
    let imap = (server.imap_listen.is_some() || server.imaps_listen.is_some())
        .then(|| {
            ImapClient::new(&app.config.upstream).map(|c| c.with_stats(app.upstream.stats.clone()))
        })
        .transpose()
        .map_err(|e| e.to_string())?;
    let smtp = server
        .smtp_listen
        .is_some()
        .then(|| SmtpClient::new(&app.config.upstream))
        .transpose()
        .map_err(|e| e.to_string())?;
    if app.accounts.snapshot().is_empty() {
        println!("config ok; no account is configured");
        return Ok(());
    }
    let mut bad = false;
    for acc in app.accounts.snapshot().values() {
        match startup::check_dav(&app.upstream, acc).await {
            Ok(_) => {
                println!("{} caldav ok", acc.name());
                println!("{} carddav ok", acc.name());
            }
            Err(e) => {
                bad = true;
                println!("{} dav {}: {e}", acc.name(), e.state().as_str());
            }
        }
        if let Some(imap) = &imap {
            match startup::check_imap(imap, acc).await {
                Ok(()) => println!("{} imap ok", acc.name()),
                Err(e) => {
                    bad = true;
                    println!("{} imap {}: {e}", acc.name(), e.state().as_str());
                }
            }
        }
        if let Some(smtp) = &smtp {
            match startup::check_smtp(smtp, acc).await {
                Ok(()) => println!("{} smtp ok", acc.name()),
                Err(e) => {
                    bad = true;
                    println!("{} smtp {}: {e}", acc.name(), e.state().as_str());
                }
            }
        }
    }
    if bad {
        Err("at least one upstream check failed".into())
    } else {
        Ok(())
    }
}

async fn reconnect(
    cfg: Config,
    account: Option<String>,
    password_stdin: bool,
) -> Result<(), String> {
    let name = pick_account(&cfg, account)?;
    let acc = cfg
        .account(&name)
        .cloned()
        .ok_or_else(|| format!("no account named {name:?}"))?;
    if !password_stdin {
        eprint!("New app-specific password for {name}: ");
    }
    let raw = read_stdin_line()?;
    let upstream =
        icloud_bridge::upstream::client::Upstream::new(&cfg.upstream).map_err(|e| e.to_string())?;
    let vault = Vault::open(&cfg.server.data_dir);
    use icloud_bridge::accounts::reconnect::{test_and_store, wait_for_pickup, Pickup};
    test_and_store(&cfg, &upstream, &vault, &acc, &raw)
        .await
        .map_err(|e| e.to_string())?;
    // Return only once the running server uses it, so the next sync works.
    match wait_for_pickup(&cfg, &acc, &raw, std::time::Duration::from_secs(5)).await {
        Pickup::InUse => {
            println!("stored; the running bridge uses the new password now");
            Ok(())
        }
        Pickup::NoServer { url } => {
            println!("stored; no bridge answers at {url}, so the new password is used when `icloud-bridge serve` starts");
            Ok(())
        }
        Pickup::NotPickedUp { url } => Err(format!(
            "the new password was stored, but the bridge at {url} did not take it up within 5 s; is it running with data_dir {}? Restart it to use the new password",
            cfg.server.data_dir.display()
        )),
    }
}

async fn status(cfg: Config) -> Result<(), String> {
    let url = format!("http://{}/status.json", cfg.server.listen);
    let resp = reqwest::get(&url)
        .await
        .map_err(|_| format!("no bridge answers at {url}; is `icloud-bridge serve` running?"))?;
    let text = resp
        .text()
        .await
        .map_err(|e| format!("cannot read the status: {e}"))?;
    println!("{text}");
    Ok(())
}
