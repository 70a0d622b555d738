//! The wire to push services: which push resources are allowed (`[push] allow`), an HTTP
//! client of its own (never the upstream client: the Apple credential cannot reach a push
//! service), and one delivery with its outcome.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use url::Url;

use crate::config::PushAllow;
use crate::push::webpush::{self, Receiver, Vapid};

/// Why a push resource is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Refused {
    #[error("the push resource is not an absolute http(s) URL")]
    NotUrl,
    #[error("push services on {0} are not allowed on this bridge ([push] allow)")]
    NotAllowed(String),
    #[error(
        "plain http:// is allowed only for push services listed by name or address in [push] allow"
    )]
    Plaintext,
}

/// Whether a push resource may be used: an https URL (http only for an entry without a
/// wildcard) whose host and port an allow entry matches; an IP address only when listed
/// as such.
pub fn check_resource(s: &str, allow: &[PushAllow]) -> Result<Url, Refused> {
    let url = Url::parse(s.trim()).map_err(|_| Refused::NotUrl)?;
    if !matches!(url.scheme(), "https" | "http")
        || !url.username().is_empty()
        || url.password().is_some()
    {
        return Err(Refused::NotUrl);
    }
    let host = match url.host() {
        Some(url::Host::Domain(d)) => d.to_ascii_lowercase(),
        Some(url::Host::Ipv4(ip)) => ip.to_string(),
        Some(url::Host::Ipv6(ip)) => ip.to_string(),
        None => return Err(Refused::NotUrl),
    };
    let port = url.port_or_known_default().ok_or(Refused::NotUrl)?;
    let shown = match url.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.clone(),
    };
    let hits: Vec<&PushAllow> = allow.iter().filter(|a| a.matches(&host, port)).collect();
    if hits.is_empty() {
        return Err(Refused::NotAllowed(shown));
    }
    if url.scheme() == "http" && hits.iter().all(|a| a.wildcard) {
        return Err(Refused::Plaintext);
    }
    Ok(url)
}

/// An address reachable from anywhere (not loopback, private, link-local, shared or
/// unspecified): what a wildcard entry may resolve to.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_documentation()
                || o[0] == 0
                || (o[0] == 100 && (64..128).contains(&o[1]))
                || o[0] >= 224)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let s = v6.segments();
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80)
        }
    }
}

/// Resolves only hosts an allow entry names; a host matched only by a wildcard entry gets
/// its public addresses alone (no DNS answer turns `*.example` into a LAN address).
struct AllowResolver {
    allow: Arc<Vec<PushAllow>>,
}

impl reqwest::dns::Resolve for AllowResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().trim_end_matches('.').to_ascii_lowercase();
        let allow = self.allow.clone();
        Box::pin(async move {
            let hits: Vec<&PushAllow> = allow
                .iter()
                .filter(|a| a.matches(&host, a.port.unwrap_or(0)))
                .collect();
            if hits.is_empty() {
                return Err(format!("{host} is not in [push] allow").into());
            }
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let addrs = usable(&hits, found);
            if addrs.is_empty() {
                return Err(format!("{host} has no public address").into());
            }
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The addresses a host matched by `hits` may be reached at: any when an entry names it
/// without a wildcard, else the public ones only.
fn usable(hits: &[&PushAllow], found: Vec<SocketAddr>) -> Vec<SocketAddr> {
    let explicit = hits.iter().any(|a| !a.wildcard);
    found
        .into_iter()
        .filter(|a| explicit || is_public(a.ip()))
        .collect()
}

/// The delivery client: no proxy from the environment, no redirects, no cookies, the
/// allow-list resolver, short timeouts.
pub fn client(allow: &[PushAllow]) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .dns_resolver(Arc::new(AllowResolver {
            allow: Arc::new(allow.to_vec()),
        }))
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(15))
        .user_agent(concat!(
            "icloud-bridge/",
            env!("CARGO_PKG_VERSION"),
            " (WebDAV-Push)"
        ))
        .build()
}

/// How one delivery ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The push service took the message.
    Delivered,
    /// 404 or 410: the subscription is gone.
    Gone,
    /// Try again (5xx, 429, a network error), after the push service's Retry-After if given.
    Retry(Option<Duration>),
    /// Refused for good (another 4xx, a bad key): not retried.
    Failed(String),
}

impl Outcome {
    /// The metric label.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Delivered => "delivered",
            Outcome::Gone => "gone",
            Outcome::Retry(_) => "retry",
            Outcome::Failed(_) => "failed",
        }
    }
}

/// What one delivery needs besides the client.
pub struct Message<'a> {
    pub resource: &'a str,
    pub receiver: &'a Receiver,
    pub xml: &'a [u8],
    pub urgency: &'static str,
    pub ttl_secs: u64,
}

/// POST one encrypted, VAPID-signed message.
pub async fn deliver(
    client: &reqwest::Client,
    vapid: &Vapid,
    subject: &str,
    allow: &[PushAllow],
    m: Message<'_>,
) -> Outcome {
    let url = match check_resource(m.resource, allow) {
        Ok(u) => u,
        Err(e) => return Outcome::Failed(e.to_string()),
    };
    let body = match webpush::encrypt(m.xml, m.receiver) {
        Ok(b) => b,
        Err(e) => return Outcome::Failed(e.to_string()),
    };
    let now = crate::push::now();
    let auth = match vapid.authorization(&url, subject, now) {
        Ok(a) => a,
        Err(e) => return Outcome::Failed(e.to_string()),
    };
    let resp = client
        .post(url)
        .header("authorization", auth)
        .header("content-encoding", "aes128gcm")
        .header("content-type", "application/octet-stream")
        .header("ttl", m.ttl_secs.to_string())
        .header("urgency", m.urgency)
        .body(body)
        .send()
        .await;
    let resp = match resp {
        Ok(r) => r,
        Err(e) => {
            // Without the URL: a push resource is a capability.
            tracing::debug!(error = %e.without_url(), "push delivery failed");
            return Outcome::Retry(None);
        }
    };
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|s| Duration::from_secs(s.min(3600)));
    match status {
        200..=299 => Outcome::Delivered,
        404 | 410 => Outcome::Gone,
        429 | 500..=599 => Outcome::Retry(retry_after),
        s => Outcome::Failed(format!("the push service answered {s}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allow(list: &[&str]) -> Vec<PushAllow> {
        list.iter().map(|a| PushAllow::parse(a).unwrap()).collect()
    }

    #[test]
    fn only_allowed_push_resources_pass() {
        let a = allow(&["ntfy.sh", "*.push.example", "192.168.1.5:8080", "ntfy.lan"]);
        assert!(check_resource("https://ntfy.sh/upAbC?up=1", &a).is_ok());
        assert!(check_resource("https://x.push.example/s/1", &a).is_ok());
        assert!(check_resource("https://a.b.push.example/s/1", &a).is_ok());
        assert_eq!(
            check_resource("https://push.example/s/1", &a),
            Err(Refused::NotAllowed("push.example".into()))
        );
        assert_eq!(
            check_resource("https://evilpush.example/", &a),
            Err(Refused::NotAllowed("evilpush.example".into()))
        );
        assert_eq!(
            check_resource("http://x.push.example/", &a),
            Err(Refused::Plaintext)
        );
        assert!(check_resource("http://ntfy.lan/up1", &a).is_ok());
        assert!(check_resource("http://192.168.1.5:8080/up", &a).is_ok());
        assert!(check_resource("http://192.168.1.5:8081/up", &a).is_err());
        assert!(check_resource("http://127.0.0.1/up", &a).is_err());
        assert!(check_resource("https://user:pw@ntfy.sh/up", &a).is_err());
        assert!(check_resource("ftp://ntfy.sh/up", &a).is_err());
        assert!(check_resource("not a url", &a).is_err());
        assert!(check_resource("http://[::1]/up", &allow(&["[::1]"])).is_ok());
    }

    #[test]
    fn private_and_loopback_addresses_are_not_public() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "192.168.0.1",
            "172.16.5.5",
            "169.254.1.1",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:10.0.0.1",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["1.1.1.1", "2606:4700::1111", "::ffff:8.8.8.8"] {
            assert!(is_public(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn a_wildcard_never_reaches_a_private_address() {
        let found: Vec<SocketAddr> = ["127.0.0.1:0", "10.0.0.7:0", "93.184.215.14:0"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        let wild = PushAllow::parse("*.push.example").unwrap();
        let exact = PushAllow::parse("ntfy.push.example").unwrap();
        assert_eq!(usable(&[&wild], found.clone()), vec![found[2]]);
        assert_eq!(usable(&[&wild, &exact], found.clone()), found);
        assert!(usable(&[&wild], found[..2].to_vec()).is_empty());
    }

    #[test]
    fn allow_entries_parse_strictly() {
        for bad in [
            "",
            "https://ntfy.sh",
            "ntfy.sh/x",
            "*.com",
            "*",
            "a..b",
            "*.1.2.3.4",
            "host:99999",
        ] {
            assert!(PushAllow::parse(bad).is_none(), "{bad:?}");
        }
        let w = PushAllow::parse("*.Push.Example:443").unwrap();
        assert!(w.wildcard && w.host == "push.example" && w.port == Some(443));
        assert!(w.matches("a.push.example", 443) && !w.matches("a.push.example", 80));
        assert!(PushAllow::parse("[fd00::1]:8080")
            .unwrap()
            .matches("fd00::1", 8080));
    }
}
