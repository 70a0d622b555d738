//! A reference reverse proxy for `bench/dav.sh`: the bridge's HTTP stack and nothing else.
//!
//! The same hyper-util server (HTTP/1 and HTTP/2, one task per connection) and pooled hyper-util
//! client the bridge uses, a fixed `Authorization` and `Host` set on every request, and bodies
//! streamed both ways untouched: no local login, no routing, no rewriting. Side by side with
//! nginx and the bridge it shows what hyper on both sides costs by itself, so that the bridge's
//! own work can be told apart from its transport.
//!
//! `ref_proxy LISTEN UPSTREAM` (e.g. `127.0.0.1:8090 http://127.0.0.1:8443`), with the
//! `Authorization` value in the environment variable `REF_PROXY_AUTH`.

use std::convert::Infallible;
use std::error::Error;
use std::net::SocketAddr;

use bytes::Bytes;
use http::header::{AUTHORIZATION, HOST};
use http::uri::Authority;
use http::{HeaderValue, Request, Response, Uri};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;

type BoxError = Box<dyn Error + Send + Sync>;
type Body = BoxBody<Bytes, hyper::Error>;

fn bad_gateway() -> Response<Body> {
    let mut resp = Response::new(Empty::new().map_err(|never| match never {}).boxed());
    *resp.status_mut() = http::StatusCode::BAD_GATEWAY;
    resp
}

const USAGE: &str = "usage: REF_PROXY_AUTH='Basic …' ref_proxy LISTEN http://UPSTREAM-HOST:PORT";

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let mut args = std::env::args().skip(1);
    let listen: SocketAddr = args.next().ok_or(USAGE)?.parse()?;
    let upstream: Uri = args.next().ok_or(USAGE)?.parse()?;
    let authority = upstream.authority().ok_or(USAGE)?.clone();
    let host = HeaderValue::from_str(authority.as_str())?;
    let mut auth = HeaderValue::from_str(&std::env::var("REF_PROXY_AUTH").map_err(|_| USAGE)?)?;
    auth.set_sensitive(true);

    let mut tcp = HttpConnector::new();
    tcp.set_nodelay(true);
    let client: Client<HttpConnector, Incoming> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(64)
        .pool_timer(TokioTimer::new())
        .build(tcp);
    let server = auto::Builder::new(TokioExecutor::new());

    let target = Target {
        client,
        authority,
        host,
        auth,
    };
    let listener = tokio::net::TcpListener::bind(listen).await?;
    eprintln!("ref_proxy: {listen} -> {upstream}");
    loop {
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        let (target, server) = (target.clone(), server.clone());
        tokio::spawn(async move {
            let service = service_fn(move |req| target.clone().forward(req));
            let _ = server.serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

/// Where every request goes, and as whom.
#[derive(Clone)]
struct Target {
    client: Client<HttpConnector, Incoming>,
    authority: Authority,
    host: HeaderValue,
    auth: HeaderValue,
}

impl Target {
    /// The request upstream with the fixed `Host` and `Authorization`; the answer as it comes.
    async fn forward(self, mut req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
        let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
        let uri = Uri::builder()
            .scheme("http")
            .authority(self.authority)
            .path_and_query(path)
            .build();
        let Ok(uri) = uri else {
            return Ok(bad_gateway());
        };
        *req.uri_mut() = uri;
        *req.version_mut() = http::Version::HTTP_11;
        req.headers_mut().insert(HOST, self.host);
        req.headers_mut().insert(AUTHORIZATION, self.auth);
        Ok(match self.client.request(req).await {
            Ok(resp) => resp.map(BodyExt::boxed),
            Err(_) => bad_gateway(),
        })
    }
}
