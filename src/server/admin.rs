//! The operator's forms: `/admin/reconnect` (paste a new app-specific password; admin login,
//! CSRF token and same-origin check) and `/setup` (one-time first-run page, by token).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;

use crate::accounts::reconnect::test_and_store;
use crate::accounts::stored;
use crate::accounts::Account;
use crate::app::App;
use crate::auth::csrf;
use crate::auth::logins::Login;
use crate::auth::{self, AuthOutcome};
use crate::body::Body;
use crate::body::RequestBody;
use crate::config::{valid_account_name, AccountConfig};
use crate::server::page::{self, SetupAccount};
use crate::upstream::discover::Learned;
use crate::upstream::service::Service;

/// Largest form body accepted.
const MAX_FORM_BYTES: usize = 4 * 1024;

fn query(req: &Request<RequestBody>) -> HashMap<String, String> {
    parse_pairs(req.uri().query().unwrap_or("").as_bytes())
}

/// URL-encoded pairs; the first value of a name wins.
fn parse_pairs(bytes: &[u8]) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for (k, v) in url::form_urlencoded::parse(bytes) {
        out.entry(k.into_owned()).or_insert_with(|| v.into_owned());
    }
    out
}

/// Read an `application/x-www-form-urlencoded` body of at most [`MAX_FORM_BYTES`].
async fn read_form(req: Request<RequestBody>) -> Result<HashMap<String, String>, Response<Body>> {
    let is_form = req
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';').next().is_some_and(|t| {
                t.trim()
                    .eq_ignore_ascii_case("application/x-www-form-urlencoded")
            })
        });
    if !is_form {
        return Err(page::message(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Refused",
            "The form must be sent as application/x-www-form-urlencoded.",
        ));
    }
    let refused = || {
        page::message(
            StatusCode::PAYLOAD_TOO_LARGE,
            "Refused",
            "The form was too large or could not be read.",
        )
    };
    let mut body = req.into_body();
    let mut buf: Vec<u8> = Vec::new();
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            return Err(refused());
        };
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > MAX_FORM_BYTES {
                return Err(refused());
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(parse_pairs(&buf))
}

fn not_allowed() -> Response<Body> {
    let mut r = page::message(
        StatusCode::METHOD_NOT_ALLOWED,
        "Not allowed",
        "This page answers GET and POST only.",
    );
    r.headers_mut().insert(
        http::header::ALLOW,
        HeaderValue::from_static("GET, HEAD, POST"),
    );
    r
}

fn cross_origin() -> Response<Body> {
    page::message(
        StatusCode::FORBIDDEN,
        "Refused",
        "This form must be sent from the bridge's own page: the Origin or Referer header is missing or names another site.",
    )
}

fn see_other(location: &str) -> Response<Body> {
    let mut r = page::respond(
        StatusCode::SEE_OTHER,
        page::layout("Done", "<p><a href=\"/status\">Status page</a></p>"),
    );
    if let Ok(v) = HeaderValue::from_str(location) {
        r.headers_mut().insert(http::header::LOCATION, v);
    }
    r
}

/// Resolve every account's credential again, off the async threads.
async fn reload(app: &Arc<App>) {
    let a = app.clone();
    let _ = tokio::task::spawn_blocking(move || a.accounts.reload_credentials()).await;
}

/// After a new password was stored: use it now, and keep what discovery learned if the
/// account had not learned its layout yet.
async fn use_new_password(app: &Arc<App>, acc: &Account, learned: Learned) {
    reload(app).await;
    // Apple accepted exactly this password a moment ago, for both DAV services.
    if acc.has_credential() {
        acc.record_success(Service::Caldav, 207);
        acc.record_success(Service::Carddav, 207);
    }
    if acc.learned().is_none() {
        acc.set_learned(learned);
        app.accounts.save();
    }
}

/// The account an admin login may manage through the forms: its own.
#[allow(clippy::result_large_err)] // the error is the page to answer with; a rare path
fn account_for(
    app: &App,
    login: &Login,
    requested: Option<&String>,
) -> Result<Arc<Account>, Response<Body>> {
    let name = requested.map(String::as_str).unwrap_or(&login.account);
    if name != login.account {
        return Err(page::message(
            StatusCode::FORBIDDEN,
            "Not this account",
            &format!(
                "The login {} belongs to account {} and may only change that account's app-specific password.",
                login.name, login.account
            ),
        ));
    }
    app.accounts.get(name).ok_or_else(|| {
        page::message(
            StatusCode::NOT_FOUND,
            "No such account",
            &format!("There is no account named {name} in the configuration."),
        )
    })
}

/// `GET|POST /admin/reconnect`: the paste form for a new app-specific password.
pub async fn reconnect(
    app: &Arc<App>,
    remote: SocketAddr,
    req: Request<RequestBody>,
) -> Response<Body> {
    let Some(is_get) = form_method(&req) else {
        return not_allowed();
    };
    let login = match admin_login(app, remote, &req).await {
        Ok(login) => login,
        Err(r) => return r,
    };
    if is_get {
        reconnect_page(app, &login, &req)
    } else {
        reconnect_post(app, &login, req).await
    }
}

/// Whether a form request reads (`GET`/`HEAD`: `true`) or sends (`POST`: `false`); `None` for
/// any other method.
fn form_method(req: &Request<RequestBody>) -> Option<bool> {
    let method = req.method();
    if method == Method::GET || method == Method::HEAD {
        Some(true)
    } else if method == Method::POST {
        Some(false)
    } else {
        None
    }
}

/// The request's local login, if it is an admin login; otherwise the challenge or refusal.
#[allow(clippy::result_large_err)] // the error is the page to answer with; a rare path
async fn admin_login(
    app: &App,
    remote: SocketAddr,
    req: &Request<RequestBody>,
) -> Result<Login, Response<Body>> {
    let login = match app.auth.authenticate(remote.ip(), req.headers()).await {
        AuthOutcome::Ok(login) => login,
        AuthOutcome::Challenge => return Err(auth::challenge(false)),
        AuthOutcome::Wrong => return Err(auth::challenge(true)),
    };
    if !login.admin {
        return Err(page::message(
            StatusCode::FORBIDDEN,
            "Admin login needed",
            &format!(
                "The login {} is not an admin login, so it may not change the app-specific password. Use an admin login (made with `icloud-bridge client add NAME --admin`), or run `icloud-bridge reconnect` on the server.",
                login.name
            ),
        ));
    }
    Ok(login)
}

/// `GET`: the empty paste form for the login's account, with a fresh CSRF token.
fn reconnect_page(app: &App, login: &Login, req: &Request<RequestBody>) -> Response<Body> {
    let q = query(req);
    let acc = match account_for(app, login, q.get("account")) {
        Ok(a) => a,
        Err(r) => return r,
    };
    let token = app.admin.csrf.token(&login.name, acc.name());
    page::respond(
        StatusCode::OK,
        page::reconnect_form(acc.name(), acc.apple_id(), &token, None),
    )
}

/// `POST`: checks the origin, the account and the CSRF token, then replaces the password.
async fn reconnect_post(
    app: &Arc<App>,
    login: &Login,
    req: Request<RequestBody>,
) -> Response<Body> {
    if !csrf::same_origin(req.headers()) {
        return cross_origin();
    }
    let form = match read_form(req).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    let acc = match account_for(app, login, form.get("account")) {
        Ok(a) => a,
        Err(r) => return r,
    };
    let token_ok = form
        .get("csrf")
        .is_some_and(|t| app.admin.csrf.verify(&login.name, acc.name(), t));
    if !token_ok {
        return page::message(
            StatusCode::FORBIDDEN,
            "Form expired",
            "The form was too old or did not come from this bridge, so nothing was changed; open it again and paste the password once more.",
        );
    }
    let raw = form.get("password").map(String::as_str).unwrap_or("");
    replace_password(app, login, &acc, raw).await
}

/// Tests the pasted password with Apple and stores it: back to the status page, or the form
/// again with why it was refused.
async fn replace_password(
    app: &Arc<App>,
    login: &Login,
    acc: &Arc<Account>,
    raw: &str,
) -> Response<Body> {
    match test_and_store(
        &app.config,
        &app.upstream,
        app.accounts.vault(),
        &acc.config,
        raw,
    )
    .await
    {
        Ok(learned) => {
            use_new_password(app, acc, learned).await;
            tracing::info!(account = acc.name(), login = %login.name, "app-specific password replaced from the status page");
            let q: String = url::form_urlencoded::byte_serialize(acc.name().as_bytes()).collect();
            see_other(&format!("/status?reconnected={q}"))
        }
        Err(e) => {
            tracing::info!(account = acc.name(), error = %e, "a new app-specific password from the status page was refused");
            let token = app.admin.csrf.token(&login.name, acc.name());
            page::respond(
                StatusCode::UNPROCESSABLE_ENTITY,
                page::reconnect_form(acc.name(), acc.apple_id(), &token, Some(&e.to_string())),
            )
        }
    }
}

/// An account name made from an Apple ID's local part.
pub fn account_name_from(apple_id: &str) -> String {
    let local = apple_id.split('@').next().unwrap_or("");
    let name: String = local
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .take(64)
        .collect::<String>()
        .to_ascii_lowercase();
    if valid_account_name(&name) {
        name
    } else {
        "icloud".to_string()
    }
}

/// What the setup form offers, from the configured accounts.
fn setup_choice(accounts: &[Arc<Account>]) -> SetupAccount<'_> {
    match accounts {
        [] => SetupAccount::Ask,
        [one] => SetupAccount::Fixed {
            apple_id: one.apple_id(),
        },
        many => SetupAccount::Choose {
            names: many.iter().map(|a| a.name()).collect(),
        },
    }
}

/// `GET|POST /setup?token=...`: the one-time first-run page.
pub async fn setup(app: &Arc<App>, req: Request<RequestBody>, base: &str) -> Response<Body> {
    let Some(is_get) = form_method(&req) else {
        return not_allowed();
    };
    if let Some(closed) = setup_closed(app) {
        return closed;
    }
    let accounts: Vec<Arc<Account>> = app.accounts.snapshot().values().cloned().collect();
    if is_get {
        return setup_page(app, &req, &accounts);
    }
    if !csrf::same_origin(req.headers()) {
        return cross_origin();
    }
    let form = match read_form(req).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    let Some(token) = form
        .get("token")
        .filter(|t| app.admin.setup_token_matches(t))
    else {
        return bad_setup_token();
    };
    let _one_at_a_time = app.admin.setup_lock.lock().await;
    // Checked again under the lock: another attempt may have finished meanwhile.
    if !app.admin.setup_token_matches(token) || !app.auth.logins.is_empty() {
        return bad_setup_token();
    }
    let sent = SetupForm::read(&form, token, &accounts);
    match complete_setup(app, &sent, &form, &accounts, base).await {
        Ok(done) => done,
        Err(sentence) => sent.refuse(&sentence),
    }
}

/// The page to answer when setup is no longer offered (a login exists, or no setup token).
fn setup_closed(app: &App) -> Option<Response<Body>> {
    if !app.auth.logins.is_empty() {
        app.admin.end_setup();
        return Some(page::message(
            StatusCode::GONE,
            "Setup is done",
            "A login exists already, so this page is closed. Log in with it, or add one on the server with `icloud-bridge client add NAME --admin`.",
        ));
    }
    if app.admin.setup_token().is_none() {
        return Some(page::message(
            StatusCode::NOT_FOUND,
            "No setup offered",
            "This server offers no setup page; restart `icloud-bridge serve` to get a new setup link in its log.",
        ));
    }
    None
}

/// The answer to a setup request without the right token.
fn bad_setup_token() -> Response<Body> {
    page::message(
        StatusCode::FORBIDDEN,
        "Setup link needed",
        "Open the setup link printed in the server's log (it ends in ?token=...).",
    )
}

/// `GET`: the empty setup form, for the token in the link.
fn setup_page(app: &App, req: &Request<RequestBody>, accounts: &[Arc<Account>]) -> Response<Body> {
    let q = query(req);
    let Some(token) = q.get("token").filter(|t| app.admin.setup_token_matches(t)) else {
        return bad_setup_token();
    };
    page::respond(
        StatusCode::OK,
        page::setup_form(token, &setup_choice(accounts), "admin", "", None),
    )
}

/// A sent setup form: what to show again if it is refused.
struct SetupForm<'a> {
    token: &'a str,
    choice: SetupAccount<'a>,
    login: String,
    apple_id: String,
}

impl<'a> SetupForm<'a> {
    /// The trimmed login name and Apple ID of a form sent with `token`.
    fn read(form: &HashMap<String, String>, token: &'a str, accounts: &'a [Arc<Account>]) -> Self {
        let field = |name: &str| form.get(name).map(|s| s.trim()).unwrap_or("").to_string();
        SetupForm {
            token,
            choice: setup_choice(accounts),
            login: field("login"),
            apple_id: field("apple_id"),
        }
    }

    /// The form again, filled in as sent, with why it was refused.
    fn refuse(&self, sentence: &str) -> Response<Body> {
        page::respond(
            StatusCode::UNPROCESSABLE_ENTITY,
            page::setup_form(
                self.token,
                &self.choice,
                &self.login,
                &self.apple_id,
                Some(sentence),
            ),
        )
    }
}

/// Checks the sent form, stores the password and creates the first admin login: the page
/// with that login, or the sentence to refuse the form with.
async fn complete_setup(
    app: &Arc<App>,
    sent: &SetupForm<'_>,
    form: &HashMap<String, String>,
    accounts: &[Arc<Account>],
    base: &str,
) -> Result<Response<Body>, String> {
    if !valid_account_name(&sent.login) {
        return Err("Choose a login name of 1-64 letters, digits, '-', '_' or '.'.".into());
    }
    let (account_cfg, is_new) = account_to_set_up(sent, form, accounts)?;
    let raw = form.get("password").map(String::as_str).unwrap_or("");
    let learned = test_and_store(
        &app.config,
        &app.upstream,
        app.accounts.vault(),
        &account_cfg,
        raw,
    )
    .await
    .map_err(|e| e.to_string())?;
    let acc = register_account(app, account_cfg, is_new)?;
    use_new_password(app, &acc, learned).await;
    let password = create_first_login(app, &sent.login, acc.name()).await?;
    app.admin.end_setup();
    tracing::info!(login = %sent.login, account = acc.name(), "the setup page created the first admin login");
    Ok(page::respond(
        StatusCode::OK,
        page::setup_done(&sent.login, &password, base, acc.name()),
    ))
}

/// The account the form sets up, and whether it is new (no account configured yet).
fn account_to_set_up(
    sent: &SetupForm<'_>,
    form: &HashMap<String, String>,
    accounts: &[Arc<Account>],
) -> Result<(AccountConfig, bool), String> {
    match accounts {
        [] => {
            if !stored::valid_apple_id(&sent.apple_id) {
                return Err(
                    "Enter the Apple ID (an email address such as name@icloud.com).".into(),
                );
            }
            let cfg = AccountConfig {
                name: account_name_from(&sent.apple_id),
                apple_id: sent.apple_id.clone(),
                password_file: None,
                password_command: None,
            };
            Ok((cfg, true))
        }
        [one] => Ok((one.config.clone(), false)),
        many => {
            let wanted = form.get("account").map(String::as_str).unwrap_or("");
            match many.iter().find(|a| a.name() == wanted) {
                Some(a) => Ok((a.config.clone(), false)),
                None => Err("Choose one of the configured accounts.".into()),
            }
        }
    }
}

/// The running account for `cfg`: a new one is written to the stored accounts and added.
fn register_account(app: &App, cfg: AccountConfig, is_new: bool) -> Result<Arc<Account>, String> {
    if !is_new {
        return app
            .accounts
            .get(&cfg.name)
            .ok_or_else(|| "The account is no longer configured.".into());
    }
    if let Err(e) = stored::add(&app.config.server.data_dir, &cfg.name, &cfg.apple_id) {
        tracing::warn!(error = %e, "cannot write the stored accounts file");
        return Err("The account could not be saved in the data directory; check its permissions and the server's log.".into());
    }
    Ok(app.accounts.add(cfg))
}

/// Creates the first admin login for `account`, off the async threads; returns its password.
async fn create_first_login(app: &Arc<App>, login: &str, account: &str) -> Result<String, String> {
    let store = app.clone();
    let (name, account) = (login.to_string(), account.to_string());
    let made =
        tokio::task::spawn_blocking(move || store.auth.logins.add(&name, &account, true, None))
            .await;
    match made {
        Ok(Ok(p)) => Ok(p),
        Ok(Err(e)) => Err(format!("The login could not be created: {e}")),
        Err(_) => Err("The login could not be created; see the server's log.".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_names_from_apple_ids() {
        assert_eq!(account_name_from("Alice.Smith@icloud.com"), "alice.smith");
        assert_eq!(account_name_from("a+b@icloud.com"), "ab");
        assert_eq!(account_name_from("+++@icloud.com"), "icloud");
    }
}
