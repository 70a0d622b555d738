//! What every line-based connection shares, front end or upstream client: the one loopback
//! rule of every front end (HTTP, IMAP, SMTP) and of the plaintext check (127.0.0.0/8, `::1`,
//! or an IPv4-mapped IPv6 form of 127.0.0.0/8, `::ffff:127.0.0.1`, which a dual-stack listener
//! reports for IPv4 peers); the one [`Io`] type (plaintext or TLS); and the one length-limited
//! line reader ([`read_line`]) and writer ([`write_line`]).

use std::io;
use std::net::IpAddr;

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};

/// A client or upstream connection, plaintext or TLS.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}
/// A boxed [`Io`].
pub type BoxIo = Box<dyn Io>;
/// A connection with its read buffer (what the line reader reads from).
pub type Conn = BufReader<BoxIo>;

/// One line read with a length limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Line {
    Full,
    /// Longer than allowed; consumed up to its end and discarded.
    TooLong,
    /// The connection closed (a partial last line is dropped).
    Eof,
}

/// Read one `\n`-terminated line into `out` (cleared first), at most `max` bytes.
pub async fn read_line<R: AsyncBufRead + Unpin>(
    r: &mut R,
    max: usize,
    out: &mut Vec<u8>,
) -> io::Result<Line> {
    out.clear();
    let mut too_long = false;
    loop {
        let buf = r.fill_buf().await?;
        if buf.is_empty() {
            return Ok(Line::Eof);
        }
        let (take, done) = match buf.iter().position(|b| *b == b'\n') {
            Some(i) => (i + 1, true),
            None => (buf.len(), false),
        };
        if !too_long && out.len() + take <= max {
            out.extend_from_slice(&buf[..take]);
        } else {
            too_long = true;
            out.clear();
        }
        r.consume(take);
        if done {
            return Ok(if too_long { Line::TooLong } else { Line::Full });
        }
    }
}

/// `line` without its `\r\n` or `\n`.
pub fn trim_eol(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Write `line` and `\r\n`, then flush.
pub async fn write_line(conn: &mut Conn, line: &str) -> io::Result<()> {
    let w = conn.get_mut();
    w.write_all(line.as_bytes()).await?;
    w.write_all(b"\r\n").await?;
    w.flush().await
}

/// Is `ip` a loopback address (IPv4-mapped IPv6 included)?
pub fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lines_are_limited_and_resynchronise() {
        let input: &[u8] = b"short\r\nthis one is far too long\r\nok\n";
        let mut r = BufReader::with_capacity(4, input);
        let mut out = Vec::new();
        assert_eq!(read_line(&mut r, 10, &mut out).await.unwrap(), Line::Full);
        assert_eq!(out, b"short\r\n");
        assert_eq!(trim_eol(&out), b"short");
        assert_eq!(
            read_line(&mut r, 10, &mut out).await.unwrap(),
            Line::TooLong
        );
        assert!(out.is_empty());
        assert_eq!(read_line(&mut r, 10, &mut out).await.unwrap(), Line::Full);
        assert_eq!(trim_eol(&out), b"ok");
        assert_eq!(read_line(&mut r, 10, &mut out).await.unwrap(), Line::Eof);
    }

    #[test]
    fn loopback_in_every_spelling() {
        for ok in [
            "127.0.0.1",
            "127.8.9.10",
            "::1",
            "::ffff:127.0.0.1",
            "::ffff:127.1.2.3",
        ] {
            assert!(is_loopback(ok.parse().unwrap()), "{ok}");
        }
        for no in [
            "0.0.0.0",
            "::",
            "192.168.1.2",
            "::ffff:192.168.1.2",
            "fe80::1",
            "10.0.0.1",
        ] {
            assert!(!is_loopback(no.parse().unwrap()), "{no}");
        }
    }
}
