//! The bridge's own read-only calendars under each calendar home: `_birthdays/` (made from
//! the contacts' birthdays and anniversaries) and `_bridge/` (an event while the account
//! needs attention, `[notify] calendar = true`). Served locally, listed in the home.

pub mod birthdays;
pub mod home;
pub mod ics;
pub mod notice;
pub mod serve;

use std::sync::Arc;

use crate::accounts::Account;

use crate::dav::error::DavError;
use crate::dav::Dav;
use crate::upstream::service::Service;

/// Which of the bridge's calendars.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    Birthdays,
    Notice,
}

impl Which {
    /// The collection's segment under the calendar home (a leading `_` never starts an
    /// iCloud calendar id).
    pub fn segment(self) -> &'static str {
        match self {
            Which::Birthdays => "_birthdays",
            Which::Notice => "_bridge",
        }
    }

    pub fn displayname(self) -> &'static str {
        match self {
            Which::Birthdays => "Birthdays",
            Which::Notice => "icloud-bridge",
        }
    }

    pub fn color(self) -> &'static str {
        match self {
            Which::Birthdays => "#F57C00FF",
            Which::Notice => "#D32F2FFF",
        }
    }

    /// The sentence of a refused write.
    pub fn read_only(self) -> &'static str {
        match self {
            Which::Birthdays => "The Birthdays calendar is read-only: the bridge makes it from your contacts' birthdays and anniversaries; change those in your contacts.",
            Which::Notice => "The icloud-bridge calendar is read-only: the bridge shows there when your iCloud account needs attention.",
        }
    }
}

/// A calendar as served: its objects (sorted by name), a tag that changes with any of
/// them, and why it is stale, if it is.
#[derive(Debug, Clone)]
pub struct Calendar {
    pub objects: Vec<ics::Object>,
    pub tag: String,
    /// The account's state while it is served from what was last built.
    pub stale: Option<String>,
}

impl Calendar {
    pub fn new(mut objects: Vec<ics::Object>) -> Calendar {
        objects.sort_by(|a, b| a.name.cmp(&b.name));
        objects.dedup_by(|a, b| a.name == b.name);
        let all: String = objects
            .iter()
            .map(|o| format!("{} {}\n", o.name, o.etag))
            .collect();
        Calendar {
            tag: ics::hex(all.as_bytes(), 24),
            objects,
            stale: None,
        }
    }

    pub fn sync_token(&self) -> String {
        format!("{}{}", serve::TOKEN_PREFIX, self.tag)
    }
}

/// What the bridge's calendars need, and what the birthdays calendar last built.
pub struct VirtualCalendars {
    pub birthdays: bool,
    pub notice: bool,
    /// `cache.fresh_secs`: a birthdays calendar this young is served without asking again.
    pub fresh_secs: u64,
    /// `server.public_url`, for the fix URL (else how the client reaches the bridge).
    pub public_url: Option<String>,
    built: birthdays::Built,
}

impl Default for VirtualCalendars {
    fn default() -> Self {
        VirtualCalendars {
            birthdays: true,
            notice: false,
            fresh_secs: 30,
            public_url: None,
            built: Default::default(),
        }
    }
}

impl VirtualCalendars {
    pub fn new(config: &crate::config::Config) -> VirtualCalendars {
        VirtualCalendars {
            birthdays: config.carddav.birthdays,
            notice: config.notify.calendar,
            fresh_secs: config.cache.fresh_secs,
            public_url: config
                .server
                .public_url
                .as_ref()
                .map(|_| config.public_base()),
            built: Default::default(),
        }
    }

    /// The calendars switched on, in listing order.
    pub fn enabled(&self) -> Vec<Which> {
        let mut v = Vec::new();
        if self.birthdays {
            v.push(Which::Birthdays);
        }
        if self.notice {
            v.push(Which::Notice);
        }
        v
    }

    /// Which calendar a path under the calendar home names (and the rest after it).
    pub fn which<'a>(&self, service: Service, rest: &'a str) -> Option<(Which, &'a str)> {
        if service != Service::Caldav {
            return None;
        }
        let (seg, sub) = rest.split_once('/').unwrap_or((rest, ""));
        self.enabled()
            .into_iter()
            .find(|w| w.segment() == seg)
            .map(|w| (w, sub))
    }
}

/// The local path of a calendar.
pub fn collection_path(account: &str, which: Which) -> String {
    format!("/dav/{account}/calendars/{}/", which.segment())
}

/// The calendar as it is now (the birthdays one built or reused, the notice one made).
pub async fn current(
    dav: &Dav,
    account: &Arc<Account>,
    which: Which,
    public_origin: &str,
) -> Result<Calendar, DavError> {
    match which {
        Which::Birthdays => birthdays::current(dav, account, public_origin).await,
        Which::Notice => {
            let base = dav
                .calendars
                .public_url
                .clone()
                .unwrap_or_else(|| public_origin.to_string());
            Ok(notice::calendar(account, &format!("{base}/status")))
        }
    }
}

/// Answer a request under one of the bridge's calendars.
pub use serve::handle;
