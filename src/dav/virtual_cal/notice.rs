//! The notify calendar (`[notify] calendar = true`): one all-day event for today while the
//! account needs attention, none while all is well. Made from the account's state alone, so
//! it answers exactly while iCloud refuses.

use crate::accounts::Account;
use crate::dav::virtual_cal::{ics, Calendar};
use crate::upstream::service::ServiceState;

/// The event's title for a state that needs attention; `None` when all is well (or not yet
/// known).
pub fn summary(state: ServiceState) -> Option<&'static str> {
    match state {
        ServiceState::AuthRejected => Some("iCloud refused the bridge's app-specific password"),
        ServiceState::Unconfigured => Some("icloud-bridge has no app-specific password"),
        ServiceState::Unreachable => Some("icloud-bridge cannot reach iCloud"),
        ServiceState::RateLimited => Some("iCloud is rate limiting icloud-bridge"),
        ServiceState::Ok | ServiceState::Unknown => None,
    }
}

/// Whether `state` is told yet: a refused password at once; an unreachable or rate-limiting
/// iCloud only once it lasted `notify.min_secs` (when the notifier told it), so that a
/// night-time blip puts nothing in anyone's calendar.
fn told(account: &Account, state: ServiceState) -> bool {
    match state {
        ServiceState::Unreachable | ServiceState::RateLimited => account.notified() == Some(state),
        _ => true,
    }
}

/// The calendar now: `status_url` is the fix URL (the status page).
pub fn calendar(account: &Account, status_url: &str) -> Calendar {
    let (state, reason) = account.overall();
    let objects = match summary(state).filter(|_| told(account, state)) {
        Some(title) => {
            let sentence = reason.unwrap_or_else(|| title.to_string());
            vec![ics::attention_event(
                account.name(),
                &today(),
                title,
                &sentence,
                status_url,
            )]
        }
        None => Vec::new(),
    };
    Calendar::new(objects)
}

/// Today's date (UTC) as `YYYYMMDD`.
fn today() -> String {
    let d = time::OffsetDateTime::now_utc().date();
    format!("{:04}{:02}{:02}", d.year(), u8::from(d.month()), d.day())
}
