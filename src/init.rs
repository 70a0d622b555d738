//! `icloud-bridge init`: the first run. Writes the config file, tests the app-specific
//! password against the upstream and stores it, makes the local CA and server certificate in
//! `certs/` (for `tls_listen`, IMAPS and STARTTLS), and creates the first (admin) client
//! login. Nothing is written unless the password works.

use std::path::{Path, PathBuf};

use crate::accounts::reconnect::test_and_store;
use crate::accounts::stored::valid_apple_id;
use crate::accounts::vault::Vault;
use crate::auth::logins::LoginStore;
use crate::config::{valid_account_name, Config};
use crate::files::write_atomic;
use crate::server::admin::account_name_from;
use crate::upstream::client::Upstream;

/// What `init` was asked to set up.
pub struct InitOptions {
    pub config_path: PathBuf,
    pub apple_id: String,
    pub account: Option<String>,
    pub app_password: String,
    pub client: String,
    pub listen: Option<String>,
    /// `server.tls_listen`, written uncommented when given.
    pub tls_listen: Option<String>,
    pub caldav: Option<String>,
    pub carddav: Option<String>,
    pub generic: bool,
    pub force: bool,
}

/// What `init` made.
pub struct InitOutcome {
    pub url: String,
    pub user: String,
    pub password: String,
    /// Where the server certificate comes from (the local CA in `certs/`, or the operator's
    /// own files found there).
    pub certs: crate::tls::CertSource,
    /// The certificate directory.
    pub certs_dir: PathBuf,
    /// `https://host:port/` when `tls_listen` was given (a wildcard address shows the host
    /// name, which the certificate names).
    pub https_url: Option<String>,
}

fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// The config file `init` writes: the settings given, everything else commented defaults.
fn config_text(o: &InitOptions, account: &str) -> String {
    let mut t = String::from(
        "# Written by `icloud-bridge init`; every key is explained in\n# config/icloud-bridge.example.toml.\n\n[server]\n",
    );
    t.push_str(&format!(
        "listen = {}\n",
        toml_str(o.listen.as_deref().unwrap_or("127.0.0.1:8008"))
    ));
    match &o.tls_listen {
        Some(a) => t.push_str(&format!(
            "tls_listen = {}   # HTTPS; devices trust certs/ca.pem (written by init)\n",
            toml_str(a)
        )),
        None => t.push_str(
            "# tls_listen = \"0.0.0.0:8443\"   # HTTPS; devices trust certs/ca.pem (written by init)\n",
        ),
    }
    t.push_str("# imaps_listen = \"0.0.0.0:1993\"\n");
    t.push_str("data_dir = \"data\"\ncerts_dir = \"certs\"\n\n[[account]]\n");
    t.push_str(&format!("name = {}\n", toml_str(account)));
    t.push_str(&format!("apple_id = {}\n", toml_str(&o.apple_id)));
    t.push_str("# The app-specific password is in data/vault.json (`icloud-bridge reconnect` replaces it).\n\n[upstream]\n");
    if o.generic {
        t.push_str("kind = \"generic\"\n");
    }
    if let Some(c) = &o.caldav {
        t.push_str(&format!("caldav = {}\n", toml_str(c)));
    }
    if let Some(c) = &o.carddav {
        t.push_str(&format!("carddav = {}\n", toml_str(c)));
    }
    t
}

/// Run the first-time set-up.
pub async fn run(o: InitOptions) -> Result<InitOutcome, String> {
    if o.config_path.exists() && !o.force {
        return Err(format!(
            "{} already exists; edit it, or run `icloud-bridge init --force` to replace it",
            o.config_path.display()
        ));
    }
    if !valid_apple_id(&o.apple_id) {
        return Err(format!(
            "{:?} is not an Apple ID (an e-mail address such as alice@icloud.com)",
            o.apple_id
        ));
    }
    let account = o
        .account
        .clone()
        .unwrap_or_else(|| account_name_from(&o.apple_id));
    if !valid_account_name(&account) {
        return Err(format!(
            "{account:?} cannot be an account name (letters, digits, '-', '_' and '.')"
        ));
    }
    if !valid_account_name(&o.client) {
        return Err(format!(
            "{:?} cannot be a login name (letters, digits, '-', '_' and '.')",
            o.client
        ));
    }
    let dir = match o.config_path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    // Validate the text through the real loader before anything is kept.
    let text = config_text(&o, &account);
    let draft = dir.join(format!(".icloud-bridge-init.{}.toml", std::process::id()));
    std::fs::write(&draft, &text).map_err(|e| format!("cannot write {}: {e}", draft.display()))?;
    let loaded = Config::load(&draft);
    let _ = std::fs::remove_file(&draft);
    let cfg = loaded.map_err(|e| e.to_string())?;
    // `serve` would refuse this config: say so before anything is written.
    if let Some((key, addr)) = cfg.server.plaintext_on_lan() {
        return Err(format!(
            "--listen {addr} ({key}) would let every device's login cross the network in clear; keep --listen on 127.0.0.1 and give other devices HTTPS with --tls-listen 0.0.0.0:8443"
        ));
    }
    finish(&o, &cfg, &account, &text).await
}

async fn finish(
    o: &InitOptions,
    cfg: &Config,
    account: &str,
    text: &str,
) -> Result<InitOutcome, String> {
    let acc = cfg
        .account(account)
        .cloned()
        .ok_or("the written config lost its account")?;
    // A login of that name (from an earlier init, with --force) would fail at the end:
    // say so before anything is written.
    let logins = LoginStore::open(&cfg.server.data_dir).map_err(|e| e.to_string())?;
    if logins
        .list()
        .map_err(|e| e.to_string())?
        .iter()
        .any(|l| l.name == o.client)
    {
        return Err(format!(
            "a login named {:?} already exists; choose another with --client NAME (or remove it with `icloud-bridge client remove {}`)",
            o.client, o.client
        ));
    }
    let upstream = Upstream::new(&cfg.upstream).map_err(|e| e.to_string())?;
    let vault = Vault::open(&cfg.server.data_dir);
    test_and_store(cfg, &upstream, &vault, &acc, &o.app_password)
        .await
        .map_err(|e| e.to_string())?;
    let certs = crate::tls::ensure(&cfg.server)?;
    write_atomic(Path::new(&o.config_path), text.as_bytes())
        .map_err(|e| format!("cannot write {}: {e}", o.config_path.display()))?;
    let password = logins
        .add(&o.client, account, true, None)
        .map_err(|e| e.to_string())?;
    Ok(InitOutcome {
        url: format!("{}/", cfg.public_base()),
        user: o.client.clone(),
        password,
        certs,
        certs_dir: cfg.server.certs_dir.clone(),
        https_url: cfg.server.tls_listen.map(|a| {
            let host = match a.ip() {
                ip if ip.is_unspecified() => {
                    crate::tls::hostname().unwrap_or_else(|| "localhost".into())
                }
                std::net::IpAddr::V6(v6) => format!("[{v6}]"),
                ip => ip.to_string(),
            };
            format!("https://{host}:{}/", a.port())
        }),
    })
}
