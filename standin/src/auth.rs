//! HTTP Basic authentication in the order of spec C3, ending in the one identical 401.

use crate::accounts::{lock, Account, Denial};
use crate::respond::{self, Resp};
use crate::state::{Role, Shared};
use crate::switches::{MovedResponse, Switches};
use base64::Engine;
use http::HeaderMap;
use std::sync::Arc;

/// (user, password) from a Basic `Authorization` header.
pub fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let v = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, rest) = v.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(rest.trim())
        .ok()?;
    let s = String::from_utf8(raw).ok()?;
    let (u, p) = s.split_once(':')?;
    Some((u.to_string(), p.to_string()))
}

/// The known account named by the Basic user name (for `x-apple-user-partition`).
pub fn named_account(shared: &Shared, headers: &HeaderMap) -> Option<Arc<Account>> {
    let (user, _) = basic_credentials(headers)?;
    shared.accounts.by_apple_id(&user)
}

/// The outcome of a failed authentication.
pub enum Refusal {
    Respond(Resp),
    /// Close the connection without answering.
    Close,
}

/// Run C3 steps 1–5 for a request on `role` to `path`.
pub fn authenticate(
    shared: &Shared,
    sw: &Switches,
    role: Role,
    headers: &HeaderMap,
    path: &str,
) -> Result<Arc<Account>, Refusal> {
    let deny = || Refusal::Respond(respond::unauthorized(sw));
    // 1. header present and parseable
    let (user, pass) = basic_credentials(headers).ok_or_else(deny)?;
    // 2. known Apple ID
    let acc = shared.accounts.by_apple_id(&user).ok_or_else(deny)?;
    // 3–4. account flags, then the password must be an active ASP of this account
    let (partition, former) = {
        let a = lock(&acc.auth);
        match a.check(role.service(), &pass) {
            Ok(()) => {}
            Err(Denial::Credentials) => return Err(deny()),
            Err(Denial::AccountState) => {
                return Err(Refusal::Respond(match sw.account_state_response {
                    401 => respond::unauthorized(sw),
                    code => respond::status(code),
                }))
            }
        }
        (a.partition, a.former_partitions.clone())
    };
    // 5. partition host must match (front hosts serve everyone)
    if let Some(p) = role.partition() {
        if p != partition {
            if former.contains(&p) {
                return Err(match sw.partition_moved_response {
                    MovedResponse::Redirect301 => {
                        let new_role = if role.is_cal() {
                            Role::PartCal(partition)
                        } else {
                            Role::PartCard(partition)
                        };
                        match shared.role_base(new_role) {
                            Some(base) => {
                                Refusal::Respond(respond::redirect(301, &format!("{base}{path}")))
                            }
                            None => deny(),
                        }
                    }
                    MovedResponse::Unauthorized => deny(),
                    MovedResponse::Refuse => Refusal::Close,
                });
            }
            return Err(match sw.partition_mismatch_status {
                401 => deny(),
                code => Refusal::Respond(respond::status(code)),
            });
        }
    }
    Ok(acc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_basic() {
        let mut h = HeaderMap::new();
        h.insert(
            http::header::AUTHORIZATION,
            http::HeaderValue::from_static("Basic YTpiOmM="),
        );
        assert_eq!(basic_credentials(&h), Some(("a".into(), "b:c".into())));
        h.insert(
            http::header::AUTHORIZATION,
            http::HeaderValue::from_static("X-MobileMe-AuthToken YTpi"),
        );
        assert_eq!(basic_credentials(&h), None);
    }
}
