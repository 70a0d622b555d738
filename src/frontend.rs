//! The one skeleton of every front end (HTTP, HTTPS, IMAP, IMAPS, SMTP): bind, accept, one
//! overload policy, one drain. The policy: a connection over a limit (more than
//! `limits.max_connections_per_ip` from one address, counted over every front end in
//! [`ConnLimit`], or more than the front end's own maximum in total) is refused at once and
//! never queued; each protocol says so in its own words ([`Protocol::refuse`]: SMTP's `421`,
//! IMAP's `* BYE`, HTTP's `503`). On shutdown the listeners close and open sessions get
//! [`DRAIN`] to end; what is still open then is dropped.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::limits::ConnLimit;
use crate::start::StartError;

/// How long open sessions get to end after a shutdown request, on every front end.
pub const DRAIN: Duration = Duration::from_secs(10);

/// One protocol served by [`run`].
pub trait Protocol: Send + Sync + 'static {
    /// What tells one listener of the protocol from another (plain or TLS).
    type Tag: Copy + Send + Sync + 'static;

    /// The front end's name for a listener (`"imaps"`), in logs and refusal counts.
    fn name(&self, tag: Self::Tag) -> &'static str;

    /// Refuse a connection over a limit, in the protocol's words. Must not wait: anything
    /// that takes time runs on `tracker`, which the drain waits for.
    fn refuse(&self, stream: TcpStream, tag: Self::Tag, tracker: &TaskTracker);

    /// Serve one admitted connection; `token` is cancelled when the bridge shuts down (the
    /// session may then end gracefully, within [`DRAIN`]).
    fn serve(
        self: Arc<Self>,
        stream: TcpStream,
        remote: SocketAddr,
        tag: Self::Tag,
        token: CancellationToken,
    ) -> impl Future<Output = ()> + Send;
}

/// Bind `addr` (`key` names the config key in errors).
pub fn bind(addr: SocketAddr, key: &str) -> Result<(TcpListener, SocketAddr), StartError> {
    let failed = |source| StartError::Listen {
        key: key.to_string(),
        addr,
        source,
    };
    let std_listener = std::net::TcpListener::bind(addr).map_err(failed)?;
    std_listener.set_nonblocking(true).map_err(failed)?;
    let listener = TcpListener::from_std(std_listener).map_err(failed)?;
    let local = listener.local_addr().map_err(failed)?;
    Ok((listener, local))
}

/// The next connection on any of `listeners`, with its listener's tag.
async fn accept_any<T: Copy>(
    listeners: &[(TcpListener, T)],
) -> (std::io::Result<(TcpStream, SocketAddr)>, T) {
    std::future::poll_fn(|cx| {
        for (l, tag) in listeners {
            if let Poll::Ready(r) = l.poll_accept(cx) {
                return Poll::Ready((r, *tag));
            }
        }
        Poll::Pending
    })
    .await
}

/// Accept on `listeners` until `token` is cancelled, admitting at most `max` connections
/// at once and what `conns` allows per address; then drain.
pub async fn run<P: Protocol>(
    proto: Arc<P>,
    listeners: Vec<(TcpListener, P::Tag)>,
    conns: Arc<ConnLimit>,
    max: usize,
    token: CancellationToken,
) {
    let tracker = TaskTracker::new();
    // Cancelled when the drain time is over: every session still open is dropped.
    let hard = CancellationToken::new();
    let total = Arc::new(Semaphore::new(max));
    let label = listeners
        .first()
        .map_or("front end", |(_, t)| proto.name(*t));
    loop {
        let (accepted, tag) = tokio::select! {
            _ = token.cancelled() => break,
            r = accept_any(&listeners) => r,
        };
        let name = proto.name(tag);
        let (stream, remote) = match accepted {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, front = name, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // Over a limit: refused at once, never queued.
        let Some(slot) = conns.try_open(remote.ip(), name) else {
            proto.refuse(stream, tag, &tracker);
            continue;
        };
        let Ok(permit) = total.clone().try_acquire_owned() else {
            tracing::debug!(%remote, front = name, "refusing a connection: {max} are open");
            proto.refuse(stream, tag, &tracker);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (proto, token, hard) = (proto.clone(), token.clone(), hard.clone());
        tracker.spawn(async move {
            let _held = (slot, permit);
            tokio::select! {
                _ = proto.serve(stream, remote, tag, token) => {}
                _ = hard.cancelled() => {}
            }
        });
    }
    drop(listeners);
    tracker.close();
    if tokio::time::timeout(DRAIN, tracker.wait()).await.is_err() {
        tracing::warn!(
            front = label,
            "shutdown deadline reached; dropping open connections"
        );
        hard.cancel();
        tracker.wait().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Echoes one line's worth of bytes; refuses with `NO`.
    struct Echo;

    impl Protocol for Echo {
        type Tag = ();
        fn name(&self, _: ()) -> &'static str {
            "echo"
        }
        fn refuse(&self, stream: TcpStream, _: (), _: &TaskTracker) {
            let _ = stream.try_write(b"NO\r\n");
        }
        async fn serve(
            self: Arc<Self>,
            mut stream: TcpStream,
            _: SocketAddr,
            _: (),
            token: CancellationToken,
        ) {
            let mut buf = [0u8; 64];
            tokio::select! {
                r = stream.read(&mut buf) => if let Ok(n) = r { let _ = stream.write_all(&buf[..n]).await; },
                _ = token.cancelled() => {}
            }
            // Hold the connection until the client goes.
            let _ = stream.read(&mut buf).await;
        }
    }

    #[tokio::test]
    async fn over_the_limits_is_refused_in_the_protocols_words_and_shutdown_ends_it() {
        let (listener, addr) = bind("127.0.0.1:0".parse().unwrap(), "test").unwrap();
        let token = CancellationToken::new();
        let conns = Arc::new(ConnLimit::new(2));
        let task = tokio::spawn(run(
            Arc::new(Echo),
            vec![(listener, ())],
            conns.clone(),
            8,
            token.clone(),
        ));
        let mut a = TcpStream::connect(addr).await.unwrap();
        a.write_all(b"hi").await.unwrap();
        let mut buf = [0u8; 4];
        a.read_exact(&mut buf[..2]).await.unwrap();
        assert_eq!(&buf[..2], b"hi");
        let _b = TcpStream::connect(addr).await.unwrap();
        // The third from one address: refused at once.
        let mut c = TcpStream::connect(addr).await.unwrap();
        let mut got = Vec::new();
        c.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"NO\r\n");
        assert_eq!(conns.refused(), 1);
        token.cancel();
        drop((a, _b));
        // Sessions that end on their own end the drain early.
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(conns.held("127.0.0.1".parse().unwrap()), 0);
    }
}
