//! The IMAP role (spec C9): iCloud's greeting and capabilities, LOGIN and AUTHENTICATE PLAIN
//! against the account's app-specific passwords (one identical failure for every cause), the
//! IMAP switches, and a small mail store with the commands the bridge's clients use (LIST,
//! STATUS, SELECT/EXAMINE, FETCH, SEARCH, STORE, APPEND, COPY/MOVE, EXPUNGE, CLOSE, IDLE).
//! Plaintext on its own loopback port; the bridge is told `imap://127.0.0.1:PORT`.

use crate::accounts::{lock, Account};
use crate::config::Service;
use crate::imap_data::{
    changed_since, fetch_items, flags_str, glob, parse_key, render_fetch, select_set, Item, Key,
};
use crate::imap_parse::{quote, read_command, read_line, tokenize, ReadError, Tok};
use crate::imap_switches::{GreetingStyle, ImapSwitches};
use crate::mailstore::{canonical, Mailbox, Message};
use crate::state::{LoggedRequest, Shared};
use base64::Engine;
use std::collections::BTreeSet;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

const CAPS_2026: &str =
    "XAPPLEPUSHSERVICE IMAP4 IMAP4rev1 SASL-IR AUTH=ATOKEN AUTH=PLAIN AUTH=ATOKEN2 AUTH=XOAUTH2";
const CAPS_2016: &str =
    "st11p00mm-iscream022 15E205 XAPPLEPUSHSERVICE IMAP4 IMAP4rev1 SASL-IR AUTH=ATOKEN AUTH=PLAIN";
/// What login adds (NOTE-e04).
const CAPS_AFTER_LOGIN: &str = "CONDSTORE ENABLE QRESYNC IDLE UIDPLUS NAMESPACE ESEARCH SORT THREAD QUOTA WITHIN LIST-STATUS ID XAPPLEPUSHSERVICE XAPPLELITERAL X-APPLE-REMOTE-LINKS";

fn caps(sw: &ImapSwitches, authed: bool) -> String {
    let base = match sw.greeting_style {
        GreetingStyle::Y2026 => CAPS_2026,
        GreetingStyle::Y2016 => CAPS_2016,
    };
    let mut s = base.to_string();
    if authed {
        for c in CAPS_AFTER_LOGIN.split(' ') {
            if !s.split(' ').any(|x| x == c) {
                s.push(' ');
                s.push_str(c);
            }
        }
    }
    if sw.capability_trailing_space {
        s.push(' ');
    }
    s
}

fn greeting(sw: &ImapSwitches) -> String {
    match sw.greeting_style {
        GreetingStyle::Y2026 => format!(
            "* OK [CAPABILITY {}] (2606B15-0579518368c0) p00-iscream-55668b59f7-6f7mg\r\n",
            caps(sw, false)
        ),
        GreetingStyle::Y2016 => format!(
            "* OK [CAPABILITY {}] iSCREAM ready to rumble (1B3-2A8C1D) st11p00mm-iscream022\r\n",
            caps(sw, false)
        ),
    }
}

/// Bind the IMAP role on `addr` and spawn its accept loop; returns the bound address.
pub fn bind(shared: &Arc<Shared>, addr: SocketAddr) -> io::Result<SocketAddr> {
    crate::server::bind_tcp(shared, addr, serve)
}

struct Selected {
    name: String,
    read_only: bool,
    /// The EXISTS count this session has announced.
    exists: usize,
}

struct Session {
    shared: Arc<Shared>,
    r: BufReader<OwnedReadHalf>,
    w: OwnedWriteHalf,
    account: Option<Arc<Account>>,
    selected: Option<Selected>,
    changes: tokio::sync::watch::Receiver<u64>,
}

/// What to do after a command.
enum Next {
    Continue,
    Close,
}

async fn serve(shared: Arc<Shared>, stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let (r, w) = stream.into_split();
    let changes = shared.mail_changes.subscribe();
    let mut s = Session {
        shared,
        r: BufReader::new(r),
        w,
        account: None,
        selected: None,
        changes,
    };
    let sw = s.shared.switches().imap;
    if s.send(greeting(&sw).as_bytes()).await.is_err() {
        return;
    }
    loop {
        let segs = match read_command(&mut s.r, &mut s.w).await {
            Ok(segs) => segs,
            Err(ReadError::TooLong) => {
                let _ = s.send(b"* BAD Line too long\r\n").await;
                return;
            }
            Err(ReadError::Closed) => return,
        };
        let toks = match tokenize(&segs) {
            Ok(t) => t,
            Err(e) => {
                let tag = match segs.first() {
                    Some(crate::imap_parse::Seg::Text(t)) => t
                        .split(|&b| b == b' ')
                        .next()
                        .map(|t| String::from_utf8_lossy(t).into_owned())
                        .filter(|t| !t.is_empty())
                        .unwrap_or_else(|| "*".into()),
                    _ => "*".into(),
                };
                if s.send(format!("{tag} BAD {e}\r\n").as_bytes())
                    .await
                    .is_err()
                {
                    return;
                }
                continue;
            }
        };
        match s.command(toks).await {
            Ok(Next::Continue) => {}
            Ok(Next::Close) | Err(_) => {
                let _ = s.w.shutdown().await;
                return;
            }
        }
    }
}

type Out = Vec<u8>;

fn line(out: &mut Out, s: &str) {
    out.extend_from_slice(s.as_bytes());
    out.extend_from_slice(b"\r\n");
}

impl Session {
    async fn send(&mut self, b: &[u8]) -> io::Result<()> {
        self.w.write_all(b).await?;
        self.w.flush().await
    }

    fn log(&self, method: &str, user: &str, status: u16) {
        self.shared.push_log(LoggedRequest {
            method: method.to_string(),
            host: String::new(),
            path: user.to_string(),
            headers: Vec::new(),
            body: Vec::new(),
            status,
            role: "imap".into(),
        });
    }

    async fn command(&mut self, toks: Vec<Tok>) -> io::Result<Next> {
        let tag = match toks.first() {
            Some(Tok::Atom(t)) if !t.is_empty() && !t.contains(['*', '+']) => t.clone(),
            _ => {
                self.send(b"* BAD Invalid tag\r\n").await?;
                return Ok(Next::Continue);
            }
        };
        let Some(cmd) = toks.get(1).and_then(Tok::atom_upper) else {
            self.send(format!("{tag} BAD Missing command\r\n").as_bytes())
                .await?;
            return Ok(Next::Continue);
        };
        let args = &toks[2..];
        let sw = self.shared.switches().imap;
        let mut out = Vec::new();
        let next = match cmd.as_str() {
            "CAPABILITY" => {
                line(
                    &mut out,
                    &format!("* CAPABILITY {}", caps(&sw, self.account.is_some())),
                );
                let done = match sw.greeting_style {
                    GreetingStyle::Y2026 => "Completed",
                    GreetingStyle::Y2016 => "!!",
                };
                line(&mut out, &format!("{tag} OK {done}"));
                Next::Continue
            }
            "NOOP" | "CHECK" => {
                self.report_exists(&mut out);
                line(&mut out, &format!("{tag} OK {cmd} completed"));
                Next::Continue
            }
            "LOGOUT" => {
                line(&mut out, "* BYE Logging out");
                line(&mut out, &format!("{tag} OK LOGOUT completed"));
                Next::Close
            }
            "LOGIN" if self.account.is_none() => return self.login(&tag, args, &sw).await,
            "AUTHENTICATE" if self.account.is_none() => {
                return self.authenticate(&tag, args, &sw).await
            }
            "LOGIN" | "AUTHENTICATE" => {
                line(&mut out, &format!("{tag} BAD Already authenticated"));
                Next::Continue
            }
            _ if self.account.is_none() => {
                line(
                    &mut out,
                    &format!("{tag} BAD Command not allowed before authentication"),
                );
                Next::Continue
            }
            "IDLE" => return self.idle(&tag).await,
            _ => {
                match self.authed(&tag, &cmd, args, &mut out) {
                    Ok(()) => {}
                    Err(e) => line(&mut out, &format!("{tag} BAD {e}")),
                }
                Next::Continue
            }
        };
        self.send(&out).await?;
        Ok(next)
    }

    fn find_account(&self, user: &str, sw: &ImapSwitches) -> Option<Arc<Account>> {
        let full = user.contains('@');
        if (full && !sw.accept_full_address) || (!full && !sw.accept_local_part) {
            return None;
        }
        self.shared.accounts.by_imap_login(user)
    }

    /// The one answer for every credential problem.
    async fn auth_failed(&mut self, tag: &str, sw: &ImapSwitches) -> io::Result<Next> {
        self.send(
            format!(
                "{tag} NO [AUTHENTICATIONFAILED] Authentication {}\r\n",
                sw.fail_text_case
            )
            .as_bytes(),
        )
        .await?;
        Ok(if sw.close_after_auth_failure {
            Next::Close
        } else {
            Next::Continue
        })
    }

    /// Switches that fire before the credentials are looked at.
    async fn login_faults(
        &mut self,
        tag: &str,
        method: &str,
        user: &str,
        sw: &ImapSwitches,
    ) -> io::Result<Option<Next>> {
        if sw.drop_on_login {
            self.log(method, user, 0);
            return Ok(Some(Next::Close));
        }
        if sw.login_unavailable {
            self.log(method, user, 503);
            self.send(
                format!("{tag} BAD [UNAVAILABLE] Service temporarily unavailable\r\n").as_bytes(),
            )
            .await?;
            return Ok(Some(Next::Continue));
        }
        Ok(None)
    }

    async fn check_credentials(
        &mut self,
        tag: &str,
        method: &str,
        user: &str,
        pass: &str,
        sw: &ImapSwitches,
    ) -> io::Result<Next> {
        let ok = self
            .find_account(user, sw)
            .filter(|acc| lock(&acc.auth).check(Service::Mail, pass).is_ok());
        match ok {
            Some(acc) => {
                self.log(method, user, 200);
                self.account = Some(acc);
                self.send(format!("{tag} OK user {user} logged in\r\n").as_bytes())
                    .await?;
                Ok(Next::Continue)
            }
            None => {
                self.log(method, user, 401);
                self.auth_failed(tag, sw).await
            }
        }
    }

    async fn login(&mut self, tag: &str, args: &[Tok], sw: &ImapSwitches) -> io::Result<Next> {
        let user = args.first().and_then(Tok::text).unwrap_or_default();
        let pass = args.get(1).and_then(Tok::text).unwrap_or_default();
        if args.len() != 2 || user.is_empty() || pass.is_empty() {
            self.send(format!("{tag} BAD tag LOGIN username password\r\n").as_bytes())
                .await?;
            return Ok(Next::Continue);
        }
        if let Some(n) = self.login_faults(tag, "LOGIN", &user, sw).await? {
            return Ok(n);
        }
        self.check_credentials(tag, "LOGIN", &user, &pass, sw).await
    }

    async fn authenticate(
        &mut self,
        tag: &str,
        args: &[Tok],
        sw: &ImapSwitches,
    ) -> io::Result<Next> {
        let mech = args.first().and_then(Tok::text).unwrap_or_default();
        if !mech.eq_ignore_ascii_case("PLAIN") {
            self.send(format!("{tag} NO Unsupported authentication mechanism\r\n").as_bytes())
                .await?;
            return Ok(Next::Continue);
        }
        let encoded = match args.get(1).and_then(Tok::text) {
            Some(ir) if ir == "=" => String::new(),
            Some(ir) => ir,
            None => {
                self.send(b"+ \r\n").await?;
                let l = match read_line(&mut self.r).await {
                    Ok(l) => l,
                    Err(_) => return Ok(Next::Close),
                };
                if l == b"*" {
                    self.send(format!("{tag} BAD Authentication cancelled\r\n").as_bytes())
                        .await?;
                    return Ok(Next::Continue);
                }
                String::from_utf8_lossy(&l).into_owned()
            }
        };
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .unwrap_or_default();
        let parts: Vec<&[u8]> = decoded.split(|&b| b == 0).collect();
        let (user, pass) = match parts.as_slice() {
            [_authz, user, pass] => (
                String::from_utf8_lossy(user).into_owned(),
                String::from_utf8_lossy(pass).into_owned(),
            ),
            _ => {
                self.send(format!("{tag} BAD Invalid SASL PLAIN response\r\n").as_bytes())
                    .await?;
                return Ok(Next::Continue);
            }
        };
        if let Some(n) = self.login_faults(tag, "AUTHENTICATE", &user, sw).await? {
            return Ok(n);
        }
        if sw.authenticate_plain_rejected {
            self.log("AUTHENTICATE", &user, 401);
            return self.auth_failed(tag, sw).await;
        }
        self.check_credentials(tag, "AUTHENTICATE", &user, &pass, sw)
            .await
    }

    /// `* n EXISTS` when the selected mailbox grew since this session last said.
    fn report_exists(&mut self, out: &mut Out) {
        let (Some(acc), Some(sel)) = (&self.account, &mut self.selected) else {
            return;
        };
        let n = lock(&acc.mail)
            .get(&sel.name)
            .map(|m| m.messages.len())
            .unwrap_or(0);
        if n > sel.exists {
            line(out, &format!("* {n} EXISTS"));
        }
        sel.exists = n;
    }

    async fn idle(&mut self, tag: &str) -> io::Result<Next> {
        self.send(b"+ idling\r\n").await?;
        self.changes.borrow_and_update();
        loop {
            tokio::select! {
                l = read_line(&mut self.r) => {
                    let Ok(l) = l else { return Ok(Next::Close) };
                    if l.eq_ignore_ascii_case(b"DONE") {
                        self.send(format!("{tag} OK IDLE terminated\r\n").as_bytes()).await?;
                        return Ok(Next::Continue);
                    }
                    self.send(b"* BAD DONE is the only command allowed after IDLE\r\n").await?;
                }
                r = self.changes.changed() => {
                    if r.is_err() {
                        return Ok(Next::Close);
                    }
                    let mut out = Vec::new();
                    self.report_exists(&mut out);
                    if !out.is_empty() {
                        self.send(&out).await?;
                    }
                }
            }
        }
    }

    fn notify(&self) {
        self.shared.mail_changes.send_modify(|v| *v += 1);
    }

    /// Commands of the authenticated and selected states.
    fn authed(&mut self, tag: &str, cmd: &str, args: &[Tok], out: &mut Out) -> Result<(), String> {
        let acc = self.account.clone().ok_or("not authenticated")?;
        let text = |i: usize| args.get(i).and_then(Tok::text);
        match cmd {
            "ID" => {
                line(out, "* ID NIL");
                line(out, &format!("{tag} OK ID completed"));
            }
            "ENABLE" => {
                let en: Vec<String> = args
                    .iter()
                    .filter_map(Tok::atom_upper)
                    .filter(|c| c == "CONDSTORE" || c == "QRESYNC")
                    .collect();
                line(out, format!("* ENABLED {}", en.join(" ")).trim_end());
                line(out, &format!("{tag} OK ENABLE completed"));
            }
            "NAMESPACE" => {
                line(out, "* NAMESPACE ((\"\" \"/\")) NIL NIL");
                line(out, &format!("{tag} OK NAMESPACE completed"));
            }
            "LIST" | "LSUB" => {
                // LIST [(selection)] ref pattern [RETURN (...)]
                let rest: Vec<&Tok> = args.iter().filter(|t| !matches!(t, Tok::List(_))).collect();
                let reference = rest
                    .first()
                    .and_then(|t| t.text())
                    .ok_or("LIST needs a reference")?;
                let pattern = rest
                    .get(1)
                    .and_then(|t| t.text())
                    .ok_or("LIST needs a pattern")?;
                let full = format!("{reference}{pattern}");
                if pattern.is_empty() {
                    line(out, &format!("* {cmd} (\\Noselect) \"/\" \"\""));
                } else {
                    let store = lock(&acc.mail);
                    for mb in store.mailboxes.values() {
                        if glob(&full, &mb.name) {
                            let attrs = if mb.attrs.is_empty() {
                                "\\HasNoChildren".to_string()
                            } else if mb.attrs == "\\NoInferiors" {
                                mb.attrs.clone()
                            } else {
                                format!("\\HasNoChildren {}", mb.attrs)
                            };
                            let mut l = format!("* {cmd} ({attrs}) \"/\" ").into_bytes();
                            l.extend(quote(mb.name.as_bytes()));
                            out.extend(l);
                            out.extend_from_slice(b"\r\n");
                        }
                    }
                }
                line(out, &format!("{tag} OK {cmd} completed"));
            }
            "STATUS" => {
                let name = text(0).ok_or("STATUS needs a mailbox")?;
                let Some(Tok::List(items)) = args.get(1) else {
                    return Err("STATUS needs a list of items".into());
                };
                let store = lock(&acc.mail);
                let Some(mb) = store.get(&name) else {
                    line(
                        out,
                        &format!("{tag} NO [NONEXISTENT] Mailbox does not exist"),
                    );
                    return Ok(());
                };
                let mut parts = Vec::new();
                for it in items.iter().filter_map(Tok::atom_upper) {
                    let v = match it.as_str() {
                        "MESSAGES" => mb.messages.len() as u64,
                        "RECENT" => 0,
                        "UIDNEXT" => u64::from(mb.uid_next),
                        "UIDVALIDITY" => u64::from(mb.uid_validity),
                        "UNSEEN" => mb.unseen() as u64,
                        "HIGHESTMODSEQ" => mb.highest_modseq,
                        "SIZE" => mb.messages.iter().map(|m| m.raw.len() as u64).sum(),
                        _ => return Err(format!("unknown STATUS item {it}")),
                    };
                    parts.push(format!("{it} {v}"));
                }
                let mut l = b"* STATUS ".to_vec();
                l.extend(quote(mb.name.as_bytes()));
                l.extend(format!(" ({})\r\n", parts.join(" ")).into_bytes());
                out.extend(l);
                line(out, &format!("{tag} OK STATUS completed"));
            }
            "SELECT" | "EXAMINE" => {
                let name = text(0).ok_or("SELECT needs a mailbox")?;
                self.selected = None;
                let store = lock(&acc.mail);
                let Some(mb) = store.get(&name) else {
                    line(
                        out,
                        &format!("{tag} NO [NONEXISTENT] Mailbox does not exist"),
                    );
                    return Ok(());
                };
                line(out, "* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Forwarded $Junk $NotJunk)");
                line(out, "* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Forwarded $Junk $NotJunk \\*)] Flags permitted");
                line(out, &format!("* {} EXISTS", mb.messages.len()));
                line(out, "* 0 RECENT");
                line(
                    out,
                    &format!("* OK [UIDVALIDITY {}] UIDs valid", mb.uid_validity),
                );
                line(
                    out,
                    &format!("* OK [UIDNEXT {}] Predicted next UID", mb.uid_next),
                );
                line(
                    out,
                    &format!("* OK [HIGHESTMODSEQ {}] Highest", mb.highest_modseq),
                );
                let ro = cmd == "EXAMINE";
                line(
                    out,
                    &format!(
                        "{tag} OK [{}] {cmd} completed",
                        if ro { "READ-ONLY" } else { "READ-WRITE" }
                    ),
                );
                self.selected = Some(Selected {
                    name: mb.name.clone(),
                    read_only: ro,
                    exists: mb.messages.len(),
                });
            }
            "CREATE" => {
                let name = text(0).ok_or("CREATE needs a mailbox")?;
                if lock(&acc.mail).create(&name) {
                    line(out, &format!("{tag} OK CREATE completed"));
                } else {
                    line(out, &format!("{tag} NO [ALREADYEXISTS] Mailbox exists"));
                }
            }
            "SUBSCRIBE" | "UNSUBSCRIBE" => line(out, &format!("{tag} OK {cmd} completed")),
            "APPEND" => {
                let name = text(0).ok_or("APPEND needs a mailbox")?;
                let mut flags = BTreeSet::new();
                let mut msg = None;
                for t in &args[1..] {
                    match t {
                        Tok::List(l) => flags = l.iter().filter_map(Tok::text).collect(),
                        Tok::Str(s) => msg = Some(s.clone()),
                        Tok::Atom(_) => {}
                    }
                }
                // The date-time is a quoted string before the literal; the message is the last.
                let msg = match args.last() {
                    Some(Tok::Str(s)) => s.clone(),
                    _ => msg.ok_or("APPEND needs a message literal")?,
                };
                let mut store = lock(&acc.mail);
                let Some(mb) = store.get_mut(&name) else {
                    line(out, &format!("{tag} NO [TRYCREATE] Mailbox does not exist"));
                    return Ok(());
                };
                let uid = mb.append(msg, flags);
                let v = mb.uid_validity;
                drop(store);
                self.notify();
                self.report_exists(out);
                line(
                    out,
                    &format!("{tag} OK [APPENDUID {v} {uid}] APPEND completed"),
                );
            }
            "UNSELECT" | "CLOSE" => {
                let sel = self.selected.take().ok_or("No mailbox selected")?;
                if cmd == "CLOSE" && !sel.read_only {
                    let mut store = lock(&acc.mail);
                    if let Some(mb) = store.get_mut(&sel.name) {
                        mb.messages.retain(|m| !m.has_flag("\\Deleted"));
                    }
                }
                line(out, &format!("{tag} OK {cmd} completed"));
            }
            "UID" => {
                let sub = args
                    .first()
                    .and_then(Tok::atom_upper)
                    .ok_or("UID needs a command")?;
                self.selected_cmd(tag, &sub, &args[1..], true, out)?;
            }
            "FETCH" | "STORE" | "SEARCH" | "EXPUNGE" | "COPY" | "MOVE" => {
                self.selected_cmd(tag, cmd, args, false, out)?;
            }
            "DELETE" | "RENAME" => line(
                out,
                &format!("{tag} NO [CANNOT] Not supported by the stand-in"),
            ),
            _ => return Err(format!("Unknown command {cmd}")),
        }
        Ok(())
    }

    fn selected_cmd(
        &mut self,
        tag: &str,
        cmd: &str,
        args: &[Tok],
        uid: bool,
        out: &mut Out,
    ) -> Result<(), String> {
        let acc = self.account.clone().ok_or("not authenticated")?;
        let sel = self.selected.as_ref().ok_or("No mailbox selected")?;
        let (name, read_only) = (sel.name.clone(), sel.read_only);
        let mut store = lock(&acc.mail);
        let mb = store.get_mut(&name).ok_or("The selected mailbox is gone")?;
        let label = if uid {
            format!("UID {cmd}")
        } else {
            cmd.to_string()
        };
        let set_of = |t: Option<&Tok>, mb: &Mailbox| -> Result<Vec<usize>, String> {
            let s = t.and_then(Tok::text).ok_or("missing sequence set")?;
            select_set(mb, &s, uid).ok_or_else(|| format!("Invalid sequence set {s}"))
        };
        match cmd {
            "FETCH" => {
                let idx = set_of(args.first(), mb)?;
                let items = fetch_items(args.get(1).ok_or("FETCH needs items")?)?;
                let changed_since = changed_since(args.get(2));
                let mut touched = false;
                for i in idx {
                    let Some(m) = mb.messages.get(i) else {
                        continue;
                    };
                    if changed_since.is_some_and(|c| m.modseq <= c) {
                        continue;
                    }
                    let sets_seen = !read_only
                        && !m.has_flag("\\Seen")
                        && items
                            .iter()
                            .any(|it| matches!(it, Item::Section { peek: false, .. }));
                    if sets_seen {
                        if let Some(m) = mb.messages.get_mut(i) {
                            m.flags.insert("\\Seen".into());
                        }
                        mb.touch(i);
                        touched = true;
                    }
                    let Some(m) = mb.messages.get(i) else {
                        continue;
                    };
                    out.extend(render_fetch(i + 1, m, &items, uid, sets_seen));
                }
                drop(store);
                if touched {
                    self.notify();
                }
                line(out, &format!("{tag} OK {label} completed"));
            }
            "STORE" => {
                if read_only {
                    line(out, &format!("{tag} NO [READ-ONLY] Mailbox is read-only"));
                    return Ok(());
                }
                let idx = set_of(args.first(), mb)?;
                let mut rest = &args[1..];
                if let Some(Tok::List(_)) = rest.first() {
                    rest = &rest[1..]; // (UNCHANGEDSINCE n): accepted, not enforced
                }
                let op = rest
                    .first()
                    .and_then(Tok::atom_upper)
                    .ok_or("STORE needs an operation")?;
                let silent = op.ends_with(".SILENT");
                let op = op.trim_end_matches(".SILENT");
                let flags: BTreeSet<String> = match rest.get(1) {
                    Some(Tok::List(l)) => l.iter().filter_map(Tok::text).collect(),
                    Some(_) => rest[1..].iter().filter_map(Tok::text).collect(),
                    None => return Err("STORE needs flags".into()),
                };
                for i in idx {
                    let Some(m) = mb.messages.get_mut(i) else {
                        continue;
                    };
                    match op {
                        "+FLAGS" => m.flags.extend(flags.iter().cloned()),
                        "-FLAGS" => m
                            .flags
                            .retain(|f| !flags.iter().any(|x| x.eq_ignore_ascii_case(f))),
                        "FLAGS" => m.flags = flags.clone(),
                        _ => return Err(format!("Unknown STORE operation {op}")),
                    }
                    mb.touch(i);
                    if !silent {
                        if let Some(m) = mb.messages.get(i) {
                            let mut parts = vec![format!("FLAGS ({})", flags_str(m))];
                            if uid {
                                parts.push(format!("UID {}", m.uid));
                            }
                            parts.push(format!("MODSEQ ({})", m.modseq));
                            line(out, &format!("* {} FETCH ({})", i + 1, parts.join(" ")));
                        }
                    }
                }
                drop(store);
                self.notify();
                line(out, &format!("{tag} OK {label} completed"));
            }
            "SEARCH" => {
                let mut toks = args;
                if toks.first().and_then(Tok::atom_upper).as_deref() == Some("RETURN") {
                    toks = toks.get(2..).unwrap_or(&[]);
                }
                if toks.first().and_then(Tok::atom_upper).as_deref() == Some("CHARSET") {
                    toks = toks.get(2..).unwrap_or(&[]);
                }
                let mut it = toks.iter().peekable();
                let mut keys = Vec::new();
                while it.peek().is_some() {
                    keys.push(parse_key(&mut it, mb)?);
                }
                let key = Key::And(keys);
                let hits: Vec<String> = mb
                    .messages
                    .iter()
                    .enumerate()
                    .filter(|(i, m)| key.matches(*i + 1, m))
                    .map(|(i, m)| {
                        if uid {
                            m.uid.to_string()
                        } else {
                            (i + 1).to_string()
                        }
                    })
                    .collect();
                line(out, format!("* SEARCH {}", hits.join(" ")).trim_end());
                line(out, &format!("{tag} OK {label} completed"));
            }
            "EXPUNGE" => {
                if read_only {
                    line(out, &format!("{tag} NO [READ-ONLY] Mailbox is read-only"));
                    return Ok(());
                }
                let only = if uid {
                    Some(set_of(args.first(), mb)?)
                } else {
                    None
                };
                let uids: Vec<u32> = mb
                    .messages
                    .iter()
                    .enumerate()
                    .filter(|(i, m)| {
                        m.has_flag("\\Deleted") && only.as_ref().is_none_or(|o| o.contains(i))
                    })
                    .map(|(_, m)| m.uid)
                    .collect();
                expunge(mb, &uids, out);
                let n = mb.messages.len();
                drop(store);
                if let Some(sel) = &mut self.selected {
                    sel.exists = n;
                }
                self.notify();
                line(out, &format!("{tag} OK {label} completed"));
            }
            "COPY" | "MOVE" => {
                let idx = set_of(args.first(), mb)?;
                let dest = args
                    .get(1)
                    .and_then(Tok::text)
                    .ok_or("COPY needs a mailbox")?;
                let copies: Vec<Message> = idx
                    .iter()
                    .filter_map(|&i| mb.messages.get(i).cloned())
                    .collect();
                let Some(d) = store.get_mut(&dest) else {
                    line(out, &format!("{tag} NO [TRYCREATE] Mailbox does not exist"));
                    return Ok(());
                };
                let mut new_uids = Vec::new();
                for m in &copies {
                    new_uids.push(d.append(m.raw.clone(), m.flags.clone()).to_string());
                }
                let code = format!(
                    "COPYUID {} {} {}",
                    d.uid_validity,
                    copies
                        .iter()
                        .map(|m| m.uid.to_string())
                        .collect::<Vec<_>>()
                        .join(","),
                    new_uids.join(",")
                );
                if cmd == "MOVE" && !copies.is_empty() {
                    line(out, &format!("* OK [{code}] Moved"));
                    if let Some(src) = store.get_mut(&name) {
                        let uids: Vec<u32> = copies.iter().map(|m| m.uid).collect();
                        expunge(src, &uids, out);
                        let n = src.messages.len();
                        if let Some(sel) = &mut self.selected {
                            sel.exists = n;
                        }
                    }
                    line(out, &format!("{tag} OK {label} completed"));
                } else if copies.is_empty() {
                    line(out, &format!("{tag} OK {label} completed"));
                } else {
                    line(out, &format!("{tag} OK [{code}] {label} completed"));
                }
                drop(store);
                self.notify();
            }
            _ => return Err(format!("Unknown command {label}")),
        }
        Ok(())
    }
}

/// Remove the messages with these UIDs, announcing each sequence number.
fn expunge(mb: &mut Mailbox, uids: &[u32], out: &mut Out) {
    let mut i = 0;
    let mut removed = false;
    while i < mb.messages.len() {
        if uids.contains(&mb.messages[i].uid) {
            mb.messages.remove(i);
            line(out, &format!("* {} EXPUNGE", i + 1));
            removed = true;
        } else {
            i += 1;
        }
    }
    if removed {
        mb.highest_modseq += 1;
    }
}

/// Store a message as if it had arrived by mail; returns its UID (None: no such mailbox).
pub fn deliver(shared: &Shared, acc: &Account, mailbox: &str, raw: &[u8]) -> Option<u32> {
    let uid = lock(&acc.mail)
        .get_mut(&canonical(mailbox))?
        .append(raw.to_vec(), BTreeSet::new());
    shared.mail_changes.send_modify(|v| *v += 1);
    Some(uid)
}
