//! Setting switches by their string names (`Control::set_switch`), e.g. `rate.limit_after`.

use crate::switches::*;
use std::str::FromStr;

fn parse_bool(v: &str) -> Result<bool, String> {
    match v.trim().to_ascii_lowercase().as_str() {
        "true" | "on" | "1" | "yes" => Ok(true),
        "false" | "off" | "0" | "no" => Ok(false),
        other => Err(format!("not a boolean: {other}")),
    }
}

fn parse_num<T: FromStr>(v: &str) -> Result<T, String> {
    v.trim()
        .parse::<T>()
        .map_err(|_| format!("not a number: {v}"))
}

fn parse_prob(v: &str) -> Result<f64, String> {
    let p: f64 = parse_num(v)?;
    if (0.0..=1.0).contains(&p) {
        Ok(p)
    } else {
        Err(format!("probability out of range: {v}"))
    }
}

fn parse_opt(v: &str) -> Result<Option<u64>, String> {
    match v.trim().to_ascii_lowercase().as_str() {
        "none" | "off" | "" => Ok(None),
        _ => parse_num(v).map(Some),
    }
}

/// Free text, or none for "none"/"off"/"".
fn parse_text(v: &str) -> Option<String> {
    match v.trim().to_ascii_lowercase().as_str() {
        "none" | "off" | "" => None,
        _ => Some(v.trim().to_string()),
    }
}

fn parse_status(v: &str, allowed: &[u16]) -> Result<u16, String> {
    let s: u16 = parse_num(v)?;
    if allowed.contains(&s) {
        Ok(s)
    } else {
        Err(format!("status must be one of {allowed:?}"))
    }
}

/// A whole SMTP reply line: a 4xx or 5xx code, then optional text (no line breaks).
fn parse_smtp_reply(v: &str) -> Result<String, String> {
    let b = v.as_bytes();
    let code_ok = b.len() >= 3
        && matches!(b[0], b'4' | b'5')
        && b[1..3].iter().all(u8::is_ascii_digit)
        && (b.len() == 3 || b[3] == b' ');
    if code_ok && !v.contains(['\r', '\n']) {
        Ok(v.to_string())
    } else {
        Err(format!(
            "not an SMTP failure reply (4xx/5xx code, then text): {v:?}"
        ))
    }
}

fn bad(name: &str, v: &str) -> String {
    format!("invalid value for {name}: {v}")
}

impl Switches {
    /// Every accepted switch name (a `quirk.` prefix is also accepted on the quirk names).
    pub fn names() -> &'static [&'static str] {
        &[
            "front_serves_account_paths",
            "www_authenticate_style",
            "partition_mismatch_status",
            "empty_400_on_root",
            "account_state_response",
            "well_known_mode",
            "unknown_path_answers_principal",
            "options_dav_header",
            "principal_href_bug",
            "xml_whitespace_noise",
            "etag_housekeeping_bump",
            "ctag_style",
            "get_returns_etag_header",
            "put_returns_etag_header",
            "require_dtend",
            "dtend_rule",
            "single_component_type",
            "vjournal_500",
            "uid_in_other_calendar",
            "sticky_deleted_calendar",
            "sticky_window_secs",
            "min_calendar_id_len",
            "reject_non_ascii_ids",
            "mkcol_creates_calendar",
            "report_includes_collection",
            "cdata_calendar_data",
            "require_vevent_comp_filter",
            "vtodo_query_500",
            "reject_leading_whitespace_body",
            "invalid_token_style",
            "eventual_consistency_ms",
            "duplicate_dtstamp",
            "apple_x_props",
            "vcard_content_type",
            "card_getcontenttype",
            "require_n",
            "random_put_403_rate",
            "allof_as_anyof",
            "ignore_param_filter",
            "case_sensitive_prop_names",
            "ignore_limit",
            "ignore_partial_props",
            "photo_style",
            "rate.limit_after",
            "rate.window_ms",
            "rate.retry_after",
            "rate.status",
            "flaky.5xx",
            "flaky.5xx_status",
            "flaky.garbage",
            "flaky.timeout",
            "flaky.timeout_delay_ms",
            "flaky.reset",
            "partition.moved_response",
            "partition.unreachable",
            "latency_ms",
            "hostile.redirect_path",
            "hostile.redirect_location",
            "hostile.unauthorized_path",
            "hostile.bomb_path",
            "hostile.bomb_attributes",
            "log.enabled",
            "hold.path",
            "smtp.auth_fail_reply",
            "smtp.transient",
            "smtp.drop",
            "smtp.foreign_sender",
            "imap.greeting_style",
            "imap.capability_trailing_space",
            "imap.fail_text_case",
            "imap.close_after_auth_failure",
            "imap.authenticate_plain_rejected",
            "imap.login_unavailable",
            "imap.drop_on_login",
            "imap.accept_local_part",
            "imap.accept_full_address",
        ]
    }

    /// Set one switch from its string form, e.g. `("rate.limit_after", "0")`.
    pub fn set(&mut self, name: &str, value: &str) -> Result<(), String> {
        let key = name.trim();
        let key = key.strip_prefix("quirk.").unwrap_or(key);
        let v = value.trim();
        let lower = v.to_ascii_lowercase();
        match key {
            "front_serves_account_paths" => self.front_serves_account_paths = parse_bool(v)?,
            "www_authenticate_style" => {
                self.www_authenticate_style = match lower.as_str() {
                    "two_headers" => WwwAuthStyle::TwoHeaders,
                    "combined" => WwwAuthStyle::Combined,
                    _ => return Err(bad(key, v)),
                }
            }
            "partition_mismatch_status" => {
                self.partition_mismatch_status = parse_status(v, &[401, 404])?
            }
            "empty_400_on_root" => self.empty_400_on_root = parse_bool(v)?,
            "account_state_response" => {
                self.account_state_response = parse_status(v, &[401, 403, 503])?
            }
            "well_known_mode" => {
                self.well_known_mode = match lower.as_str() {
                    "in_place" => WellKnownMode::InPlace,
                    "redirect_301" | "301" => WellKnownMode::Redirect301,
                    "redirect_302" | "302" => WellKnownMode::Redirect302,
                    _ => return Err(bad(key, v)),
                }
            }
            "unknown_path_answers_principal" => {
                self.unknown_path_answers_principal = parse_bool(v)?
            }
            "options_dav_header" => {
                self.options_dav_header = match lower.as_str() {
                    "full" => OptionsDavHeader::Full,
                    "minimal" => OptionsDavHeader::Minimal,
                    "absent" => OptionsDavHeader::Absent,
                    _ => return Err(bad(key, v)),
                }
            }
            "principal_href_bug" => self.principal_href_bug = parse_bool(v)?,
            "xml_whitespace_noise" => self.xml_whitespace_noise = parse_bool(v)?,
            "etag_housekeeping_bump" => self.etag_housekeeping_bump = parse_prob(v)?,
            "ctag_style" => {
                self.ctag_style = match lower.as_str() {
                    "base64" => CtagStyle::Base64,
                    "ft_ru" => CtagStyle::FtRu,
                    _ => return Err(bad(key, v)),
                }
            }
            "get_returns_etag_header" => self.get_returns_etag_header = parse_bool(v)?,
            "put_returns_etag_header" => self.put_returns_etag_header = parse_bool(v)?,
            "require_dtend" => self.require_dtend = parse_bool(v)?,
            "dtend_rule" => {
                self.dtend_rule = match lower.as_str() {
                    "dtend_or_duration" => DtendRule::DtendOrDuration,
                    "dtend_only" => DtendRule::DtendOnly,
                    _ => return Err(bad(key, v)),
                }
            }
            "single_component_type" => self.single_component_type = parse_bool(v)?,
            "vjournal_500" => self.vjournal_500 = parse_bool(v)?,
            "uid_in_other_calendar" => self.uid_in_other_calendar = parse_bool(v)?,
            "sticky_deleted_calendar" => self.sticky_deleted_calendar = parse_bool(v)?,
            "sticky_window_secs" => self.sticky_window_secs = parse_num(v)?,
            "min_calendar_id_len" => self.min_calendar_id_len = parse_num(v)?,
            "reject_non_ascii_ids" => self.reject_non_ascii_ids = parse_bool(v)?,
            "mkcol_creates_calendar" => self.mkcol_creates_calendar = parse_bool(v)?,
            "report_includes_collection" => self.report_includes_collection = parse_bool(v)?,
            "cdata_calendar_data" => self.cdata_calendar_data = parse_bool(v)?,
            "require_vevent_comp_filter" => self.require_vevent_comp_filter = parse_bool(v)?,
            "vtodo_query_500" => self.vtodo_query_500 = parse_bool(v)?,
            "reject_leading_whitespace_body" => {
                self.reject_leading_whitespace_body = parse_bool(v)?
            }
            "invalid_token_style" => {
                self.invalid_token_style = match lower.as_str() {
                    "bare_403" => InvalidTokenStyle::Bare403,
                    "rfc6578" => InvalidTokenStyle::Rfc6578,
                    _ => return Err(bad(key, v)),
                }
            }
            "eventual_consistency_ms" => self.eventual_consistency_ms = parse_num(v)?,
            "duplicate_dtstamp" => self.duplicate_dtstamp = parse_bool(v)?,
            "apple_x_props" => self.apple_x_props = parse_bool(v)?,
            "vcard_content_type" => self.vcard_content_type = v.to_string(),
            "card_getcontenttype" => self.card_getcontenttype = parse_bool(v)?,
            "require_n" | "require_N" => self.require_n = parse_bool(v)?,
            "random_put_403_rate" => self.random_put_403_rate = parse_prob(v)?,
            "allof_as_anyof" => self.allof_as_anyof = parse_bool(v)?,
            "ignore_param_filter" => self.ignore_param_filter = parse_bool(v)?,
            "case_sensitive_prop_names" => self.case_sensitive_prop_names = parse_bool(v)?,
            "ignore_limit" => self.ignore_limit = parse_bool(v)?,
            "ignore_partial_props" => self.ignore_partial_props = parse_bool(v)?,
            "photo_style" => {
                self.photo_style = match lower.as_str() {
                    "uri_wcs" => PhotoStyle::UriWcs,
                    "uri_gateway" => PhotoStyle::UriGateway,
                    "inline" => PhotoStyle::Inline,
                    _ => return Err(bad(key, v)),
                }
            }
            "rate.limit_after" | "rate.limit" => self.rate_limit_after = parse_opt(v)?,
            "rate.window_ms" => self.rate_window_ms = parse_num(v)?,
            "rate.retry_after" => self.rate_retry_after = parse_opt(v)?,
            "rate.status" | "rate_status" => self.rate_status = parse_status(v, &[503, 429])?,
            "flaky.5xx" => self.flaky_5xx = parse_prob(v)?,
            "flaky.5xx_status" => self.flaky_5xx_status = parse_opt(v)?,
            "flaky.garbage" => self.flaky_garbage = parse_prob(v)?,
            "flaky.timeout" => self.flaky_timeout = parse_prob(v)?,
            "flaky.timeout_delay_ms" => self.flaky_timeout_delay_ms = parse_opt(v)?,
            "flaky.reset" => self.flaky_reset = parse_prob(v)?,
            "partition.moved_response" => {
                self.partition_moved_response = match lower.as_str() {
                    "301" | "redirect_301" => MovedResponse::Redirect301,
                    "401" => MovedResponse::Unauthorized,
                    "refuse" => MovedResponse::Refuse,
                    _ => return Err(bad(key, v)),
                }
            }
            "partition.unreachable" => self.partition_unreachable = parse_bool(v)?,
            "latency_ms" | "latency.ms" => self.latency_ms = parse_num(v)?,
            "log.enabled" => self.log_enabled = parse_bool(v)?,
            "hold.path" => self.hold_path = parse_text(v),
            "hostile.redirect_path" => self.hostile_redirect_path = parse_text(v),
            "hostile.redirect_location" => self.hostile_redirect_location = parse_text(v),
            "hostile.unauthorized_path" => self.hostile_unauthorized_path = parse_text(v),
            "hostile.bomb_path" => self.hostile_bomb_path = parse_text(v),
            "hostile.bomb_attributes" => self.hostile_bomb_attributes = parse_num(v)?,
            "smtp.auth_fail_reply" => self.smtp_auth_fail_reply = parse_smtp_reply(v)?,
            "smtp.transient" => {
                self.smtp_transient = match lower.as_str() {
                    "none" | "off" | "false" | "0" | "" => None,
                    "true" | "on" | "yes" | "1" => Some(454),
                    _ => Some(parse_status(v, &[454, 421])?),
                }
            }
            "smtp.drop" => self.smtp_drop = parse_bool(v)?,
            "smtp.foreign_sender" => {
                self.smtp_foreign_sender = match lower.as_str() {
                    "none" | "off" | "accept" => None,
                    _ => Some(parse_status(v, &[553, 550])?),
                }
            }
            _ => match self.imap.set(key, v) {
                Some(r) => r?,
                None => return Err(format!("unknown switch: {name}")),
            },
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_name_is_settable_from_a_plausible_value() {
        for name in Switches::names() {
            let mut s = Switches::default();
            let ok = [
                "true",
                "0",
                "none",
                "in_place",
                "two_headers",
                "full",
                "base64",
            ]
            .iter()
            .chain(["dtend_only", "bare_403", "uri_wcs", "301", "503", "401"].iter())
            .chain(["2016", "failed"].iter())
            .any(|v| s.set(name, v).is_ok());
            assert!(ok, "{name} not settable");
        }
    }

    #[test]
    fn parses_values() {
        let mut s = Switches::default();
        s.set("rate.limit_after", "0").unwrap();
        assert_eq!(s.rate_limit_after, Some(0));
        s.set("rate.limit_after", "none").unwrap();
        assert_eq!(s.rate_limit_after, None);
        s.set("quirk.cdata_calendar_data", "false").unwrap();
        assert!(!s.cdata_calendar_data);
        assert!(s.set("flaky.5xx", "2").is_err());
        assert!(s.set("nope", "1").is_err());
        s.set("smtp.auth_fail_reply", "535 5.7.0 nope").unwrap();
        assert_eq!(s.smtp_auth_fail_reply, "535 5.7.0 nope");
        assert!(s.set("smtp.auth_fail_reply", "235 ok").is_err());
        s.set("smtp.transient", "421").unwrap();
        assert_eq!(s.smtp_transient, Some(421));
        s.set("smtp.transient", "off").unwrap();
        assert_eq!(s.smtp_transient, None);
        s.set("smtp.foreign_sender", "accept").unwrap();
        assert_eq!(s.smtp_foreign_sender, None);
    }
}
