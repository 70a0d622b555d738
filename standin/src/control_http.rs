//! The control API (C11) over HTTP on its own loopback port, for scripts and tools in other
//! processes (interop tests, screenshots): `POST /switch?name=…&value=…`, `POST /revoke-all`,
//! `POST /generate-asp`, `POST /service?service=caldav&on=false`, `GET /request-log`,
//! `GET /sent-messages` (one envelope line per message), `GET /sent-message?index=N` (raw), …
//! `POST /deliver?mailbox=INBOX` (the body is the raw message), `GET /mailbox?mailbox=INBOX`, …

use crate::body::Body;
use crate::config::Service;
use crate::control::Control;
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use tokio::net::TcpListener;

/// Serve the control API on `addr` (normally `127.0.0.1:0`); returns the bound address. The
/// listener lives until the stand-in stops.
pub async fn serve(control: Control, addr: SocketAddr) -> io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let mut shutdown = control.shared.shutdown.subscribe();
    let tasks = control.clone();
    let task = tokio::spawn(async move {
        loop {
            tokio::select! {
                r = listener.accept() => {
                    let Ok((stream, _)) = r else { continue };
                    let c = control.clone();
                    tokio::spawn(async move {
                        let svc = service_fn(move |req| {
                            let c = c.clone();
                            async move { Ok::<_, std::convert::Infallible>(handle(&c, req).await) }
                        });
                        let _ = http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), svc)
                            .await;
                    });
                }
                r = shutdown.changed() => if r.is_err() || *shutdown.borrow() { return },
            }
        }
    });
    crate::accounts::lock(&tasks.shared.tasks).push(task);
    Ok(local)
}

fn reply(status: StatusCode, text: impl Into<String>) -> Response<Body> {
    let mut text = text.into();
    if !text.ends_with('\n') {
        text.push('\n');
    }
    let mut r = Response::new(Body::from_string(text));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn query(req: &Request<Incoming>) -> HashMap<String, String> {
    let q = req.uri().query().unwrap_or("");
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (dec(k), dec(v))
        })
        .collect()
}

fn dec(s: &str) -> String {
    let s = s.replace('+', " ");
    percent_encoding::percent_decode_str(&s)
        .decode_utf8_lossy()
        .into_owned()
}

fn parse_service(s: &str) -> Option<Service> {
    match s {
        "caldav" => Some(Service::Calendar),
        "carddav" => Some(Service::Contacts),
        "mail" | "imap" | "smtp" => Some(Service::Mail),
        _ => None,
    }
}

fn parse_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "true" | "on" | "yes" => Some(true),
        "0" | "false" | "off" | "no" => Some(false),
        _ => None,
    }
}

async fn handle(c: &Control, req: Request<Incoming>) -> Response<Body> {
    let q = query(&req);
    let apple_id = q
        .get("apple_id")
        .cloned()
        .unwrap_or_else(|| crate::DEMO_APPLE_ID.to_string());
    let get = |k: &str| q.get(k).map(String::as_str).unwrap_or("");
    let post = req.method() == Method::POST;
    let path = req.uri().path().to_string();
    let mailbox = match get("mailbox") {
        "" => "INBOX".to_string(),
        m => m.to_string(),
    };
    match (path.as_str(), post) {
        ("/deliver", true) => {
            let body = match http_body_util::Limited::new(req.into_body(), 64 * 1024 * 1024)
                .collect()
                .await
            {
                Ok(b) => b.to_bytes(),
                Err(_) => return reply(StatusCode::PAYLOAD_TOO_LARGE, "message too large"),
            };
            match c.deliver(&apple_id, &mailbox, &body) {
                Some(uid) => reply(StatusCode::OK, uid.to_string()),
                None => reply(StatusCode::NOT_FOUND, "unknown account or mailbox"),
            }
        }
        // Objects as iCloud keeps them: `POST /object?collection=carddavhome/card&name=x.vcf`
        // stores the body; `GET /object?...` gives the object as iCloud serves it.
        ("/object", true) => {
            let body = match http_body_util::Limited::new(req.into_body(), 16 * 1024 * 1024)
                .collect()
                .await
            {
                Ok(b) => b.to_bytes(),
                Err(_) => return reply(StatusCode::PAYLOAD_TOO_LARGE, "object too large"),
            };
            let text = String::from_utf8_lossy(&body);
            let etag = c.put_object(&apple_id, get("collection"), get("name"), &text);
            reply(StatusCode::OK, etag)
        }
        ("/object", false) => match c.get_object(&apple_id, get("collection"), get("name")) {
            Some((_, body)) => reply(StatusCode::OK, body),
            None => reply(StatusCode::NOT_FOUND, "no such object"),
        },
        ("/mailbox", false) => {
            let lines: Vec<String> = c
                .mailbox_messages(&apple_id, &mailbox)
                .iter()
                .map(|m| {
                    let subject = String::from_utf8_lossy(&m.raw)
                        .lines()
                        .find_map(|l| l.strip_prefix("Subject: ").map(str::to_string))
                        .unwrap_or_default();
                    format!(
                        "{} ({}) {} {}",
                        m.uid,
                        m.flags.join(" "),
                        m.raw.len(),
                        subject
                    )
                })
                .collect();
            reply(StatusCode::OK, lines.join("\n"))
        }
        ("/switch", true) => match c.set_switch(get("name"), get("value")) {
            Ok(()) => reply(StatusCode::OK, "ok"),
            Err(e) => reply(StatusCode::BAD_REQUEST, e),
        },
        ("/revoke-all", true) => {
            c.revoke_all_asps(&apple_id);
            reply(StatusCode::OK, "ok")
        }
        ("/generate-asp", true) => match c.generate_asp(&apple_id, get("label")) {
            Ok(asp) => reply(StatusCode::OK, asp),
            Err(e) => reply(StatusCode::CONFLICT, e),
        },
        ("/service", true) => match (parse_service(get("service")), parse_bool(get("on"))) {
            (Some(s), Some(on)) => {
                c.set_service(&apple_id, s, on);
                reply(StatusCode::OK, "ok")
            }
            _ => reply(
                StatusCode::BAD_REQUEST,
                "need service=caldav|carddav|mail and on=true|false",
            ),
        },
        ("/two-factor", true) => match parse_bool(get("on")) {
            Some(on) => {
                c.set_two_factor(&apple_id, on);
                reply(StatusCode::OK, "ok")
            }
            None => reply(StatusCode::BAD_REQUEST, "need on=true|false"),
        },
        ("/primary-password", true) => {
            c.change_primary_password(&apple_id, get("value"));
            reply(StatusCode::OK, "ok")
        }
        ("/clear-request-log", true) => {
            c.clear_request_log();
            reply(StatusCode::OK, "ok")
        }
        ("/sent-messages", false) => {
            let lines: Vec<String> = c
                .sent_messages(&apple_id)
                .iter()
                .enumerate()
                .map(|(i, m)| {
                    format!(
                        "{i} from=<{}> to={} bytes={}",
                        m.mail_from,
                        m.rcpt_to
                            .iter()
                            .map(|r| format!("<{r}>"))
                            .collect::<Vec<_>>()
                            .join(","),
                        m.data.len()
                    )
                })
                .collect();
            reply(StatusCode::OK, lines.join("\n"))
        }
        ("/sent-message", false) => {
            let msg = get("index")
                .parse::<usize>()
                .ok()
                .and_then(|i| c.sent_messages(&apple_id).into_iter().nth(i));
            match msg {
                Some(m) => {
                    let mut r = Response::new(Body::from_bytes(m.data.into()));
                    r.headers_mut().insert(
                        http::header::CONTENT_TYPE,
                        http::HeaderValue::from_static("message/rfc822"),
                    );
                    r
                }
                None => reply(StatusCode::NOT_FOUND, "no such message (index=0,1,...)"),
            }
        }
        ("/clear-sent-messages", true) => {
            c.clear_sent_messages(&apple_id);
            reply(StatusCode::OK, "ok")
        }
        ("/request-log", false) => {
            let lines: Vec<String> = c
                .request_log()
                .iter()
                .map(|r| format!("{} {} {} {}", r.role, r.method, r.path, r.status))
                .collect();
            reply(StatusCode::OK, lines.join("\n"))
        }
        _ => reply(
            StatusCode::NOT_FOUND,
            "POST /switch?name=&value= | /revoke-all | /generate-asp?label= | \
             /service?service=&on= | /two-factor?on= | /primary-password?value= | \
             /clear-request-log | /clear-sent-messages | /deliver?mailbox= (body: message); \
             GET /request-log | /sent-messages | /sent-message?index= | /mailbox?mailbox= \
             (all take apple_id=, default the demo account)",
        ),
    }
}
