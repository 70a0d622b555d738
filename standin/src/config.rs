//! Configuration: accounts (spec C2), their seed collections and objects, and listen options.

use crate::switches::Switches;

/// The demo account's Apple ID.
pub const DEMO_APPLE_ID: &str = "alice@icloud.com";
/// The demo account's one active app-specific password.
pub const DEMO_APP_PASSWORD: &str = "abcd-efgh-ijkl-mnop";
/// A revoked app-specific password of the demo account.
pub const DEMO_REVOKED_APP_PASSWORD: &str = "qrst-uvwx-yzab-cdef";
/// The demo account's primary Apple ID password (always rejected on DAV).
pub const DEMO_PRIMARY_PASSWORD: &str = "Correct-Horse-1";
/// The demo account's dsid.
pub const DEMO_DSID: &str = "1234567890";
/// The demo account's partition (`p42`).
pub const DEMO_PARTITION: u32 = 42;
/// Id of the seeded UUID-named calendar.
pub const DEMO_UUID_CALENDAR: &str = "6E0F4B7A-8C7B-4F7A-9D2E-3B1C5A6F7E80";
/// Id of the seeded 64-hex-named calendar.
pub const DEMO_HEX_CALENDAR: &str =
    "9f2c4e6a8b0d1f3e5a7c9b1d3f5e7a9c0b2d4f6e8a1c3e5f7b9d0a2c4e6f8b1d";

/// The iCloud services an account can switch on or off.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Service {
    Calendar,
    Contacts,
    Mail,
}

/// Per-account service flags (false => 401 on that service, C8 `auth.service_disabled`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Services {
    pub calendar: bool,
    pub contacts: bool,
    pub mail: bool,
}

impl Default for Services {
    fn default() -> Self {
        Services {
            calendar: true,
            contacts: true,
            mail: true,
        }
    }
}

impl Services {
    pub fn get(&self, s: Service) -> bool {
        match s {
            Service::Calendar => self.calendar,
            Service::Contacts => self.contacts,
            Service::Mail => self.mail,
        }
    }

    pub fn set(&mut self, s: Service, on: bool) {
        match s {
            Service::Calendar => self.calendar = on,
            Service::Contacts => self.contacts = on,
            Service::Mail => self.mail = on,
        }
    }
}

/// `account_state` of C2; anything but `Ok` is answered per `account_state_response`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccountState {
    Ok,
    Locked,
    NeedsVerification,
    TermsPending,
}

/// A calendar collection to create for an account.
#[derive(Clone, Debug, PartialEq)]
pub struct CalendarSpec {
    /// The id, the last path segment (`home`, a UUID, …).
    pub id: String,
    pub display_name: String,
    /// `VEVENT` or `VTODO`.
    pub component: String,
    /// `#RRGGBBAA`.
    pub color: Option<String>,
    pub order: Option<u32>,
}

impl CalendarSpec {
    pub fn new(id: &str, display_name: &str, component: &str) -> CalendarSpec {
        CalendarSpec {
            id: id.to_string(),
            display_name: display_name.to_string(),
            component: component.to_string(),
            color: None,
            order: None,
        }
    }
}

/// An object to seed: `collection` is `calendars/<id>` or `carddavhome/card`; `name` is the
/// decoded resource name (`abc@example.com.ics`).
#[derive(Clone, Debug, PartialEq)]
pub struct ObjectSpec {
    pub collection: String,
    pub name: String,
    pub body: String,
}

/// One iCloud account.
#[derive(Clone, Debug, PartialEq)]
pub struct AccountSpec {
    pub apple_id: String,
    pub dsid: String,
    pub partition: u32,
    pub display_name: String,
    pub primary_password: String,
    /// Active app-specific passwords.
    pub app_passwords: Vec<String>,
    /// Revoked app-specific passwords (always 401).
    pub revoked_app_passwords: Vec<String>,
    pub two_factor: bool,
    pub services: Services,
    pub adp_enabled: bool,
    pub account_state: AccountState,
    /// Accepted IMAP user names (for the later IMAP role).
    pub imap_login: Vec<String>,
    /// Accepted SMTP user names (the SMTP role; the Apple ID by default).
    pub smtp_login: Vec<String>,
    /// Calendars besides the special inbox/outbox/notification, which always exist.
    pub calendars: Vec<CalendarSpec>,
    /// Seeded objects.
    pub objects: Vec<ObjectSpec>,
}

impl AccountSpec {
    /// An account with the standard five calendars (C2), an empty address book, 2FA on, all
    /// services on and no app-specific passwords.
    pub fn new(apple_id: &str, dsid: &str, partition: u32) -> AccountSpec {
        let local = apple_id.split('@').next().unwrap_or(apple_id).to_string();
        AccountSpec {
            apple_id: apple_id.to_string(),
            dsid: dsid.to_string(),
            partition,
            display_name: local.clone(),
            primary_password: "Primary-Password-1".to_string(),
            app_passwords: Vec::new(),
            revoked_app_passwords: Vec::new(),
            two_factor: true,
            services: Services::default(),
            adp_enabled: false,
            account_state: AccountState::Ok,
            imap_login: vec![local, apple_id.to_string()],
            smtp_login: vec![apple_id.to_string()],
            calendars: standard_calendars(),
            objects: Vec::new(),
        }
    }
}

/// `home`, `work`, a UUID-named, a 64-hex-named and `tasks` (VTODO, "Reminders").
pub fn standard_calendars() -> Vec<CalendarSpec> {
    let mut home = CalendarSpec::new("home", "Home", "VEVENT");
    home.color = Some("#1E4C63FF".into());
    home.order = Some(1);
    let mut work = CalendarSpec::new("work", "Work", "VEVENT");
    work.color = Some("#FF9500FF".into());
    work.order = Some(2);
    let mut fam = CalendarSpec::new(DEMO_UUID_CALENDAR, "Family", "VEVENT");
    fam.color = Some("#34AADCFF".into());
    fam.order = Some(3);
    let mut hol = CalendarSpec::new(DEMO_HEX_CALENDAR, "Shared Holidays", "VEVENT");
    hol.color = Some("#CC73E1FF".into());
    hol.order = Some(4);
    let mut tasks = CalendarSpec::new("tasks", "Reminders", "VTODO");
    tasks.color = Some("#63DA38FF".into());
    tasks.order = Some(5);
    vec![home, work, fam, hol, tasks]
}

/// Fixed ports for the front and mail roles (0 = ephemeral). Partition roles are always ephemeral.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ports {
    pub front_cal: u16,
    pub front_card: u16,
    /// The SMTP submission role (STARTTLS).
    pub smtp: u16,
    /// The IMAP role (0: ephemeral).
    pub imap: u16,
}

/// Everything `Standin::start` needs.
#[derive(Clone, Debug)]
pub struct StandinConfig {
    pub accounts: Vec<AccountSpec>,
    pub switches: Switches,
    /// Fixed front ports; default ephemeral.
    pub ports: Ports,
    /// The `AppleHttpServer/<hash>` token; `None` picks 12 random hex digits.
    pub server_hash: Option<String>,
}

impl StandinConfig {
    /// One account (`alice@icloud.com`) with seeded events, tasks and contacts (C2).
    pub fn demo() -> StandinConfig {
        let mut cfg = StandinConfig::empty();
        for acc in &mut cfg.accounts {
            acc.objects = crate::seed::demo_objects();
        }
        cfg
    }

    /// The same account with empty calendars and address book.
    pub fn empty() -> StandinConfig {
        let mut alice = AccountSpec::new(DEMO_APPLE_ID, DEMO_DSID, DEMO_PARTITION);
        alice.display_name = "Alice Example".into();
        alice.primary_password = DEMO_PRIMARY_PASSWORD.into();
        alice.app_passwords = vec![DEMO_APP_PASSWORD.into()];
        alice.revoked_app_passwords = vec![DEMO_REVOKED_APP_PASSWORD.into()];
        StandinConfig {
            accounts: vec![alice],
            switches: Switches::default(),
            ports: Ports::default(),
            server_hash: None,
        }
    }

    /// Builder helper: add another account.
    pub fn with_account(mut self, acc: AccountSpec) -> StandinConfig {
        self.accounts.push(acc);
        self
    }
}
