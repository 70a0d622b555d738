//! Pushing: changes noted by the DAV side are coalesced per collection (a burst of writes
//! gives one message), the poller checks collections that have subscribers once per
//! `poll` through the cache (so a check shares the single flight with clients' requests and
//! costs at most one upstream request per collection and period), and each subscription
//! gets its message with a rate limit, retries with backoff, and is dropped when its push
//! service says it is gone. Every task stops on the shutdown token.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use futures_util::StreamExt;
use http_body_util::BodyExt;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::accounts::Account;
use crate::body::full;
use crate::dav::Dav;
use crate::push::store::Coll;
use crate::push::{now, Push, NS};

/// How long changes of one collection are gathered before its message goes out.
const COALESCE: Duration = Duration::from_millis(200);
/// At most one message per subscription this often (later ones wait and are merged).
const MIN_INTERVAL: Duration = Duration::from_secs(1);
/// Tries of one message before it is given up.
const MAX_ATTEMPTS: u32 = 5;
/// How long a collection check may take after a write.
const OBSERVE_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the poller looks for collections due for a check.
const POLL_TICK: Duration = Duration::from_secs(1);
/// Collections checked at once by the poller.
const POLL_CONCURRENCY: usize = 8;
/// Messages in flight at once, every push service together (no spike of a thousand
/// connections when a collection with many subscribers changes).
const SEND_CONCURRENCY: usize = 32;

/// Who must not hear of a change (`Push-Dont-Notify`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exclude {
    Nobody,
    Everybody,
    /// These registrations (the writer's own).
    Ids(HashSet<String>),
}

impl Exclude {
    /// Changes merged: a subscription is left out only if every change left it out.
    fn merge(self, other: Exclude) -> Exclude {
        match (self, other) {
            (Exclude::Nobody, _) | (_, Exclude::Nobody) => Exclude::Nobody,
            (Exclude::Everybody, x) | (x, Exclude::Everybody) => x,
            (Exclude::Ids(a), Exclude::Ids(b)) => {
                let both: HashSet<String> = a.intersection(&b).cloned().collect();
                if both.is_empty() {
                    Exclude::Nobody
                } else {
                    Exclude::Ids(both)
                }
            }
        }
    }

    fn excludes(&self, id: &str) -> bool {
        match self {
            Exclude::Nobody => false,
            Exclude::Everybody => true,
            Exclude::Ids(ids) => ids.contains(id),
        }
    }
}

/// One change of a collection.
#[derive(Debug, Clone)]
pub struct Change {
    pub coll: Coll,
    /// A property update (PROPPATCH on the collection) rather than a content update.
    pub property: bool,
    pub exclude: Exclude,
    /// What the poller saw; `None` after a write (the collection is asked then).
    pub token: Option<Seen>,
}

/// What a check of a collection saw: the value compared (sync-token and CTag) and the
/// sync-token for the message.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Seen {
    pub key: String,
    pub sync_token: Option<String>,
}

/// How the worker asks a collection's state (built by the server around the DAV tree).
pub type Observe = Arc<
    dyn Fn(Coll) -> Pin<Box<dyn Future<Output = Result<Option<Seen>, ()>> + Send>> + Send + Sync,
>;

/// A message waiting for one registration: its sequence number and XML.
type Waiting = (u64, Arc<Vec<u8>>);

/// The device logins that exist now, as (login, account); `None` when they cannot be read
/// (then nothing is dropped).
pub type Logins = Arc<dyn Fn() -> Option<Vec<(String, String)>> + Send + Sync>;

/// The worker's state inside [`Push`].
#[derive(Default)]
pub struct State {
    tx: OnceLock<mpsc::UnboundedSender<Change>>,
    /// What each watched collection last looked like.
    seen: Mutex<HashMap<Coll, Seen>>,
    /// `seen` changed since it was last saved.
    seen_dirty: std::sync::atomic::AtomicBool,
    /// When the bridge last asked each watched collection's state.
    asked: Mutex<HashMap<Coll, Instant>>,
    /// Per registration: the message waiting (sequence number, XML).
    pending: Mutex<HashMap<String, Waiting>>,
    last_sent: Mutex<HashMap<String, Instant>>,
    seq: AtomicU64,
    sending: Sending,
}

/// The permits for messages in flight.
struct Sending(tokio::sync::Semaphore);

impl Default for Sending {
    fn default() -> Self {
        Sending(tokio::sync::Semaphore::new(SEND_CONCURRENCY))
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Push {
    /// Note a change for the worker (nothing happens before [`spawn`]).
    pub fn changed(&self, c: Change) {
        // Most writes are to collections nobody subscribed to: nothing to do, nothing asked.
        if !self.store.watched(&c.coll, now()) {
            return;
        }
        if let Some(tx) = self.worker.tx.get() {
            let _ = tx.send(c);
        }
    }

    /// What `coll` looks like now, when nothing was known of it yet.
    pub fn note_baseline(&self, coll: &Coll, seen: Seen) {
        lock(&self.worker.asked).insert(coll.clone(), Instant::now());
        if !lock(&self.worker.seen).contains_key(coll) {
            self.note_seen(coll, seen);
        }
    }

    /// What `coll` looks like now; what it looked like before.
    fn note_seen(&self, coll: &Coll, seen: Seen) -> Option<Seen> {
        let before = lock(&self.worker.seen).insert(coll.clone(), seen.clone());
        if before.as_ref() != Some(&seen) {
            self.worker.seen_dirty.store(true, Ordering::Relaxed);
        }
        before
    }
}

/// What the watched collections looked like, kept in `data_dir/push-seen.json` so that a
/// change made while the bridge was stopped is pushed at its first check.
#[derive(serde::Serialize, serde::Deserialize, Default)]
struct SeenFile {
    collections: Vec<(Coll, Seen)>,
}

fn seen_path(push: &Push) -> std::path::PathBuf {
    push.store.dir().join("push-seen.json")
}

fn load_seen(push: &Push) {
    let Ok(bytes) = std::fs::read(seen_path(push)) else {
        return;
    };
    let Ok(file) = serde_json::from_slice::<SeenFile>(&bytes) else {
        return;
    };
    let now = now();
    let mut seen = lock(&push.worker.seen);
    for (c, s) in file.collections {
        if push.store.watched(&c, now) {
            seen.entry(c).or_insert(s);
        }
    }
}

fn save_seen(push: &Push) {
    if !push.worker.seen_dirty.swap(false, Ordering::Relaxed) {
        return;
    }
    let now = now();
    let mut collections: Vec<(Coll, Seen)> = lock(&push.worker.seen)
        .iter()
        .filter(|(c, _)| push.store.watched(c, now))
        .map(|(c, s)| (c.clone(), s.clone()))
        .collect();
    collections.sort_by(|a, b| a.0.cmp(&b.0));
    if let Ok(bytes) = serde_json::to_vec(&SeenFile { collections }) {
        if let Err(e) = crate::files::write_atomic(&seen_path(push), &bytes) {
            tracing::warn!(error = %e, "cannot save what the watched collections looked like");
        }
    }
}

/// Ask a collection's sync-token and CTag through the DAV tree (PROPFIND Depth 0, cached
/// like any client's). `Ok(None)`: it has neither (not a calendar or address book) or does
/// not exist; `Err`: iCloud did not answer.
pub async fn observe(
    dav: &Dav,
    account: &Arc<Account>,
    coll: &Coll,
    public_origin: &str,
) -> Result<Option<Seen>, ()> {
    const BODY: &str = r#"<?xml version="1.0" encoding="utf-8"?><d:propfind xmlns:d="DAV:" xmlns:cs="http://calendarserver.org/ns/"><d:prop><d:sync-token/><cs:getctag/></d:prop></d:propfind>"#;
    let rest = format!("{}/", coll.name);
    let req = http::Request::builder()
        .method("PROPFIND")
        .uri(coll.path())
        .header("depth", "0")
        .header("content-type", "application/xml; charset=utf-8")
        .body(full(BODY))
        .map_err(|_| ())?;
    let service = crate::push::dav::service_of(coll);
    let resp = crate::dav::proxy::forward(dav, account, service, &rest, req, public_origin)
        .await
        .map_err(|_| ())?;
    match resp.status().as_u16() {
        207 => {}
        403..=405 => return Ok(None),
        _ => return Err(()),
    }
    let bytes = resp.into_body().collect().await.map_err(|_| ())?.to_bytes();
    let text = |ns: &[u8], local: &[u8]| {
        crate::upstream::discover::text_of(&bytes, ns, local)
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty())
    };
    let sync_token = text(b"DAV:", b"sync-token");
    let ctag = text(b"http://calendarserver.org/ns/", b"getctag");
    if sync_token.is_none() && ctag.is_none() {
        return Ok(None);
    }
    Ok(Some(Seen {
        key: format!(
            "{}\n{}",
            sync_token.as_deref().unwrap_or(""),
            ctag.as_deref().unwrap_or("")
        ),
        sync_token,
    }))
}

/// Start the coalescer and the poller; both stop on `cancel`.
pub fn spawn(push: Arc<Push>, observe: Observe, logins: Logins, cancel: CancellationToken) {
    let (tx, rx) = mpsc::unbounded_channel();
    if push.worker.tx.set(tx).is_err() {
        return;
    }
    load_seen(&push);
    tokio::spawn(coalesce(push.clone(), observe.clone(), rx, cancel.clone()));
    tokio::spawn(poll(push, observe, logins, cancel));
}

/// Changes of one collection gathered until their message goes out.
struct Batch {
    content: bool,
    property: bool,
    exclude: Exclude,
    token: Option<Seen>,
    due: Instant,
}

async fn coalesce(
    push: Arc<Push>,
    observe: Observe,
    mut rx: mpsc::UnboundedReceiver<Change>,
    cancel: CancellationToken,
) {
    let mut batches: HashMap<Coll, Batch> = HashMap::new();
    loop {
        let next = batches.values().map(|b| b.due).min();
        tokio::select! {
            _ = cancel.cancelled() => return,
            c = rx.recv() => {
                let Some(c) = c else { return };
                match batches.remove(&c.coll) {
                    Some(b) => {
                        let merged = Batch {
                            content: b.content || !c.property,
                            property: b.property || c.property,
                            exclude: b.exclude.merge(c.exclude),
                            token: c.token.or(b.token),
                            due: b.due,
                        };
                        batches.insert(c.coll, merged);
                    }
                    None => {
                        batches.insert(c.coll, Batch {
                            content: !c.property,
                            property: c.property,
                            exclude: c.exclude,
                            token: c.token,
                            due: Instant::now() + COALESCE,
                        });
                    }
                }
            }
            _ = tokio::time::sleep_until(next.unwrap_or_else(Instant::now)), if next.is_some() => {
                let now = Instant::now();
                let due: Vec<Coll> = batches.iter().filter(|(_, b)| b.due <= now).map(|(c, _)| c.clone()).collect();
                for coll in due {
                    if let Some(b) = batches.remove(&coll) {
                        tokio::spawn(flush(push.clone(), observe.clone(), coll, b, cancel.clone()));
                    }
                }
            }
        }
    }
}

/// The push-message of the draft: the topic, and what changed (with the new sync-token).
pub fn message(topic: &str, content: bool, sync_token: Option<&str>, property: bool) -> Vec<u8> {
    let mut m = format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<P:push-message xmlns:P=\"{NS}\" xmlns:D=\"DAV:\"><P:topic>{}</P:topic>",
        crate::xml::escape_text(topic)
    );
    if content {
        match sync_token {
            Some(t) => m.push_str(&format!(
                "<P:content-update><D:sync-token>{}</D:sync-token></P:content-update>",
                crate::xml::escape_text(t)
            )),
            None => m.push_str("<P:content-update/>"),
        }
    }
    if property {
        m.push_str("<P:property-update/>");
    }
    m.push_str("</P:push-message>");
    m.into_bytes()
}

/// Send one collection's gathered changes to its subscribers.
async fn flush(push: Arc<Push>, observe: Observe, coll: Coll, b: Batch, cancel: CancellationToken) {
    if !push.store.watched(&coll, now()) {
        return;
    }
    if b.token.is_none() {
        // Asked now: the poller's next check of it is a period away.
        lock(&push.worker.asked).insert(coll.clone(), Instant::now());
    }
    let seen = match b.token {
        Some(s) => Some(s),
        None => tokio::select! {
            _ = cancel.cancelled() => return,
            r = tokio::time::timeout(OBSERVE_TIMEOUT, observe(coll.clone())) => match r {
                Ok(Ok(s)) => s,
                _ => None,
            },
        },
    };
    if let Some(s) = &seen {
        push.note_seen(&coll, s.clone());
    }
    let sync_token = seen.as_ref().and_then(|s| s.sync_token.as_deref());
    let xml = Arc::new(message(
        &push.topic(&coll),
        b.content,
        sync_token,
        b.property,
    ));
    for reg in push.store.of(&coll, now()) {
        let wants = (b.content && reg.content_update) || (b.property && reg.property_update);
        if wants && !b.exclude.excludes(&reg.id) {
            enqueue(&push, &reg.id, xml.clone(), &cancel);
        }
    }
}

/// Queue `xml` for registration `id`: a message still waiting is replaced (merged), and a
/// delivery task is started unless one runs.
fn enqueue(push: &Arc<Push>, id: &str, xml: Arc<Vec<u8>>, cancel: &CancellationToken) {
    let seq = push.worker.seq.fetch_add(1, Ordering::Relaxed);
    let start = lock(&push.worker.pending)
        .insert(id.to_string(), (seq, xml))
        .is_none();
    if start {
        tokio::spawn(deliver(push.clone(), id.to_string(), cancel.clone()));
    }
}

/// Deliver what waits for `id` until nothing does: at most one message per
/// [`MIN_INTERVAL`], retries with backoff (or the service's Retry-After), a gone
/// subscription removed.
async fn deliver(push: Arc<Push>, id: String, cancel: CancellationToken) {
    let mut attempt = 0u32;
    loop {
        let last = lock(&push.worker.last_sent).get(&id).copied();
        if let Some(last) = last {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep_until(last + MIN_INTERVAL) => {}
            }
        }
        let Some((seq, xml)) = lock(&push.worker.pending).get(&id).cloned() else {
            return;
        };
        let done = |push: &Push| {
            let mut p = lock(&push.worker.pending);
            if p.get(&id).is_some_and(|(s, _)| *s == seq) {
                p.remove(&id);
                true
            } else {
                false
            }
        };
        let reg = push.store.get(&id).filter(|r| r.expires > now());
        let receiver = reg
            .as_ref()
            .and_then(|r| crate::push::webpush::Receiver::from_b64(&r.p256dh, &r.auth).ok());
        let (Some(reg), Some(receiver)) = (reg, receiver) else {
            lock(&push.worker.pending).remove(&id);
            return;
        };
        let outcome = tokio::select! {
            _ = cancel.cancelled() => return,
            o = async {
                let _permit = push.worker.sending.0.acquire().await;
                crate::push::send::deliver(
                &push.client,
                &push.vapid,
                &push.config.subject,
                &push.config.allow,
                crate::push::send::Message {
                    resource: &reg.push_resource,
                    receiver: &receiver,
                    xml: &xml,
                    urgency: "normal",
                    ttl_secs: 86400,
                },
            ).await
            } => o,
        };
        push.stats.count(outcome.label());
        use crate::push::send::Outcome;
        match outcome {
            Outcome::Delivered => {
                lock(&push.worker.last_sent).insert(id.clone(), Instant::now());
                push.store.note_delivery(&id, now(), "delivered");
                attempt = 0;
                if done(&push) {
                    return;
                }
            }
            Outcome::Gone => {
                lock(&push.worker.pending).remove(&id);
                lock(&push.worker.last_sent).remove(&id);
                push.store.remove(&id);
                tracing::info!(
                    account = %reg.coll.account,
                    login = %reg.login,
                    collection = %reg.coll.path(),
                    "the push service says this subscription is gone; registration removed"
                );
                return;
            }
            Outcome::Retry(after) => {
                attempt += 1;
                if attempt >= MAX_ATTEMPTS {
                    push.store.note_delivery(&id, now(), "failed");
                    tracing::warn!(account = %reg.coll.account, login = %reg.login, "push message given up after {MAX_ATTEMPTS} tries");
                    attempt = 0;
                    if done(&push) {
                        return;
                    }
                    continue;
                }
                let wait = after.unwrap_or(Duration::from_secs(1u64 << attempt.min(6)));
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(wait) => {}
                }
            }
            Outcome::Failed(why) => {
                push.store.note_delivery(&id, now(), "failed");
                tracing::warn!(account = %reg.coll.account, login = %reg.login, reason = %why, "push message refused");
                if done(&push) {
                    return;
                }
            }
        }
    }
}

/// Check every collection that has subscribers once per period; a new sync-token or CTag
/// is a change for everybody. A collection is due `poll` after the bridge last asked for it
/// (by this poller, a registration or a write's push): `poll` is longer than `fresh_secs`,
/// so the check always reaches iCloud, and a change there is seen within `poll`.
async fn poll(push: Arc<Push>, observe: Observe, logins: Logins, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(POLL_TICK.min(push.poll));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut housekeeping: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => {
                push.store.save_if_dirty();
                save_seen(&push);
                return;
            }
            _ = tick.tick() => {}
        }
        if housekeeping.is_none_or(|t| t.elapsed() >= push.poll) {
            housekeeping = Some(Instant::now());
            keep_house(&push, &logins);
        }
        let due: Vec<Coll> = {
            let mut asked = lock(&push.worker.asked);
            let due: Vec<Coll> = push
                .store
                .collections(now())
                .into_iter()
                .filter(|c| asked.get(c).is_none_or(|t| t.elapsed() >= push.poll))
                .collect();
            for c in &due {
                asked.insert(c.clone(), Instant::now());
            }
            due
        };
        if due.is_empty() {
            continue;
        }
        let round = futures_util::stream::iter(due).for_each_concurrent(POLL_CONCURRENCY, |coll| {
            let push = push.clone();
            let observe = observe.clone();
            async move {
                let Ok(Ok(Some(seen))) =
                    tokio::time::timeout(push.poll, observe(coll.clone())).await
                else {
                    return;
                };
                let before = push.note_seen(&coll, seen.clone());
                if before.is_some_and(|b| b.key != seen.key) {
                    push.changed(Change {
                        coll,
                        property: false,
                        exclude: Exclude::Nobody,
                        token: Some(seen),
                    });
                }
            }
        });
        tokio::select! {
            _ = cancel.cancelled() => {
                push.store.save_if_dirty();
                save_seen(&push);
                return;
            }
            _ = round => {}
        }
    }
}

/// Once per period: expired registrations and those of removed logins go; the last
/// deliveries are saved.
fn keep_house(push: &Push, logins: &Logins) {
    push.store.purge_expired(now());
    if let Some(live) = logins() {
        let gone = push.store.retain(|r| {
            live.iter()
                .any(|(l, a)| *l == r.login && *a == r.coll.account)
        });
        if gone > 0 {
            tracing::info!(gone, "push registrations of removed logins dropped");
        }
    }
    push.store.save_if_dirty();
    save_seen(push);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_changes_leave_out_only_who_every_change_left_out() {
        let ids = |v: &[&str]| Exclude::Ids(v.iter().map(|s| s.to_string()).collect());
        assert_eq!(ids(&["a"]).merge(ids(&["b"])), Exclude::Nobody);
        assert_eq!(ids(&["a", "b"]).merge(ids(&["b"])), ids(&["b"]));
        assert_eq!(Exclude::Everybody.merge(ids(&["a"])), ids(&["a"]));
        assert_eq!(Exclude::Nobody.merge(Exclude::Everybody), Exclude::Nobody);
        assert!(Exclude::Everybody.excludes("x") && !Exclude::Nobody.excludes("x"));
    }

    #[test]
    fn the_message_is_the_drafts() {
        let m =
            String::from_utf8(message("T0p1c", true, Some("http://x/sync/10&"), false)).unwrap();
        assert!(m.contains("<P:topic>T0p1c</P:topic>"));
        assert!(m.contains("<P:content-update><D:sync-token>http://x/sync/10&amp;</D:sync-token></P:content-update>"));
        assert!(!m.contains("property-update"));
        let m = String::from_utf8(message("t", false, None, true)).unwrap();
        assert!(m.contains("<P:property-update/>") && !m.contains("content-update"));
    }
}
