//! WebDAV properties of the root, principal, homes and collections, rendered in iCloud style.

use crate::store::{CollKind, Collection};
use crate::switches::Switches;
use crate::xml_in::{PropName, PropRequest, CALDAV, CARDDAV, CS, DAV, ICAL};
use crate::xml_out::{comps, el, el_text, empty, href};

/// Split a request into (found elements, missing names) using `lookup`.
pub fn split(
    req: &PropRequest,
    defaults: &[PropName],
    lookup: impl Fn(&PropName) -> Option<String>,
) -> (Vec<String>, Vec<PropName>) {
    match req {
        PropRequest::Props(names) => {
            let mut found = Vec::with_capacity(names.len());
            let mut missing = Vec::new();
            for n in names {
                match lookup(n) {
                    Some(v) => found.push(v),
                    None => missing.push(n.clone()),
                }
            }
            (found, missing)
        }
        PropRequest::AllProp => (defaults.iter().filter_map(&lookup).collect(), Vec::new()),
        PropRequest::PropName => (
            defaults
                .iter()
                .filter(|n| lookup(n).is_some())
                .map(|n| empty(&n.ns, &n.name))
                .collect(),
            Vec::new(),
        ),
    }
}

pub fn names(list: &[(&str, &str)]) -> Vec<PropName> {
    list.iter().map(|(ns, n)| PropName::new(ns, n)).collect()
}

/// What property rendering needs to know about the account and host.
pub struct PropCtx<'a> {
    pub sw: &'a Switches,
    pub dsid: &'a str,
    pub apple_id: &'a str,
    pub display_name: &'a str,
    pub is_cal_host: bool,
    /// Absolute home-set URLs on the partition ports.
    pub cal_home_url: String,
    pub card_home_url: String,
    /// The homes' getctag.
    pub home_token: String,
}

impl PropCtx<'_> {
    pub fn principal_path(&self) -> String {
        format!("/{}/principal/", self.dsid)
    }

    fn cup(&self) -> String {
        el(DAV, "current-user-principal", &href(&self.principal_path()))
    }
}

/// `/` and the well-known paths: only current-user-principal.
pub fn root_prop(c: &PropCtx, p: &PropName) -> Option<String> {
    p.is(DAV, "current-user-principal").then(|| c.cup())
}

pub fn root_defaults() -> Vec<PropName> {
    names(&[(DAV, "current-user-principal")])
}

/// The principal (C5.2 on CalDAV hosts, C5.3 on CardDAV hosts).
pub fn principal_prop(c: &PropCtx, p: &PropName) -> Option<String> {
    let d = c.dsid;
    Some(match (p.ns.as_str(), p.name.as_str(), c.is_cal_host) {
        (DAV, "current-user-principal", _) => c.cup(),
        (DAV, "principal-URL", _) => el(DAV, "principal-URL", &href(&c.principal_path())),
        (DAV, "resourcetype", _) => el(DAV, "resourcetype", "<collection/><principal/>"),
        (DAV, "displayname", _) => el_text(DAV, "displayname", c.display_name),
        (CALDAV, "calendar-home-set", true) => {
            el(CALDAV, "calendar-home-set", &href(&c.cal_home_url))
        }
        (CALDAV, "calendar-user-address-set", true) => el(
            CALDAV,
            "calendar-user-address-set",
            &format!(
                "<href preferred=\"1\" xmlns=\"DAV:\">mailto:{}</href>{}",
                crate::xml_out::escaped(c.apple_id),
                href(&format!("/{d}/principal/"))
            ),
        ),
        (CALDAV, "schedule-inbox-URL", true) => el(
            CALDAV,
            "schedule-inbox-URL",
            &href(&format!("/{d}/calendars/inbox/")),
        ),
        (CALDAV, "schedule-outbox-URL", true) => el(
            CALDAV,
            "schedule-outbox-URL",
            &href(&format!("/{d}/calendars/outbox/")),
        ),
        (CS, "notification-URL", true) => el(
            CS,
            "notification-URL",
            &href(&format!("/{d}/calendars/notification/")),
        ),
        (CARDDAV, "addressbook-home-set", false) => {
            el(CARDDAV, "addressbook-home-set", &href(&c.card_home_url))
        }
        _ => return None,
    })
}

pub fn principal_defaults(is_cal: bool) -> Vec<PropName> {
    let mut v = names(&[
        (DAV, "current-user-principal"),
        (DAV, "principal-URL"),
        (DAV, "resourcetype"),
        (DAV, "displayname"),
    ]);
    if is_cal {
        v.extend(names(&[
            (CALDAV, "calendar-home-set"),
            (CALDAV, "calendar-user-address-set"),
            (CALDAV, "schedule-inbox-URL"),
            (CALDAV, "schedule-outbox-URL"),
            (CS, "notification-URL"),
        ]));
    } else {
        v.extend(names(&[(CARDDAV, "addressbook-home-set")]));
    }
    v
}

fn ctag(value: &str) -> String {
    el_text(CS, "getctag", value)
}

/// The calendar home `/{d}/calendars/`.
pub fn cal_home_prop(c: &PropCtx, p: &PropName) -> Option<String> {
    Some(match (p.ns.as_str(), p.name.as_str()) {
        (DAV, "displayname") => el_text(DAV, "displayname", c.display_name),
        (DAV, "resourcetype") => el(DAV, "resourcetype", "<collection/>"),
        (DAV, "current-user-principal") => c.cup(),
        (CALDAV, "supported-calendar-component-set") => el(
            CALDAV,
            "supported-calendar-component-set",
            &comps(&["VEVENT", "VTODO", "VFREEBUSY"]),
        ),
        (CS, "getctag") => ctag(&c.home_token),
        (DAV, "current-user-privilege-set") => privileges(&CollKind::AddressBook),
        _ => return None,
    })
}

/// The address book home `/{d}/carddavhome/`.
pub fn card_home_prop(c: &PropCtx, p: &PropName) -> Option<String> {
    Some(match (p.ns.as_str(), p.name.as_str()) {
        (DAV, "resourcetype") => el(DAV, "resourcetype", "<collection/>"),
        (DAV, "current-user-principal") => c.cup(),
        (CS, "getctag") => ctag(&c.home_token),
        (DAV, "current-user-privilege-set") => privileges(&CollKind::AddressBook),
        _ => return None,
    })
}

pub fn home_defaults() -> Vec<PropName> {
    names(&[
        (DAV, "displayname"),
        (DAV, "resourcetype"),
        (CALDAV, "supported-calendar-component-set"),
        (CS, "getctag"),
    ])
}

fn privileges(kind: &CollKind) -> String {
    let p = |x: &str| format!("<privilege>{x}</privilege>");
    let rfb = "<read-free-busy xmlns=\"urn:ietf:params:xml:ns:caldav\"/>";
    let list: Vec<String> = match kind {
        CollKind::Outbox => vec![
            p("<read/>"),
            p(rfb),
            p("<read-current-user-privilege-set/>"),
            p("<schedule-send xmlns=\"urn:ietf:params:xml:ns:caldav\"/>"),
        ],
        CollKind::Notification => vec![
            p("<read/>"),
            p("<read-current-user-privilege-set/>"),
            p("<unbind/>"),
        ],
        _ => {
            let mut v: Vec<String> = [
                "<read/>",
                rfb,
                "<read-current-user-privilege-set/>",
                "<write/>",
                "<write-properties/>",
                "<write-content/>",
                "<bind/>",
                "<unbind/>",
            ]
            .iter()
            .map(|x| p(x))
            .collect();
            if *kind == CollKind::Inbox {
                v.push(p(
                    "<schedule-deliver xmlns=\"urn:ietf:params:xml:ns:caldav\"/>",
                ));
            }
            v
        }
    };
    el(DAV, "current-user-privilege-set", &list.concat())
}

fn report_set(reports: &[(&str, &str)]) -> String {
    let inner: String = reports
        .iter()
        .map(|(ns, n)| {
            format!(
                "<supported-report><report>{}</report></supported-report>",
                empty(ns, n)
            )
        })
        .collect();
    el(DAV, "supported-report-set", &inner)
}

/// A calendar, special calendar collection or the address book.
pub fn collection_prop(c: &PropCtx, col: &Collection, p: &PropName) -> Option<String> {
    let kind = &col.kind;
    let is_cal = matches!(kind, CollKind::Calendar { .. });
    let syncable = is_cal || *kind == CollKind::AddressBook;
    Some(match (p.ns.as_str(), p.name.as_str()) {
        (DAV, "displayname") => el_text(DAV, "displayname", col.display_name.as_deref()?),
        (DAV, "resourcetype") => el(
            DAV,
            "resourcetype",
            match kind {
                CollKind::Calendar { .. } => {
                    "<collection/><calendar xmlns=\"urn:ietf:params:xml:ns:caldav\"/>"
                }
                CollKind::Inbox => {
                    "<collection/><schedule-inbox xmlns=\"urn:ietf:params:xml:ns:caldav\"/>"
                }
                CollKind::Outbox => {
                    "<collection/><schedule-outbox xmlns=\"urn:ietf:params:xml:ns:caldav\"/>"
                }
                CollKind::Notification => {
                    "<collection/><notification xmlns=\"http://calendarserver.org/ns/\"/>"
                }
                CollKind::AddressBook => {
                    "<collection/><addressbook xmlns=\"urn:ietf:params:xml:ns:carddav\"/>"
                }
            },
        ),
        (CALDAV, "supported-calendar-component-set") => el(
            CALDAV,
            "supported-calendar-component-set",
            &match kind {
                CollKind::Calendar { comp } => comps(&[comp.as_str()]),
                CollKind::Inbox => comps(&["VEVENT"]),
                CollKind::Outbox => comps(&["VEVENT", "VTODO"]),
                _ => return None,
            },
        ),
        (CS, "getctag") if syncable || *kind == CollKind::Inbox => {
            ctag(&col.ctag(c.sw.ctag_style))
        }
        (DAV, "sync-token") if syncable => el_text(DAV, "sync-token", &col.sync_token()),
        (DAV, "getetag") if syncable => el_text(DAV, "getetag", &col.etag()),
        (ICAL, "calendar-color") if is_cal => el_text(ICAL, "calendar-color", col.color.as_deref()?),
        (ICAL, "calendar-order") if is_cal => {
            el_text(ICAL, "calendar-order", &col.order?.to_string())
        }
        (DAV, "current-user-privilege-set") => privileges(kind),
        (DAV, "current-user-principal") => c.cup(),
        (DAV, "owner") => el(DAV, "owner", &href(&c.principal_path())),
        (DAV, "supported-report-set") if is_cal => report_set(&[
            (CALDAV, "calendar-query"),
            (CALDAV, "calendar-multiget"),
            (DAV, "sync-collection"),
            (DAV, "expand-property"),
        ]),
        (DAV, "supported-report-set") if *kind == CollKind::AddressBook => report_set(&[
            (CARDDAV, "addressbook-query"),
            (CARDDAV, "addressbook-multiget"),
            (DAV, "sync-collection"),
        ]),
        (CARDDAV, "supported-address-data") if *kind == CollKind::AddressBook => el(
            CARDDAV,
            "supported-address-data",
            "<address-data-type content-type='text/vcard' version='3.0' xmlns='urn:ietf:params:xml:ns:carddav'/>",
        ),
        _ => return None,
    })
}

pub fn collection_defaults() -> Vec<PropName> {
    names(&[
        (DAV, "displayname"),
        (DAV, "resourcetype"),
        (CALDAV, "supported-calendar-component-set"),
        (CS, "getctag"),
        (DAV, "sync-token"),
        (ICAL, "calendar-color"),
        (ICAL, "calendar-order"),
        (DAV, "current-user-privilege-set"),
    ])
}
