//! The relay of every mail session after login (IMAP and SMTP): bytes both ways, untouched,
//! after handing over what each side already sent, until a side closes or nothing moves for
//! the protocol's idle time. Messages stream through and are never held whole.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use crate::net::BoxIo;

/// How long iCloud may still answer after the client closed its side.
const LAST_WORDS: Duration = Duration::from_secs(30);

/// How one protocol relays.
pub struct Relay<'a> {
    /// For logs (`"IMAP"`, `"SMTP"`).
    pub name: &'static str,
    /// No bytes either way for this long: the session is closed.
    pub idle: Duration,
    /// Bytes read at once in each direction.
    pub buffer: usize,
    /// Ends the relay at once when cancelled (IMAP, on shutdown); `None`: the session runs on
    /// until the front end's drain time is over.
    pub stop: Option<&'a CancellationToken>,
}

/// One side of a session and what was already read from it but not yet passed on.
pub struct Side {
    pub io: BoxIo,
    pub early: Vec<u8>,
}

fn now_ms(start: Instant) -> u64 {
    u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Copy `r` to `w` until EOF (then shut `w` down) or an error, noting activity.
async fn pump<R, W>(mut r: R, mut w: W, size: usize, seen: Arc<AtomicU64>, start: Instant)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; size.max(1024)];
    loop {
        let n = match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if w.write_all(&buf[..n]).await.is_err() || w.flush().await.is_err() {
            return;
        }
        seen.store(now_ms(start), Ordering::Relaxed);
    }
    let _ = w.shutdown().await;
}

impl Relay<'_> {
    /// Relay `client` and `upstream` until either closes, nothing moves for [`Relay::idle`],
    /// or [`Relay::stop`] is cancelled. What upstream sent early goes to the client first; what
    /// the client pipelined behind its login goes upstream first.
    pub async fn run(self, client: Side, upstream: Side) -> std::io::Result<()> {
        let (cr, mut cw) = tokio::io::split(client.io);
        let (ur, mut uw) = tokio::io::split(upstream.io);
        if !upstream.early.is_empty() {
            cw.write_all(&upstream.early).await?;
            cw.flush().await?;
        }
        if !client.early.is_empty() {
            uw.write_all(&client.early).await?;
            uw.flush().await?;
        }
        let start = Instant::now();
        let seen = Arc::new(AtomicU64::new(0));
        let c2u = pump(cr, uw, self.buffer, seen.clone(), start);
        let u2c = pump(ur, cw, self.buffer, seen.clone(), start);
        let idle = async {
            loop {
                let last = Duration::from_millis(seen.load(Ordering::Relaxed));
                let since = start.elapsed().saturating_sub(last);
                if since >= self.idle {
                    return;
                }
                tokio::time::sleep(self.idle - since).await;
            }
        };
        let stop = async {
            match self.stop {
                Some(t) => t.cancelled().await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(c2u, u2c, idle, stop);
        tokio::select! {
            // iCloud closed (after a logout, or a 421/BYE) and the client's side is shut
            // down: nothing the client sends now could go anywhere.
            _ = &mut u2c => {}
            // The client closed: iCloud may still answer what it sent last.
            _ = &mut c2u => { let _ = tokio::time::timeout(LAST_WORDS, &mut u2c).await; }
            _ = &mut idle => tracing::info!(protocol = self.name, idle_secs = self.idle.as_secs(), "relayed session idle; closing"),
            _ = &mut stop => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn early_bytes_go_first_and_both_ways_flow() {
        let (client, mut client_far) = tokio::io::duplex(1024);
        let (up, mut up_far) = tokio::io::duplex(1024);
        let relay = tokio::spawn(async move {
            Relay {
                name: "test",
                idle: Duration::from_secs(60),
                buffer: 4096,
                stop: None,
            }
            .run(
                Side {
                    io: Box::new(client),
                    early: b"pipelined\r\n".to_vec(),
                },
                Side {
                    io: Box::new(up),
                    early: b"greeting\r\n".to_vec(),
                },
            )
            .await
        });
        let mut got = [0u8; 10];
        client_far.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"greeting\r\n");
        let mut got = [0u8; 11];
        up_far.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"pipelined\r\n");
        client_far.write_all(b"NOOP\r\n").await.unwrap();
        let mut got = [0u8; 6];
        up_far.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"NOOP\r\n");
        // Upstream closes: the relay ends and the client sees the end.
        drop(up_far);
        relay.await.unwrap().unwrap();
        let mut rest = Vec::new();
        client_far.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_session_is_closed_after_the_idle_time() {
        let (client, _client_far) = tokio::io::duplex(64);
        let (up, _up_far) = tokio::io::duplex(64);
        let started = tokio::time::Instant::now();
        Relay {
            name: "test",
            idle: Duration::from_secs(600),
            buffer: 1024,
            stop: None,
        }
        .run(
            Side {
                io: Box::new(client),
                early: Vec::new(),
            },
            Side {
                io: Box::new(up),
                early: Vec::new(),
            },
        )
        .await
        .unwrap();
        assert!(started.elapsed() >= Duration::from_secs(600));
    }
}
