//! The in-process control API for tests (C11): switches, account and ASP management,
//! server-side edits that simulate other devices, and the request log.

use crate::accounts::{lock, read, write, Account};
use crate::config::{AccountSpec, AccountState, CalendarSpec, Service};
use crate::objprops::{snap, ObjRender};
use crate::paths;
use crate::server;
use crate::smtp::SentMessage;
use crate::state::{LoggedRequest, Shared};
use crate::store::{CollKind, WriteOpts};
use crate::switches::Switches;
use crate::xml_in::PropRequest;
use std::sync::Arc;

/// One message of a mailbox, as `Control::mailbox_messages` returns it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MailMessage {
    pub uid: u32,
    pub flags: Vec<String>,
    pub raw: Vec<u8>,
}

/// A cheap, cloneable handle on a running stand-in.
#[derive(Clone)]
pub struct Control {
    pub(crate) shared: Arc<Shared>,
}

fn coll_key(collection: &str) -> String {
    collection
        .trim_matches('/')
        .split('/')
        .map(paths::dec)
        .collect::<Vec<_>>()
        .join("/")
}

impl Control {
    fn account(&self, apple_id: &str) -> Option<Arc<Account>> {
        self.shared.accounts.by_apple_id(apple_id)
    }

    /// A snapshot of the switches.
    pub fn switches(&self) -> Switches {
        self.shared.switches()
    }

    pub fn update_switches(&self, f: impl FnOnce(&mut Switches)) {
        self.shared.update_switches(f);
    }

    /// Set a switch by name, e.g. `("rate.limit_after", "0")`; see `Switches::names()`.
    pub fn set_switch(&self, name: &str, value: &str) -> Result<(), String> {
        let mut result = Ok(());
        self.shared.update_switches(|s| result = s.set(name, value));
        result
    }

    /// Add an account at run time (its partition gets listeners if it has none yet).
    pub fn add_account(&self, spec: &AccountSpec) -> Result<(), String> {
        server::ensure_partition(&self.shared, spec.partition).map_err(|e| e.to_string())?;
        self.shared.accounts.add(spec);
        Ok(())
    }

    /// Generate an app-specific password (25-active limit; requires 2FA).
    pub fn generate_asp(&self, apple_id: &str, label: &str) -> Result<String, String> {
        let acc = self.account(apple_id).ok_or("unknown Apple ID")?;
        let mut a = lock(&acc.auth);
        a.generate(label)
    }

    /// Revoke one ASP; true if it was active.
    pub fn revoke_asp(&self, apple_id: &str, value: &str) -> bool {
        let Some(acc) = self.account(apple_id) else {
            return false;
        };
        let mut a = lock(&acc.auth);
        match a.asps.iter_mut().find(|x| x.value == value && x.active) {
            Some(x) => {
                x.active = false;
                true
            }
            None => false,
        }
    }

    /// "Expire" is not an Apple concept; it is an alias of revoke (C2).
    pub fn expire_asp(&self, apple_id: &str, value: &str) -> bool {
        self.revoke_asp(apple_id, value)
    }

    pub fn revoke_all_asps(&self, apple_id: &str) {
        if let Some(acc) = self.account(apple_id) {
            for x in lock(&acc.auth).asps.iter_mut() {
                x.active = false;
            }
        }
    }

    /// Active ASP values with their labels.
    pub fn active_asps(&self, apple_id: &str) -> Vec<(String, String)> {
        self.account(apple_id)
            .map(|acc| {
                lock(&acc.auth)
                    .asps
                    .iter()
                    .filter(|a| a.active)
                    .map(|a| (a.value.clone(), a.label.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Change the primary password; all ASPs are revoked (Apple's rule).
    pub fn change_primary_password(&self, apple_id: &str, new: &str) {
        if let Some(acc) = self.account(apple_id) {
            let mut a = lock(&acc.auth);
            a.primary_password = new.to_string();
            for x in a.asps.iter_mut() {
                x.active = false;
            }
        }
    }

    pub fn set_two_factor(&self, apple_id: &str, on: bool) {
        if let Some(acc) = self.account(apple_id) {
            lock(&acc.auth).two_factor = on;
        }
    }

    pub fn set_service(&self, apple_id: &str, service: Service, on: bool) {
        if let Some(acc) = self.account(apple_id) {
            lock(&acc.auth).services.set(service, on);
        }
    }

    pub fn set_adp(&self, apple_id: &str, on: bool) {
        if let Some(acc) = self.account(apple_id) {
            lock(&acc.auth).adp_enabled = on;
        }
    }

    pub fn set_account_state(&self, apple_id: &str, state: AccountState) {
        if let Some(acc) = self.account(apple_id) {
            lock(&acc.auth).state = state;
        }
    }

    /// Move the account to another partition (listeners are created if needed). The old
    /// partition host then answers per `partition.moved_response` (301 by default).
    pub fn move_partition(&self, apple_id: &str, new_partition: u32) {
        let Some(acc) = self.account(apple_id) else {
            return;
        };
        if let Err(e) = server::ensure_partition(&self.shared, new_partition) {
            tracing::warn!(error = %e, "stand-in: cannot bind partition {new_partition}");
            return;
        }
        let mut a = lock(&acc.auth);
        if a.partition != new_partition {
            let old = a.partition;
            a.former_partitions.retain(|p| *p != new_partition);
            a.former_partitions.push(old);
            a.partition = new_partition;
        }
    }

    /// Write an object as another device would (no validation). `collection` is
    /// `calendars/<id>` (created as a VEVENT calendar if missing) or `carddavhome/card`.
    /// Returns the new quoted ETag, or an empty string for an unknown account/collection.
    pub fn put_object(&self, apple_id: &str, collection: &str, name: &str, body: &str) -> String {
        let Some(acc) = self.account(apple_id) else {
            return String::new();
        };
        let key = coll_key(collection);
        let name = paths::dec(name);
        let mut data = write(&acc.data);
        if !data.collections.contains_key(&key) {
            match key.strip_prefix("calendars/") {
                Some(id) if !id.is_empty() && !id.contains('/') => {
                    data.add_calendar(&CalendarSpec::new(id, id, "VEVENT"))
                }
                _ => return String::new(),
            }
        }
        let opts = WriteOpts {
            visible_at: None,
            photo: None,
        };
        data.write(&key, &name, body.to_string(), opts)
            .map(|(etag, _)| etag)
            .unwrap_or_default()
    }

    pub fn delete_object(&self, apple_id: &str, collection: &str, name: &str) -> bool {
        self.account(apple_id)
            .is_some_and(|acc| write(&acc.data).delete(&coll_key(collection), &paths::dec(name)))
    }

    /// (ETag, body as served) of an object.
    pub fn get_object(
        &self,
        apple_id: &str,
        collection: &str,
        name: &str,
    ) -> Option<(String, String)> {
        let acc = self.account(apple_id)?;
        let key = coll_key(collection);
        let data = read(&acc.data);
        let col = data.collections.get(&key)?;
        let obj = col.objects.get(&paths::dec(name))?;
        let s = snap(String::new(), obj, &data.photos);
        let is_card = col.kind == CollKind::AddressBook;
        drop(data);
        let render = ObjRender::new(
            &self.shared.switches(),
            PropRequest::AllProp,
            is_card,
            self.shared.card_base(acc.partition()),
            &acc.dsid,
        );
        let body = render.served(&s).into_owned();
        Some((s.etag, body))
    }

    /// New ETag without a content change (server housekeeping).
    pub fn touch_etag(&self, apple_id: &str, collection: &str, name: &str) -> Option<String> {
        let acc = self.account(apple_id)?;
        let mut data = write(&acc.data);
        data.touch(&coll_key(collection), &paths::dec(name))
    }

    /// Create (or replace the properties of) a calendar `calendars/<id>`.
    pub fn create_calendar(&self, apple_id: &str, id: &str, display_name: &str, component: &str) {
        if let Some(acc) = self.account(apple_id) {
            let mut data = write(&acc.data);
            let key = format!("calendars/{id}");
            match data.collections.get_mut(&key) {
                Some(col) => {
                    col.display_name = Some(display_name.to_string());
                    col.kind = CollKind::Calendar {
                        comp: component.to_ascii_uppercase(),
                    };
                }
                None => data.add_calendar(&CalendarSpec::new(id, display_name, component)),
            }
        }
    }

    /// Names (decoded) of the objects in a collection.
    pub fn list_objects(&self, apple_id: &str, collection: &str) -> Vec<String> {
        self.account(apple_id)
            .and_then(|acc| {
                let data = read(&acc.data);
                data.collections
                    .get(&coll_key(collection))
                    .map(|c| c.objects.keys().cloned().collect())
            })
            .unwrap_or_default()
    }

    /// Make every sync token handed out so far for this collection invalid.
    pub fn invalidate_sync_tokens(&self, apple_id: &str, collection: &str) {
        if let Some(acc) = self.account(apple_id) {
            let mut data = write(&acc.data);
            if let Some(c) = data.collections.get_mut(&coll_key(collection)) {
                c.counter += 1;
                c.floor = c.counter;
            }
        }
    }

    /// Messages the SMTP role accepted for this account (envelope and raw data), oldest first.
    pub fn sent_messages(&self, apple_id: &str) -> Vec<SentMessage> {
        self.account(apple_id)
            .map(|acc| crate::smtp::sent(&acc))
            .unwrap_or_default()
    }

    /// Forget the account's sent messages.
    pub fn clear_sent_messages(&self, apple_id: &str) {
        if let Some(acc) = self.account(apple_id) {
            lock(&acc.outbox).clear();
        }
    }

    /// Bytes of message data the SMTP role has received so far, across all sessions,
    /// counted line by line as they arrive (also for messages not yet complete).
    pub fn smtp_data_bytes(&self) -> u64 {
        self.shared
            .smtp_data_bytes
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The SMTP role's address, if it runs.
    pub fn smtp_addr(&self) -> Option<std::net::SocketAddr> {
        read(&self.shared.listeners).smtp
    }

    /// Deliver a message into an account's mailbox as if it arrived by mail (IDLE sessions
    /// see `* n EXISTS`). Returns its UID; `None` for an unknown account or mailbox.
    pub fn deliver(&self, apple_id: &str, mailbox: &str, raw_message: &[u8]) -> Option<u32> {
        let acc = self.account(apple_id)?;
        crate::imap::deliver(&self.shared, &acc, mailbox, raw_message)
    }

    /// The messages of a mailbox, oldest first: (UID, flags, raw message).
    pub fn mailbox_messages(&self, apple_id: &str, mailbox: &str) -> Vec<MailMessage> {
        self.account(apple_id)
            .and_then(|acc| {
                lock(&acc.mail).get(mailbox).map(|mb| {
                    mb.messages
                        .iter()
                        .map(|m| MailMessage {
                            uid: m.uid,
                            flags: m.flags.iter().cloned().collect(),
                            raw: m.raw.clone(),
                        })
                        .collect()
                })
            })
            .unwrap_or_default()
    }

    /// Requests held by the `hold.path` switch now (they have arrived and wait for the
    /// switch to change).
    pub fn held(&self) -> usize {
        self.shared.held.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub fn request_log(&self) -> Vec<LoggedRequest> {
        lock(&self.shared.log).iter().cloned().collect()
    }

    pub fn clear_request_log(&self) {
        lock(&self.shared.log).clear();
    }
}
