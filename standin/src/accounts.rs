//! Accounts: credentials, app-specific passwords, flags and partition, plus their data.

use crate::config::{AccountSpec, AccountState, Service, Services};
use crate::mailstore::MailStore;
use crate::store::AccountData;
use rand::Rng;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Lock helpers that never panic on poisoning.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
pub fn read<T>(m: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(PoisonError::into_inner)
}
pub fn write<T>(m: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    m.write().unwrap_or_else(PoisonError::into_inner)
}

/// An app-specific password.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Asp {
    pub value: String,
    pub label: String,
    pub active: bool,
}

/// Mutable credential state of an account.
#[derive(Clone, Debug)]
pub struct AuthState {
    pub primary_password: String,
    pub asps: Vec<Asp>,
    pub two_factor: bool,
    pub services: Services,
    pub adp_enabled: bool,
    pub state: AccountState,
    pub partition: u32,
    /// Partitions the account lived on before (`move_partition`).
    pub former_partitions: Vec<u32>,
}

/// One account.
#[derive(Debug)]
pub struct Account {
    pub apple_id: String,
    pub dsid: String,
    pub display_name: String,
    pub auth: Mutex<AuthState>,
    pub data: RwLock<AccountData>,
    /// Accepted SMTP user names (C2 `smtp_login`).
    pub smtp_login: Vec<String>,
    /// Messages accepted by the SMTP role, oldest first (at most [`OUTBOX_CAP`]).
    pub outbox: Mutex<std::collections::VecDeque<crate::smtp::SentMessage>>,
    /// Accepted IMAP user names (C2 `imap_login`).
    pub imap_login: Vec<String>,
    /// The account's mailboxes (IMAP role).
    pub mail: Mutex<MailStore>,
}

/// Most messages kept in an account's outbox (oldest dropped first).
pub const OUTBOX_CAP: usize = 1000;

/// Maximum active app-specific passwords.
pub const MAX_ACTIVE_ASPS: usize = 25;

impl Account {
    pub fn from_spec(spec: &AccountSpec) -> Account {
        let mut asps: Vec<Asp> = spec
            .app_passwords
            .iter()
            .map(|v| Asp {
                value: v.clone(),
                label: "bridge".into(),
                active: true,
            })
            .collect();
        asps.extend(spec.revoked_app_passwords.iter().map(|v| Asp {
            value: v.clone(),
            label: "old".into(),
            active: false,
        }));
        let mut data = AccountData::new(&spec.calendars);
        data.seed(&spec.objects);
        Account {
            apple_id: spec.apple_id.clone(),
            dsid: spec.dsid.clone(),
            display_name: spec.display_name.clone(),
            auth: Mutex::new(AuthState {
                primary_password: spec.primary_password.clone(),
                asps,
                two_factor: spec.two_factor,
                services: spec.services,
                adp_enabled: spec.adp_enabled,
                state: spec.account_state,
                partition: spec.partition,
                former_partitions: Vec::new(),
            }),
            data: RwLock::new(data),
            smtp_login: spec.smtp_login.clone(),
            outbox: Mutex::new(std::collections::VecDeque::new()),
            imap_login: spec.imap_login.clone(),
            mail: Mutex::new(MailStore::new()),
        }
    }

    /// Does the account own `address` (its Apple ID or an SMTP login name)?
    pub fn owns_address(&self, address: &str) -> bool {
        self.apple_id.eq_ignore_ascii_case(address)
            || self
                .smtp_login
                .iter()
                .any(|l| l.eq_ignore_ascii_case(address))
    }

    pub fn partition(&self) -> u32 {
        lock(&self.auth).partition
    }
}

/// Why authentication failed; never visible on the wire (the 401 is identical).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Denial {
    /// Any credential problem: 401.
    Credentials,
    /// `account_state != ok`: answered per `account_state_response`.
    AccountState,
}

impl AuthState {
    /// Steps 3–4 of C3 for `service`.
    pub fn check(&self, service: Service, password: &str) -> Result<(), Denial> {
        if !self.two_factor || !self.services.get(service) {
            return Err(Denial::Credentials);
        }
        if self.adp_enabled && service != Service::Mail {
            return Err(Denial::Credentials);
        }
        if self.state != AccountState::Ok {
            return Err(Denial::AccountState);
        }
        let ok = self
            .asps
            .iter()
            .any(|a| a.active && constant_eq(a.value.as_bytes(), password.as_bytes()));
        if ok {
            Ok(())
        } else {
            Err(Denial::Credentials)
        }
    }

    pub fn active_count(&self) -> usize {
        self.asps.iter().filter(|a| a.active).count()
    }

    /// Generate a new active ASP (25-active limit, 2FA required).
    pub fn generate(&mut self, label: &str) -> Result<String, String> {
        if !self.two_factor {
            return Err("two-factor authentication is required for app-specific passwords".into());
        }
        if self.active_count() >= MAX_ACTIVE_ASPS {
            return Err(format!(
                "at most {MAX_ACTIVE_ASPS} active app-specific passwords"
            ));
        }
        let value = random_asp();
        self.asps.push(Asp {
            value: value.clone(),
            label: label.to_string(),
            active: true,
        });
        Ok(value)
    }
}

fn constant_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `xxxx-xxxx-xxxx-xxxx` from lowercase letters.
pub fn random_asp() -> String {
    let mut rng = rand::thread_rng();
    let groups: Vec<String> = (0..4)
        .map(|_| {
            (0..4)
                .map(|_| char::from(b'a' + rng.gen_range(0..26u8)))
                .collect()
        })
        .collect();
    groups.join("-")
}

/// All accounts.
#[derive(Debug, Default)]
pub struct Accounts {
    list: RwLock<Vec<Arc<Account>>>,
}

impl Accounts {
    pub fn new(specs: &[AccountSpec]) -> Accounts {
        Accounts {
            list: RwLock::new(
                specs
                    .iter()
                    .map(|s| Arc::new(Account::from_spec(s)))
                    .collect(),
            ),
        }
    }

    pub fn add(&self, spec: &AccountSpec) {
        write(&self.list).push(Arc::new(Account::from_spec(spec)));
    }

    pub fn by_apple_id(&self, id: &str) -> Option<Arc<Account>> {
        read(&self.list)
            .iter()
            .find(|a| a.apple_id.eq_ignore_ascii_case(id))
            .cloned()
    }

    /// The account whose `smtp_login` names include `user` (case-insensitive).
    pub fn by_smtp_login(&self, user: &str) -> Option<Arc<Account>> {
        read(&self.list)
            .iter()
            .find(|a| a.smtp_login.iter().any(|l| l.eq_ignore_ascii_case(user)))
            .cloned()
    }

    /// The account whose `imap_login` list holds `user` (case-insensitively).
    pub fn by_imap_login(&self, user: &str) -> Option<Arc<Account>> {
        read(&self.list)
            .iter()
            .find(|a| a.imap_login.iter().any(|l| l.eq_ignore_ascii_case(user)))
            .cloned()
    }

    pub fn partitions(&self) -> Vec<u32> {
        let mut p: Vec<u32> = read(&self.list).iter().map(|a| a.partition()).collect();
        p.sort_unstable();
        p.dedup();
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asp_rules() {
        let spec = crate::config::StandinConfig::empty().accounts.remove(0);
        let acc = Account::from_spec(&spec);
        let mut a = lock(&acc.auth);
        assert!(a
            .check(Service::Calendar, crate::config::DEMO_APP_PASSWORD)
            .is_ok());
        assert!(a.check(Service::Calendar, &spec.primary_password).is_err());
        assert!(a
            .check(Service::Calendar, crate::config::DEMO_REVOKED_APP_PASSWORD)
            .is_err());
        for _ in 0..24 {
            a.generate("x").unwrap();
        }
        assert!(a.generate("26th").is_err());
        let v = random_asp();
        assert!(v.len() == 19 && v.split('-').all(|g| g.len() == 4));
    }
}
