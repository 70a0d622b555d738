//! The account store: collections, objects, ETags, ctags and sync tokens, photo blobs.

use crate::config::{CalendarSpec, ObjectSpec};
use crate::ical::{self, IcalMeta};
use crate::switches::CtagStyle;
use crate::vcard::{self, PhotoRef};
use base64::Engine;
use bytes::Bytes;
use rand::Rng;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// What a collection is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CollKind {
    Calendar { comp: String },
    Inbox,
    Outbox,
    Notification,
    AddressBook,
}

/// One stored resource.
#[derive(Clone, Debug)]
pub struct Obj {
    /// Quoted ETag, e.g. `"m3zrp1qg"`.
    pub etag: String,
    pub body: Bytes,
    /// Collection counter at the last change.
    pub changed: u64,
    /// Unix seconds of the last change.
    pub modified: i64,
    /// Until then GET/multiget answer 404 (eventual consistency).
    pub visible_at: Option<Instant>,
    pub meta: Option<Arc<IcalMeta>>,
    /// Photo blob hash (cards).
    pub photo: Option<String>,
}

impl Obj {
    pub fn visible(&self) -> bool {
        self.visible_at.is_none_or(|t| Instant::now() >= t)
    }
}

/// One collection.
#[derive(Clone, Debug)]
pub struct Collection {
    pub kind: CollKind,
    pub display_name: Option<String>,
    pub color: Option<String>,
    pub order: Option<u32>,
    pub uuid: [u8; 16],
    pub counter: u64,
    /// Sync tokens below this counter are invalid.
    pub floor: u64,
    pub objects: BTreeMap<String, Obj>,
    pub tombstones: HashMap<String, u64>,
}

impl Collection {
    pub fn new(kind: CollKind, display_name: Option<String>) -> Collection {
        Collection {
            kind,
            display_name,
            color: None,
            order: None,
            uuid: *uuid::Uuid::new_v4().as_bytes(),
            counter: 1,
            floor: 0,
            objects: BTreeMap::new(),
            tombstones: HashMap::new(),
        }
    }

    pub fn is_calendar(&self) -> bool {
        matches!(self.kind, CollKind::Calendar { .. })
    }

    /// The getctag value.
    pub fn ctag(&self, style: CtagStyle) -> String {
        match style {
            CtagStyle::Base64 => self.sync_token(),
            CtagStyle::FtRu => format!(
                "FT=-@RU={}@S={}",
                uuid::Uuid::from_bytes(self.uuid),
                self.counter
            ),
        }
    }

    /// The opaque base64 sync-token (starts with `HwoQ`, not a URI).
    pub fn sync_token(&self) -> String {
        let mut raw = Vec::with_capacity(32);
        raw.extend_from_slice(&[0x1f, 0x0a, 0x10, 0x12, 0x0c]);
        raw.extend_from_slice(&self.uuid);
        raw.extend_from_slice(&self.counter.to_be_bytes());
        raw.extend_from_slice(&[0x18, 0x02, 0x28, 0x00]);
        base64::engine::general_purpose::STANDARD.encode(raw)
    }

    /// The counter a token stands for, if it is valid for this collection.
    pub fn parse_token(&self, token: &str) -> Option<u64> {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(token.trim())
            .ok()?;
        if raw.len() != 33 || raw[..5] != [0x1f, 0x0a, 0x10, 0x12, 0x0c] || raw[5..21] != self.uuid
        {
            return None;
        }
        let mut c = [0u8; 8];
        c.copy_from_slice(&raw[21..29]);
        let c = u64::from_be_bytes(c);
        (c >= self.floor && c <= self.counter).then_some(c)
    }

    /// The collection's own getetag (changes with every change inside).
    pub fn etag(&self) -> String {
        derived_etag(&self.uuid, self.counter)
    }

    fn bump(&mut self) -> u64 {
        self.counter += 1;
        self.counter
    }
}

/// 8 random characters from `[a-z0-9]`, quoted.
pub fn new_etag() -> String {
    const CH: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::thread_rng();
    let s: String = (0..8)
        .map(|_| char::from(CH[rng.gen_range(0..CH.len())]))
        .collect();
    format!("\"{s}\"")
}

fn derived_etag(seed: &[u8], n: u64) -> String {
    const CH: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut h: u64 = 0xcbf29ce484222325 ^ n.wrapping_mul(0x9e3779b97f4a7c15);
    for b in seed {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x100000001b3);
    }
    let s: String = (0..8)
        .map(|i| char::from(CH[((h >> (i * 7)) % 36) as usize]))
        .collect();
    format!("\"{s}\"")
}

pub fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// The data of one account.
#[derive(Debug, Default)]
pub struct AccountData {
    /// Keyed `calendars/<id>` or `carddavhome/card`.
    pub collections: BTreeMap<String, Collection>,
    pub photos: HashMap<String, Bytes>,
    /// Changes anywhere in the account (the homes' getctag).
    pub counter: u64,
    pub home_uuid: [u8; 16],
    /// Deleted calendars, for `sticky_deleted_calendar`.
    pub graveyard: HashMap<String, (Instant, Collection)>,
}

/// How an object is being written.
pub struct WriteOpts {
    pub visible_at: Option<Instant>,
    /// Photo blob to keep when the body itself carries none (MOVE/COPY of a card).
    pub photo: Option<String>,
}

impl AccountData {
    pub fn new(calendars: &[CalendarSpec]) -> AccountData {
        let mut d = AccountData {
            home_uuid: *uuid::Uuid::new_v4().as_bytes(),
            counter: 1,
            ..AccountData::default()
        };
        for c in calendars {
            d.add_calendar(c);
        }
        for (id, kind) in [
            ("inbox", CollKind::Inbox),
            ("outbox", CollKind::Outbox),
            ("notification", CollKind::Notification),
        ] {
            d.collections
                .insert(format!("calendars/{id}"), Collection::new(kind, None));
        }
        d.collections.insert(
            "carddavhome/card".into(),
            Collection::new(CollKind::AddressBook, Some("card".into())),
        );
        d
    }

    pub fn add_calendar(&mut self, c: &CalendarSpec) {
        let mut col = Collection::new(
            CollKind::Calendar {
                comp: c.component.to_ascii_uppercase(),
            },
            Some(c.display_name.clone()),
        );
        col.color = c.color.clone();
        col.order = c.order;
        self.collections.insert(format!("calendars/{}", c.id), col);
        self.counter += 1;
    }

    /// The home ctag (calendars or carddavhome).
    pub fn home_token(&self) -> String {
        let c = Collection {
            uuid: self.home_uuid,
            counter: self.counter,
            ..Collection::new(CollKind::Notification, None)
        };
        c.sync_token()
    }

    /// Store a photo blob; returns its hash.
    pub fn add_photo(&mut self, bytes: Vec<u8>) -> String {
        let h = vcard::blob_hash(&bytes);
        self.photos.insert(h.clone(), Bytes::from(bytes));
        h
    }

    /// Write an object (body as given). Returns (new etag, created).
    pub fn write(
        &mut self,
        coll: &str,
        name: &str,
        body: String,
        opts: WriteOpts,
    ) -> Option<(String, bool)> {
        let is_card = matches!(self.collections.get(coll)?.kind, CollKind::AddressBook);
        let (body, photo) = if is_card {
            let (rest, p) = vcard::extract_photo(&body);
            let hash = match p {
                Some(PhotoRef::Inline(bytes)) => Some(self.add_photo(bytes)),
                Some(PhotoRef::Hash(h)) => Some(h),
                None => opts.photo.clone(),
            };
            (rest, hash)
        } else {
            (body, None)
        };
        let meta = (!is_card).then(|| Arc::new(ical::index(&body)));
        self.counter += 1;
        let col = self.collections.get_mut(coll)?;
        let changed = col.bump();
        col.tombstones.remove(name);
        let etag = new_etag();
        let created = col
            .objects
            .insert(
                name.to_string(),
                Obj {
                    etag: etag.clone(),
                    body: Bytes::from(body),
                    changed,
                    modified: now_secs(),
                    visible_at: opts.visible_at,
                    meta,
                    photo,
                },
            )
            .is_none();
        Some((etag, created))
    }

    /// Delete an object; true if it existed.
    pub fn delete(&mut self, coll: &str, name: &str) -> bool {
        let Some(col) = self.collections.get_mut(coll) else {
            return false;
        };
        if col.objects.remove(name).is_none() {
            return false;
        }
        let c = col.bump();
        col.tombstones.insert(name.to_string(), c);
        self.counter += 1;
        true
    }

    /// Give an object a new ETag without changing its content.
    pub fn touch(&mut self, coll: &str, name: &str) -> Option<String> {
        let col = self.collections.get_mut(coll)?;
        col.objects.get(name)?;
        let c = col.bump();
        let obj = col.objects.get_mut(name)?;
        obj.etag = new_etag();
        obj.changed = c;
        obj.modified = now_secs();
        let e = obj.etag.clone();
        self.counter += 1;
        Some(e)
    }

    /// Seed objects from the config.
    pub fn seed(&mut self, objects: &[ObjectSpec]) {
        for o in objects {
            let coll = o.collection.trim_matches('/').to_string();
            if !self.collections.contains_key(&coll) {
                if let Some(id) = coll.strip_prefix("calendars/") {
                    self.add_calendar(&CalendarSpec::new(id, id, "VEVENT"));
                }
            }
            let _ = self.write(
                &coll,
                &o.name,
                o.body.clone(),
                WriteOpts {
                    visible_at: None,
                    photo: None,
                },
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_and_tombstones() {
        let mut d = AccountData::new(&crate::config::standard_calendars());
        let col = &d.collections["calendars/home"];
        let t0 = col.sync_token();
        assert!(t0.starts_with("HwoQ"));
        assert_eq!(col.parse_token(&t0), Some(col.counter));
        assert_eq!(col.parse_token("HwoQAAAA"), None);
        let (e, created) = d
            .write(
                "calendars/home",
                "a.ics",
                "BEGIN:VCALENDAR\r\nEND:VCALENDAR\r\n".into(),
                WriteOpts {
                    visible_at: None,
                    photo: None,
                },
            )
            .unwrap();
        assert!(created && e.len() == 10 && e.starts_with('"'));
        assert!(d.delete("calendars/home", "a.ics"));
        assert!(d.collections["calendars/home"]
            .tombstones
            .contains_key("a.ics"));
        assert_ne!(d.collections["calendars/home"].sync_token(), t0);
    }
}
