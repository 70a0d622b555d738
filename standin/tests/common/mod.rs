//! Helpers for driving the stand-in over real HTTP on loopback.
#![allow(dead_code)]

use icloud_standin::{Standin, StandinConfig, DEMO_APPLE_ID, DEMO_APP_PASSWORD};
use reqwest::{Method, Response};

pub const PROPFIND_CUP: &str = r#"<?xml version="1.0" encoding="UTF-8"?><d:propfind xmlns:d="DAV:"><d:prop><d:current-user-principal/></d:prop></d:propfind>"#;

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Wait until `check` holds, looking every few milliseconds; panics naming `what` after
/// `within`.
pub async fn wait_until<F, Fut>(within: std::time::Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = std::time::Instant::now();
    while !check().await {
        assert!(
            started.elapsed() < within,
            "timed out after {within:?} waiting until {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

/// Whether a TCP connection to the host and port of `url` (`http://host:port/...`) is
/// refused.
pub async fn refuses(url: &str) -> bool {
    let rest = url.strip_prefix("http://").unwrap_or(url);
    let addr = rest.split('/').next().unwrap_or(rest);
    tokio::net::TcpStream::connect(addr).await.is_err()
}

pub async fn start_demo() -> Standin {
    Standin::start(StandinConfig::demo()).await.unwrap()
}

pub struct Dav {
    pub client: reqwest::Client,
    pub user: String,
    pub pass: String,
}

impl Dav {
    pub fn alice() -> Dav {
        Dav::new(DEMO_APPLE_ID, DEMO_APP_PASSWORD)
    }

    pub fn new(user: &str, pass: &str) -> Dav {
        Dav {
            client: client(),
            user: user.into(),
            pass: pass.into(),
        }
    }

    pub fn req(&self, method: &str, url: &str) -> reqwest::RequestBuilder {
        self.client
            .request(Method::from_bytes(method.as_bytes()).unwrap(), url)
            .basic_auth(&self.user, Some(&self.pass))
    }

    pub async fn propfind(&self, url: &str, depth: &str, body: &str) -> Response {
        self.req("PROPFIND", url)
            .header("Depth", depth)
            .header("Content-Type", "application/xml; charset=utf-8")
            .body(body.to_string())
            .send()
            .await
            .unwrap()
    }

    pub async fn report(&self, url: &str, depth: &str, body: &str) -> Response {
        self.req("REPORT", url)
            .header("Depth", depth)
            .header("Content-Type", "application/xml; charset=utf-8")
            .body(body.to_string())
            .send()
            .await
            .unwrap()
    }

    pub async fn put(&self, url: &str, ct: &str, body: &str) -> Response {
        self.req("PUT", url)
            .header("Content-Type", ct)
            .body(body.to_string())
            .send()
            .await
            .unwrap()
    }
}

/// Join a base like `http://127.0.0.1:1/` with a path like `/123/principal/`.
pub fn url(base: &str, path: &str) -> String {
    format!("{}{}", base.trim_end_matches('/'), path)
}

/// Text between `<tag ...>` and `</tag>` for the first occurrence.
pub fn between<'a>(s: &'a str, open_prefix: &str, close: &str) -> Option<&'a str> {
    let i = s.find(open_prefix)?;
    let rest = &s[i..];
    let gt = rest.find('>')?;
    let rest = &rest[gt + 1..];
    let j = rest.find(close)?;
    Some(&rest[..j])
}

/// All `<href>` values inside `<response>` elements, in order (the response's own href).
pub fn response_hrefs(xml: &str) -> Vec<String> {
    xml.split("<response xmlns=\"DAV:\">")
        .skip(1)
        .filter_map(|r| between(r, "<href", "</href>").map(|s| s.to_string()))
        .collect()
}

pub const EVENT: &str = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//test//EN\r\nBEGIN:VEVENT\r\nUID:put-1\r\nDTSTAMP:20260101T000000Z\r\nDTSTART:20260201T100000Z\r\nDTEND:20260201T110000Z\r\nSUMMARY:Put test\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n";

pub fn event(uid: &str, start: &str, end: Option<&str>) -> String {
    let end = end.map(|e| format!("DTEND:{e}\r\n")).unwrap_or_default();
    format!("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//test//EN\r\nBEGIN:VEVENT\r\nUID:{uid}\r\nDTSTAMP:20260101T000000Z\r\nDTSTART:{start}\r\n{end}SUMMARY:{uid}\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n")
}
