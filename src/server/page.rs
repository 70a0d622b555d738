//! HTML for the operator's pages (status, paste form, setup): one column, inline CSS, no
//! JavaScript, no external resources; every value is escaped.

use std::fmt::Write;
use std::time::SystemTime;

use http::{HeaderValue, Response, StatusCode};

use crate::body::{full, Body};
use crate::upstream::service::ServiceState;

/// Apple's page for app-specific passwords.
pub const APPLE_ASP_URL: &str = "https://account.apple.com/account/manage";

const CSS: &str = "*{box-sizing:border-box}body{font-family:system-ui,-apple-system,sans-serif;max-width:40rem;margin:0 auto;padding:1rem;line-height:1.45;font-size:1.05rem;color:#1b1b1b;background:#fafafa}h1{font-size:1.5rem;margin:.2rem 0 1rem}h2{font-size:1.25rem;margin:0 0 .4rem;overflow-wrap:anywhere}h3{margin:.2rem 0 .5rem}.card{background:#fff;border:1px solid #ddd;border-radius:.6rem;padding:1rem;margin:0 0 1rem}.id{font-weight:normal;color:#555;font-size:1rem}.badge{display:inline-block;padding:.3rem .8rem;border-radius:1rem;font-weight:bold;background:#e4e4e4;margin:.2rem 0}.badge code{font-weight:normal;font-size:.8rem;opacity:.75}.s-ok{background:#c9f0cc;color:#0c4a14}.s-auth_rejected,.s-unconfigured{background:#f8c9c9;color:#6b0c0c}.s-unreachable,.s-rate_limited{background:#f8e6ad;color:#5a4200}.reason{border-left:4px solid #bbb;padding-left:.7rem}.fix{background:#fff1f1;border:2px solid #c62828;border-radius:.6rem;padding:1rem;margin:.8rem 0}.fix ol{padding-left:1.2rem;margin:.3rem 0}.fix li{margin:.6rem 0}.btn{display:inline-block;min-height:44px;padding:.65rem 1.1rem;border-radius:.5rem;background:#fff;border:2px solid #1a5fb4;color:#1a5fb4;font-weight:bold;text-decoration:none;font-size:1rem;cursor:pointer}.primary{background:#1a5fb4;color:#fff}dl{margin:.6rem 0}dt{font-weight:bold;margin-top:.5rem}dd{margin:0;overflow-wrap:anywhere}code{overflow-wrap:anywhere;user-select:all;background:#f1f1f1;padding:.05rem .25rem;border-radius:.2rem}table{border-collapse:collapse;width:100%;margin:.4rem 0}td,th{text-align:left;padding:.45rem .3rem;border-bottom:1px solid #eee;vertical-align:top}label{display:block;font-weight:bold;margin:.8rem 0 .3rem}input[type=text],input[type=password],input[type=email],select{width:100%;min-height:44px;font-size:1rem;padding:.5rem;border:1px solid #999;border-radius:.4rem}button{margin-top:1rem}.note{background:#e8f5e9;border:1px solid #81c784;border-radius:.5rem;padding:.7rem}.error{background:#fdecea;border:1px solid #e57373;border-radius:.5rem;padding:.7rem}.secret{font-size:1.3rem;display:block;padding:.6rem;margin:.4rem 0}small{color:#555}";

/// Escape for HTML text and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A whole page around `body` (already HTML).
pub fn layout(title: &str, body: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><meta name=\"referrer\" content=\"same-origin\"><title>{t}</title><style>{CSS}</style></head><body>{body}</body></html>",
        t = esc(title)
    )
}

/// An HTML response; never cached, never framed, no scripts or foreign resources.
pub fn respond(status: StatusCode, html: String) -> Response<Body> {
    let mut r = Response::new(full(html));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    );
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        http::header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    r
}

/// A short page with a heading, one sentence and a link back to the status page.
pub fn message(status: StatusCode, title: &str, sentence: &str) -> Response<Body> {
    let body = format!(
        "<h1>{}</h1><p>{}</p><p><a class=\"btn\" href=\"/status\">Back to the status page</a></p>",
        esc(title),
        esc(sentence)
    );
    respond(status, layout(title, &body))
}

/// "just now", "5 minutes ago", "34 days ago".
pub fn ago(t: SystemTime, now: SystemTime) -> String {
    let secs = now.duration_since(t).map(|d| d.as_secs()).unwrap_or(0);
    let (n, unit) = match secs {
        0..=59 => return "just now".to_string(),
        60..=3599 => (secs / 60, "minute"),
        3600..=86_399 => (secs / 3600, "hour"),
        _ => (secs / 86_400, "day"),
    };
    format!("{n} {unit}{} ago", if n == 1 { "" } else { "s" })
}

/// The words on a state badge.
pub fn state_label(s: ServiceState) -> &'static str {
    match s {
        ServiceState::Ok => "Working",
        ServiceState::Unknown => "Not checked yet",
        ServiceState::RateLimited => "iCloud is limiting requests",
        ServiceState::Unreachable => "iCloud unreachable",
        ServiceState::AuthRejected => "Password rejected",
        ServiceState::Unconfigured => "No password set",
    }
}

/// `<p class="badge s-...">Label <code>state</code></p>`
pub fn badge(s: ServiceState) -> String {
    format!(
        "<span class=\"badge s-{st}\">{label} <code>{st}</code></span>",
        st = s.as_str(),
        label = state_label(s)
    )
}

/// One service row for the status page.
pub struct ServiceRow {
    pub name: &'static str,
    pub state: ServiceState,
    pub last_success: Option<SystemTime>,
}

/// Everything the status page shows about one account.
pub struct AccountView {
    pub name: String,
    pub apple_id_shown: String,
    pub state: ServiceState,
    pub reason: Option<String>,
    pub last_success: Option<SystemTime>,
    pub credential_set_at: Option<SystemTime>,
    pub has_credential: bool,
    pub services: Vec<ServiceRow>,
    /// Paths of calendars that hold only tasks (see [`crate::dav::task_lists`]); not their
    /// display names, which can be personal (this page needs no login).
    pub task_lists: Vec<String>,
    /// WebDAV-Push registrations: (device login, collection path, expires, last delivery
    /// and its result).
    pub push: Vec<PushRow>,
}

/// One WebDAV-Push registration on the status page.
pub struct PushRow {
    pub login: String,
    pub collection: String,
    pub expires: SystemTime,
    pub last_delivery: Option<SystemTime>,
    pub last_result: Option<String>,
}

/// The account's WebDAV-Push registrations (nothing when there are none).
fn push_table(b: &mut String, rows: &[PushRow], now: SystemTime) {
    if rows.is_empty() {
        return;
    }
    b.push_str("<h3>Push (WebDAV-Push)</h3><table><tr><th>Device</th><th>Collection</th><th>Expires</th><th>Last delivery</th></tr>");
    for r in rows {
        let last = match (&r.last_result, r.last_delivery) {
            (Some(res), Some(_)) => format!(
                "{} <small>({})</small>",
                when(r.last_delivery, now),
                esc(res)
            ),
            _ => "never".to_string(),
        };
        let _ = write!(
            b,
            "<tr><td>{}</td><td><code>{}</code></td><td>{}</td><td>{last}</td></tr>",
            esc(&r.login),
            esc(&r.collection),
            esc(&httpdate::fmt_http_date(r.expires)),
        );
    }
    b.push_str("</table>");
}

fn when(t: Option<SystemTime>, now: SystemTime) -> String {
    match t {
        Some(t) => format!(
            "{} <small>({})</small>",
            esc(&ago(t, now)),
            esc(&httpdate::fmt_http_date(t))
        ),
        None => "never".to_string(),
    }
}

fn reconnect_href(account: &str) -> String {
    let q: String = url::form_urlencoded::byte_serialize(account.as_bytes()).collect();
    format!("/admin/reconnect?account={q}")
}

/// The cache's numbers for the status page.
pub struct CacheView {
    pub entries: u64,
    pub bytes: u64,
    pub max_bytes: u64,
    pub hits: u64,
    pub misses: u64,
    pub stale_served: u64,
}

fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1_048_576.0)
}

fn cache_section(c: &CacheView) -> String {
    let asked = c.hits + c.misses;
    let rate = if asked == 0 {
        "no requests yet".to_string()
    } else {
        format!(
            "{:.0} % of {asked} cacheable requests answered from it",
            c.hits as f64 * 100.0 / asked as f64
        )
    };
    let stale = if c.stale_served > 0 {
        format!(
            "<p class=\"reason\">{} answers were saved copies, given while iCloud failed (marked stale for the apps).</p>",
            c.stale_served
        )
    } else {
        String::new()
    };
    format!(
        "<section class=\"card\"><h2>Cache</h2><dl><dt>Held</dt><dd>{} answers, {} of {}</dd><dt>Hit rate</dt><dd>{}</dd></dl>{stale}</section>",
        c.entries,
        mb(c.bytes),
        mb(c.max_bytes),
        esc(&rate)
    )
}

/// Where readers reach the bridge, for the addresses on the status page.
pub struct Bases<'a> {
    /// How the reader reached it (`http://host:port`).
    pub base: &'a str,
    /// The HTTPS listener (`https://host:port`), when there is one besides `base`.
    pub https: Option<&'a str>,
    /// The local CA in `certs_dir` (served at `/ca.pem`): its SHA-256 fingerprint and
    /// whether it carries name constraints.
    pub ca: Option<(String, bool)>,
}

/// The status page. `bases` says how the reader reaches the bridge; `note` is a short success
/// message (plain text); `setup_pending`: no login exists yet.
pub fn status_page(
    accounts: &[AccountView],
    bases: &Bases<'_>,
    note: Option<&str>,
    setup_pending: bool,
    cache: &CacheView,
) -> String {
    let now = SystemTime::now();
    let mut b = String::new();
    b.push_str("<h1>icloud-bridge</h1>");
    if setup_pending {
        b.push_str("<div class=\"fix\"><h3>Set up first</h3><p>No login exists yet. Open the setup link printed in the server's log (it ends in <code>/setup?token=...</code>), or run <code>icloud-bridge client add NAME --admin</code> on the server.</p></div>");
    }
    if let Some(n) = note {
        let _ = write!(b, "<p class=\"note\" role=\"status\">{}</p>", esc(n));
    }
    for a in accounts {
        account_card(&mut b, a, bases, now);
    }
    if accounts.is_empty() {
        b.push_str("<section class=\"card\"><p>No account is set up yet. Open the setup link printed in the server's log, add an <code>[[account]]</code> to the config file, or run <code>icloud-bridge init</code>.</p></section>");
    }
    if let Some((sha256, constrained)) = &bases.ca {
        ca_card(&mut b, sha256, *constrained);
    }
    b.push_str(&cache_section(cache));
    layout("icloud-bridge status", &b)
}

/// One account's card: its state, what to do about it, its services and its addresses.
fn account_card(b: &mut String, a: &AccountView, bases: &Bases<'_>, now: SystemTime) {
    let _ = write!(
        b,
        "<section class=\"card\"><h2>{name} <span class=\"id\">{id}</span></h2>{badge}",
        name = esc(&a.name),
        id = esc(&a.apple_id_shown),
        badge = badge(a.state)
    );
    if let Some(r) = &a.reason {
        let _ = write!(b, "<p class=\"reason\">{}</p>", esc(r));
    }
    let href = esc(&reconnect_href(&a.name));
    let needs_fix = matches!(
        a.state,
        ServiceState::AuthRejected | ServiceState::Unconfigured
    );
    if needs_fix {
        let _ = write!(
            b,
            "<div class=\"fix\"><h3>Fix now</h3><ol><li><a class=\"btn\" href=\"{APPLE_ASP_URL}\" target=\"_blank\" rel=\"noopener noreferrer\">Make a new app-specific password at Apple</a><br><small>Sign-In and Security, then App-Specific Passwords.</small></li><li><a class=\"btn primary\" href=\"{href}\">Paste it here</a><br><small>Needs an admin login of this bridge.</small></li></ol></div>"
        );
    }
    contact_table(b, a, now);
    app_addresses(b, &a.name, bases);
    task_lists_note(b, &a.task_lists);
    push_table(b, &a.push, now);
    b.push_str("<p><small>Log in with a bridge login (<code>icloud-bridge client add NAME</code>), never with the Apple ID.</small></p>");
    if !needs_fix {
        let _ = write!(
            b,
            "<p><a class=\"btn\" href=\"{href}\">Replace the app-specific password</a></p>"
        );
    }
    b.push_str("</section>");
}

/// The account's last contact and password age, and a table of its services.
fn contact_table(b: &mut String, a: &AccountView, now: SystemTime) {
    let set = match (a.has_credential, a.credential_set_at) {
        (false, _) => "not set".to_string(),
        (true, Some(t)) => format!("set {}", esc(&ago(t, now))),
        (true, None) => "set (from a command or the environment; age unknown)".to_string(),
    };
    let _ = write!(
        b,
        "<dl><dt>Last contact with iCloud</dt><dd>{last}</dd><dt>App-specific password</dt><dd>{set}</dd></dl><table><tr><th>Service</th><th>State</th><th>Last contact</th></tr>",
        last = when(a.last_success, now),
    );
    for s in &a.services {
        let _ = write!(
            b,
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            s.name,
            badge(s.state),
            when(s.last_success, now)
        );
    }
    b.push_str("</table>");
}

/// The addresses apps use for account `name`.
fn app_addresses(b: &mut String, name: &str, bases: &Bases<'_>) {
    let _ = write!(
        b,
        "<h3>Addresses for your apps</h3><dl><dt>DAVx5, Thunderbird and other apps that find things themselves</dt><dd><code>{root}/</code></dd><dt>CalDAV (calendars)</dt><dd><code>{root}/dav/{n}/calendars/</code></dd><dt>CardDAV (contacts)</dt><dd><code>{root}/dav/{n}/contacts/</code></dd>",
        root = esc(bases.base),
        n = esc(name),
    );
    if let Some(https) = bases.https {
        let _ = write!(
            b,
            "<dt>Over HTTPS</dt><dd><code>{root}/</code></dd>",
            root = esc(https)
        );
    }
    b.push_str("</dl>");
}

/// Why calendars holding only tasks show no current reminders (nothing when there are none).
fn task_lists_note(b: &mut String, task_lists: &[String]) {
    if task_lists.is_empty() {
        return;
    }
    let names: Vec<String> = task_lists
        .iter()
        .map(|n| format!("<code>{}</code>", esc(n)))
        .collect();
    let _ = write!(
        b,
        "<h3>Task lists</h3><p>{} only {} tasks. Since iOS 13 Apple's Reminders app keeps reminders outside CalDAV, so no app can reach your current reminders through iCloud's CalDAV: {} that the Reminders app no longer shows. This is Apple's design, not a sync fault.</p>",
        names.join(", "),
        if names.len() == 1 { "holds" } else { "hold" },
        if names.len() == 1 {
            "this is an older list"
        } else {
            "these are older lists"
        },
    );
}

/// The local CA's card: how to trust it, its fingerprint, and a warning if unconstrained.
fn ca_card(b: &mut String, sha256: &str, constrained: bool) {
    let _ = write!(
        b,
        "<section class=\"card\"><h2>HTTPS and IMAPS</h2><p>Let each device (DAVx5, Thunderbird, iOS) trust <a href=\"/ca.pem\">this bridge's CA</a> once; it is <code>ca.pem</code> in the bridge's <code>certs</code> directory. Before trusting it, check that the device shows this SHA-256 fingerprint (this page came over the network too: compare it with what <code>icloud-bridge init</code> printed, or with <code>openssl x509 -noout -fingerprint -sha256 -in certs/ca.pem</code> on the server):</p><p><code>{}</code></p>",
        esc(sha256)
    );
    if !constrained {
        let _ = write!(
            b,
            "<div class=\"error\"><p>This CA has no name constraints: whoever copies its key can make certificates that your devices accept for any site, Apple's included. To move to a CA limited to the bridge's names: {}.</p></div>",
            esc(crate::tls::MOVE_TO_CONSTRAINED)
        );
    }
    b.push_str("</section>");
}

/// The paste form for one account. `error` is the sentence of a refused attempt.
pub fn reconnect_form(account: &str, apple_id: &str, csrf: &str, error: Option<&str>) -> String {
    let mut b = format!(
        "<h1>New app-specific password</h1><p>For <strong>{name}</strong> ({id}).</p>",
        name = esc(account),
        id = esc(apple_id)
    );
    if let Some(e) = error {
        let _ = write!(
            b,
            "<p class=\"error\" role=\"alert\">{}</p><p><small>The old password is still stored.</small></p>",
            esc(e)
        );
    }
    let _ = write!(
        b,
        "<p><a class=\"btn\" href=\"{APPLE_ASP_URL}\" target=\"_blank\" rel=\"noopener noreferrer\">Make one at Apple</a></p><form method=\"post\" action=\"/admin/reconnect\"><input type=\"hidden\" name=\"account\" value=\"{name}\"><input type=\"hidden\" name=\"csrf\" value=\"{csrf}\"><label for=\"pw\">App-specific password (xxxx-xxxx-xxxx-xxxx)</label><input id=\"pw\" type=\"password\" name=\"password\" autocomplete=\"off\" autocapitalize=\"none\" spellcheck=\"false\" required><button class=\"btn primary\" type=\"submit\">Test and store</button></form><p><small>The bridge tests it against iCloud first; nothing changes if iCloud refuses it.</small></p><p><a href=\"/status\">Back to the status page</a></p>",
        name = esc(account),
        csrf = esc(csrf)
    );
    layout("New app-specific password", &b)
}

/// How the setup form asks for the account.
pub enum SetupAccount<'a> {
    /// Exactly one configured account: its Apple ID is shown, not asked.
    Fixed { apple_id: &'a str },
    /// Several configured accounts: pick one by name.
    Choose { names: Vec<&'a str> },
    /// None configured: ask for the Apple ID.
    Ask,
}

/// The one-time setup form.
pub fn setup_form(
    token: &str,
    account: &SetupAccount<'_>,
    login: &str,
    apple_id: &str,
    error: Option<&str>,
) -> String {
    let mut b = String::from("<h1>Set up icloud-bridge</h1><p>This page works once: it creates the first admin login and stores the Apple ID's app-specific password.</p>");
    if let Some(e) = error {
        let _ = write!(b, "<p class=\"error\" role=\"alert\">{}</p>", esc(e));
    }
    let _ = write!(
        b,
        "<form method=\"post\" action=\"/setup\"><input type=\"hidden\" name=\"token\" value=\"{t}\"><label for=\"login\">Name of the first login (for this device)</label><input id=\"login\" type=\"text\" name=\"login\" value=\"{l}\" autocapitalize=\"none\" spellcheck=\"false\" required>",
        t = esc(token),
        l = esc(login)
    );
    match account {
        SetupAccount::Fixed { apple_id } => {
            let _ = write!(
                b,
                "<label>Apple ID</label><p><strong>{}</strong></p>",
                esc(apple_id)
            );
        }
        SetupAccount::Choose { names } => {
            b.push_str(
                "<label for=\"account\">Account</label><select id=\"account\" name=\"account\">",
            );
            for n in names {
                let _ = write!(b, "<option value=\"{n}\">{n}</option>", n = esc(n));
            }
            b.push_str("</select>");
        }
        SetupAccount::Ask => {
            let _ = write!(
                b,
                "<label for=\"apple_id\">Apple ID</label><input id=\"apple_id\" type=\"email\" name=\"apple_id\" value=\"{}\" autocapitalize=\"none\" spellcheck=\"false\" required>",
                esc(apple_id)
            );
        }
    }
    let _ = write!(
        b,
        "<label for=\"pw\">App-specific password (xxxx-xxxx-xxxx-xxxx)</label><input id=\"pw\" type=\"password\" name=\"password\" autocomplete=\"off\" autocapitalize=\"none\" spellcheck=\"false\" required><p><small>Not the Apple ID password. <a href=\"{APPLE_ASP_URL}\" target=\"_blank\" rel=\"noopener noreferrer\">Make one at Apple</a> (Sign-In and Security, App-Specific Passwords).</small></p><button class=\"btn primary\" type=\"submit\">Test and set up</button></form>"
    );
    layout("Set up icloud-bridge", &b)
}

/// The result of the setup: the generated login password, shown once.
pub fn setup_done(login: &str, password: &str, base: &str, account: &str) -> String {
    let b = format!(
        "<h1>Ready</h1><p class=\"note\">iCloud accepted the app-specific password; it is stored.</p><p>Your admin login, shown only this once:</p><dl><dt>Server</dt><dd><code>{base}/</code></dd><dt>User</dt><dd><code>{login}</code></dd><dt>Password</dt><dd><code class=\"secret\">{pw}</code></dd><dt>CalDAV</dt><dd><code>{base}/dav/{n}/calendars/</code></dd><dt>CardDAV</dt><dd><code>{base}/dav/{n}/contacts/</code></dd></dl><p>Add more logins with <code>icloud-bridge client add NAME</code>.</p><p><a class=\"btn\" href=\"/status\">Status page</a></p>",
        base = esc(base),
        login = esc(login),
        pw = esc(password),
        n = esc(account),
    );
    layout("icloud-bridge is ready", &b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn ages_in_words() {
        let now = SystemTime::now();
        let t = |s| now - Duration::from_secs(s);
        assert_eq!(ago(t(5), now), "just now");
        assert_eq!(ago(t(60), now), "1 minute ago");
        assert_eq!(ago(t(7200), now), "2 hours ago");
        assert_eq!(ago(t(34 * 86_400 + 5), now), "34 days ago");
        assert_eq!(ago(now + Duration::from_secs(9), now), "just now");
    }

    #[test]
    fn escapes_markup() {
        assert_eq!(
            esc("<a href=\"x\">'&"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;"
        );
    }
}
