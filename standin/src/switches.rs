//! Every quirk and fault switch of the stand-in (spec C3–C8), with the spec's defaults.

/// How the 401 challenge is written (C3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WwwAuthStyle {
    /// `WWW-Authenticate: Basic realm="MMCalDav"` then `X-MobileMe-AuthToken realm="MMCalDav"`.
    TwoHeaders,
    /// One header: `X-MobileMe-AuthToken realm="MMCalDav", Basic realm="MMCalDav"`.
    Combined,
}

/// How `/.well-known/caldav|carddav` answers a PROPFIND (C4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WellKnownMode {
    InPlace,
    Redirect301,
    Redirect302,
}

/// The `DAV:` header sent on OPTIONS (C4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OptionsDavHeader {
    Full,
    Minimal,
    Absent,
}

/// ctag style (C6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CtagStyle {
    /// Opaque base64 starting `HwoQ`.
    Base64,
    /// `FT=-@RU=<uuid>@S=<counter>`.
    FtRu,
}

/// Which VEVENTs count as having an end (C6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DtendRule {
    DtendOrDuration,
    DtendOnly,
}

/// How an invalid sync-token is answered (C6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InvalidTokenStyle {
    Bare403,
    Rfc6578,
}

/// How a contact photo is written into served vCards (C7).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PhotoStyle {
    /// `PHOTO;VALUE=uri;…:http://127.0.0.1:<part-card>/<dsid>/wcs/<hash>`
    UriWcs,
    /// `PHOTO;VALUE=uri;TYPE=JPEG:http://127.0.0.1:<part-card>/contacts/<dsid>/ck/card/<hash>`
    UriGateway,
    /// `PHOTO;ENCODING=b;TYPE=JPEG:<base64>`
    Inline,
}

/// What the old partition host does after `move_partition` (C8).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MovedResponse {
    /// `301` with `Location` on the new partition host (default).
    Redirect301,
    /// The identical 401.
    Unauthorized,
    /// Close the connection without an answer.
    Refuse,
}

/// All switches. Defaults follow the spec exactly; see [`Switches::names`] for the string names.
#[derive(Clone, Debug, PartialEq)]
pub struct Switches {
    // --- C1 / C3 -------------------------------------------------------------------------
    /// `front_serves_account_paths` (true).
    pub front_serves_account_paths: bool,
    /// `www_authenticate_style` (two_headers).
    pub www_authenticate_style: WwwAuthStyle,
    /// `partition_mismatch_status` (401; alternative 404).
    pub partition_mismatch_status: u16,
    /// `empty_400_on_root` (true): GET `/` gets an empty 400 instead of the HTML page.
    pub empty_400_on_root: bool,
    /// `account_state_response` (401; 403 or 503) for locked/needs_verification/terms_pending.
    pub account_state_response: u16,
    // --- C4 / C5 -------------------------------------------------------------------------
    /// `well_known_mode` (in_place).
    pub well_known_mode: WellKnownMode,
    /// `unknown_path_answers_principal` (true).
    pub unknown_path_answers_principal: bool,
    /// `options_dav_header` (full).
    pub options_dav_header: OptionsDavHeader,
    /// `principal_href_bug` (false): the principal answers with href `/principal/`.
    pub principal_href_bug: bool,
    /// `xml_whitespace_noise` (true).
    pub xml_whitespace_noise: bool,
    // --- C6 ------------------------------------------------------------------------------
    /// `etag_housekeeping_bump` (0.0): probability per authenticated request on a collection
    /// or object that one object's ETag changes without a content change.
    pub etag_housekeeping_bump: f64,
    /// `ctag_style` (base64).
    pub ctag_style: CtagStyle,
    /// `get_returns_etag_header` (true).
    pub get_returns_etag_header: bool,
    /// `put_returns_etag_header` (false).
    pub put_returns_etag_header: bool,
    /// `require_dtend` (true): VEVENT without an end gets 404 with an empty body.
    pub require_dtend: bool,
    /// `dtend_rule` (dtend_or_duration).
    pub dtend_rule: DtendRule,
    /// `single_component_type` (true): a component the calendar does not hold gets 403.
    pub single_component_type: bool,
    /// `vjournal_500` (true).
    pub vjournal_500: bool,
    /// `uid_in_other_calendar` (false): the same UID in another calendar gets 403.
    pub uid_in_other_calendar: bool,
    /// `sticky_deleted_calendar` (false): re-creating a deleted calendar id within
    /// `sticky_window_secs` brings its old events back.
    pub sticky_deleted_calendar: bool,
    /// `sticky_window_secs` (60).
    pub sticky_window_secs: u64,
    /// `min_calendar_id_len` (0).
    pub min_calendar_id_len: usize,
    /// `reject_non_ascii_ids` (true): ids with spaces or non-ASCII get 403.
    pub reject_non_ascii_ids: bool,
    /// `mkcol_creates_calendar` (false): MKCOL otherwise gets 403.
    pub mkcol_creates_calendar: bool,
    /// `report_includes_collection` (true).
    pub report_includes_collection: bool,
    /// `cdata_calendar_data` (true): calendar-data (and address-data) in CDATA with LF endings.
    pub cdata_calendar_data: bool,
    /// `require_vevent_comp_filter` (false): calendar-query without an inner comp-filter gets 500.
    pub require_vevent_comp_filter: bool,
    /// `vtodo_query_500` (false).
    pub vtodo_query_500: bool,
    /// `reject_leading_whitespace_body` (true): an XML body starting with whitespace gets 400.
    pub reject_leading_whitespace_body: bool,
    /// `invalid_token_style` (bare_403).
    pub invalid_token_style: InvalidTokenStyle,
    /// `eventual_consistency_ms` (0).
    pub eventual_consistency_ms: u64,
    /// `duplicate_dtstamp` (false).
    pub duplicate_dtstamp: bool,
    /// `apple_x_props` (true): objects PUT over DAV get X-APPLE-CREATOR-IDENTITY etc.
    pub apple_x_props: bool,
    // --- C7 ------------------------------------------------------------------------------
    /// `vcard_content_type` ("text/plain").
    pub vcard_content_type: String,
    /// `card_getcontenttype` (false): report getcontenttype on cards.
    pub card_getcontenttype: bool,
    /// `require_n` (true; also settable as `require_N`).
    pub require_n: bool,
    /// `random_put_403_rate` (0.0).
    pub random_put_403_rate: f64,
    /// `allof_as_anyof` (true).
    pub allof_as_anyof: bool,
    /// `ignore_param_filter` (true).
    pub ignore_param_filter: bool,
    /// `case_sensitive_prop_names` (true).
    pub case_sensitive_prop_names: bool,
    /// `ignore_limit` (true).
    pub ignore_limit: bool,
    /// `ignore_partial_props` (true).
    pub ignore_partial_props: bool,
    /// `photo_style` (uri_wcs).
    pub photo_style: PhotoStyle,
    // --- C8 ------------------------------------------------------------------------------
    /// `rate.limit_after` (none): after N requests within `rate.window_ms`, answer `rate.status`.
    pub rate_limit_after: Option<u64>,
    /// `rate.window_ms` (60000).
    pub rate_window_ms: u64,
    /// `rate.retry_after` (none): seconds for a `Retry-After` header.
    pub rate_retry_after: Option<u64>,
    /// `rate.status` (503; or 429).
    pub rate_status: u16,
    /// `flaky.5xx` (0.0): probability of a random 500/502/503.
    pub flaky_5xx: f64,
    /// `flaky.5xx_status` (none = a random one of 500/502/503): the status `flaky.5xx` sends.
    pub flaky_5xx_status: Option<u64>,
    /// `flaky.garbage` (0.0): probability of answering 207 with truncated, unparseable XML.
    pub flaky_garbage: f64,
    /// `flaky.timeout` (0.0): probability of hanging (or answering after `flaky.timeout_delay_ms`).
    pub flaky_timeout: f64,
    /// `flaky.timeout_delay_ms` (none = hang until the client gives up).
    pub flaky_timeout_delay_ms: Option<u64>,
    /// `flaky.reset` (0.0): probability of closing the connection mid-response.
    pub flaky_reset: f64,
    /// `partition.moved_response` (301; or 401, refuse).
    pub partition_moved_response: MovedResponse,
    /// `partition.unreachable` (false): partition listeners refuse connections.
    pub partition_unreachable: bool,
    /// `latency_ms` (0): added to every response.
    pub latency_ms: u64,
    /// `hostile.redirect_path` (none) with `hostile.redirect_location`: a request whose path
    /// contains this text gets `302 Found` to that location, whatever it is (a lying or
    /// compromised upstream, for the bridge's redirect rules).
    pub hostile_redirect_path: Option<String>,
    /// `hostile.redirect_location` (none): see `hostile.redirect_path`.
    pub hostile_redirect_location: Option<String>,
    /// `hostile.unauthorized_path` (none): a request whose path contains this text gets the
    /// identical 401 although the password is good (Apple refusing one photo or attachment).
    pub hostile_unauthorized_path: Option<String>,
    /// `hostile.bomb_path` (none) with `hostile.bomb_attributes`: a request whose path
    /// contains this text gets a 207 whose first `response` element carries that many
    /// attributes (an attribute bomb from a lying upstream).
    pub hostile_bomb_path: Option<String>,
    /// `hostile.bomb_attributes` (100000): see `hostile.bomb_path`.
    pub hostile_bomb_attributes: u64,
    /// `log.enabled` (true): record requests for `Control::request_log`.
    pub log_enabled: bool,
    /// `hold.path` (none): a request whose path contains this text is held unanswered (after
    /// the partition check, before faults and routing) until the switch no longer matches
    /// it or the stand-in stops; `Control::held` counts the requests held now. Tests use it
    /// to keep a request in flight for exactly as long as they need.
    pub hold_path: Option<String>,
    // --- C10 (SMTP) ----------------------------------------------------------------------
    /// `smtp.auth_fail_reply` (`535 5.7.8 Authentication credentials invalid`): the reply to
    /// a refused AUTH.
    pub smtp_auth_fail_reply: String,
    /// `smtp.transient` (none; or 454, 421): answer every AUTH with this temporary failure
    /// (421 also closes the connection).
    pub smtp_transient: Option<u16>,
    /// `smtp.drop` (false): close the connection on EHLO/HELO without answering.
    pub smtp_drop: bool,
    /// `smtp.foreign_sender` (553; or 550, none): the reply to `MAIL FROM` with an address
    /// the account does not own; none accepts any sender.
    pub smtp_foreign_sender: Option<u16>,
    // --- C9 ------------------------------------------------------------------------------
    /// The IMAP role's switches (`imap.*`).
    pub imap: crate::imap_switches::ImapSwitches,
}

impl Default for Switches {
    fn default() -> Self {
        Switches {
            front_serves_account_paths: true,
            www_authenticate_style: WwwAuthStyle::TwoHeaders,
            partition_mismatch_status: 401,
            empty_400_on_root: true,
            account_state_response: 401,
            well_known_mode: WellKnownMode::InPlace,
            unknown_path_answers_principal: true,
            options_dav_header: OptionsDavHeader::Full,
            principal_href_bug: false,
            xml_whitespace_noise: true,
            etag_housekeeping_bump: 0.0,
            ctag_style: CtagStyle::Base64,
            get_returns_etag_header: true,
            put_returns_etag_header: false,
            require_dtend: true,
            dtend_rule: DtendRule::DtendOrDuration,
            single_component_type: true,
            vjournal_500: true,
            uid_in_other_calendar: false,
            sticky_deleted_calendar: false,
            sticky_window_secs: 60,
            min_calendar_id_len: 0,
            reject_non_ascii_ids: true,
            mkcol_creates_calendar: false,
            report_includes_collection: true,
            cdata_calendar_data: true,
            require_vevent_comp_filter: false,
            vtodo_query_500: false,
            reject_leading_whitespace_body: true,
            invalid_token_style: InvalidTokenStyle::Bare403,
            eventual_consistency_ms: 0,
            duplicate_dtstamp: false,
            apple_x_props: true,
            vcard_content_type: "text/plain".to_string(),
            card_getcontenttype: false,
            require_n: true,
            random_put_403_rate: 0.0,
            allof_as_anyof: true,
            ignore_param_filter: true,
            case_sensitive_prop_names: true,
            ignore_limit: true,
            ignore_partial_props: true,
            photo_style: PhotoStyle::UriWcs,
            rate_limit_after: None,
            rate_window_ms: 60_000,
            rate_retry_after: None,
            rate_status: 503,
            flaky_5xx: 0.0,
            flaky_5xx_status: None,
            flaky_garbage: 0.0,
            flaky_timeout: 0.0,
            flaky_timeout_delay_ms: None,
            flaky_reset: 0.0,
            partition_moved_response: MovedResponse::Redirect301,
            partition_unreachable: false,
            latency_ms: 0,
            hostile_redirect_path: None,
            hostile_redirect_location: None,
            hostile_unauthorized_path: None,
            hostile_bomb_path: None,
            hostile_bomb_attributes: 100_000,
            log_enabled: true,
            hold_path: None,
            smtp_auth_fail_reply: "535 5.7.8 Authentication credentials invalid".to_string(),
            smtp_transient: None,
            smtp_drop: false,
            smtp_foreign_sender: Some(553),
            imap: Default::default(),
        }
    }
}
