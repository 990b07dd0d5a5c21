//! One SMTP session with the mail server: connect, STARTTLS with the pinned
//! certificate ([`crate::pin`]), AUTH, then one message.
//!
//! lettre's transport builds its own rustls configuration from a root store
//! and offers no way to pass ours, so this module does the plain-text part
//! itself (greeting, `EHLO`, `STARTTLS`), runs the TLS handshake with
//! [`pin::client_config`], and hands the encrypted stream to lettre's
//! `AsyncSmtpConnection` for the rest (`EHLO` again, `AUTH`, `MAIL`, `RCPT`,
//! `DATA`). A session carries one message, so a journal entry written just
//! before [`Session::send`] brackets exactly one `DATA`.

use std::pin::Pin as StdPin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use lettre::Message;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{AsyncSmtpConnection, AsyncTokioStream};
use lettre::transport::smtp::extension::ClientId;
use tokio::io::{
    AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, ReadBuf,
};
use tokio::net::TcpStream;

use crate::config::{Config, Security};
use crate::pin;

/// Longest reply line read before TLS, in bytes.
const LINE_MAX: usize = 2048;

/// Why a session or a message failed.
#[derive(Debug, thiserror::Error)]
pub enum SmtpError {
    /// No TCP connection.
    #[error("cannot connect to the SMTP server {addr}: {error} (is it running, on this port?)")]
    Connect {
        /// host:port.
        addr: String,
        /// Why.
        error: std::io::Error,
    },
    /// The server took longer than `--smtp-timeout-secs`.
    #[error("the SMTP server did not answer within {0:?}")]
    Timeout(Duration),
    /// The server does not offer STARTTLS: nothing is sent in clear text.
    #[error(
        "the SMTP server does not offer STARTTLS; refusing to send in clear text (only --smtp-security plain-text-insecure-loopback-only does, to a loopback host)"
    )]
    NoStarttls,
    /// The TLS handshake failed, e.g. the certificate is not the pinned one.
    #[error("{0}")]
    Tls(String),
    /// A reply before TLS that is not what SMTP says.
    #[error("the SMTP server answered {0:?}")]
    Protocol(String),
    /// The login was refused.
    #[error("the SMTP server refused the login: {0}")]
    Auth(lettre::transport::smtp::Error),
    /// Anything after the handshake, with the server's reply when there is
    /// one.
    #[error(transparent)]
    Smtp(#[from] lettre::transport::smtp::Error),
}

impl SmtpError {
    /// A 5xx reply to the message itself: trying again cannot help. Every
    /// other failure (connection, TLS, login, 4xx) may pass, or be fixed by
    /// the operator, so it is retried.
    pub fn is_permanent(&self) -> bool {
        matches!(self, Self::Smtp(e) if e.is_permanent())
    }

    /// The server's reply code, when it gave one.
    pub fn code(&self) -> Option<u16> {
        match self {
            Self::Smtp(e) | Self::Auth(e) => e.status().map(u16::from),
            _ => None,
        }
    }
}

/// The server's reply to the end of `DATA`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// Its code (250).
    pub code: u16,
    /// The whole reply, code and text, one line.
    pub text: String,
}

/// Where and how to reach the SMTP server.
#[derive(Clone)]
pub struct Smtp {
    host: String,
    port: u16,
    /// `None` for plain text on loopback.
    tls: Option<Arc<rustls::ClientConfig>>,
    credentials: Option<Credentials>,
    hello: ClientId,
    timeout: Duration,
}

/// An open, authenticated session.
pub struct Session {
    conn: AsyncSmtpConnection,
    timeout: Duration,
    /// The SHA-256 fingerprint of the server's certificate, after STARTTLS.
    pub certificate_sha256: Option<String>,
}

impl Smtp {
    /// The server `config` describes.
    pub fn new(config: &Config) -> Result<Self, rustls::Error> {
        let tls = match config.smtp_security {
            Security::Starttls => Some(Arc::new(pin::client_config(&config.smtp_trust)?)),
            Security::PlainTextInsecureLoopbackOnly => None,
        };
        Ok(Self {
            host: config.smtp_host.clone(),
            port: config.smtp_port,
            tls,
            credentials: config
                .smtp_credentials
                .as_ref()
                .map(|(u, p)| Credentials::new(u.clone(), p.clone())),
            hello: ClientId::Domain(config.message_id_domain.clone()),
            timeout: config.smtp_timeout,
        })
    }

    /// Whether it logs in.
    pub fn has_credentials(&self) -> bool {
        self.credentials.is_some()
    }

    /// Connects, upgrades with STARTTLS (unless plain text) and logs in.
    pub async fn connect(&self) -> Result<Session, SmtpError> {
        let addr = format!("{}:{}", self.host, self.port);
        let tcp = within(self.timeout, async {
            TcpStream::connect((self.host.as_str(), self.port))
                .await
                .map_err(|error| SmtpError::Connect {
                    addr: addr.clone(),
                    error,
                })
        })
        .await?;
        let (mut conn, certificate_sha256) = match &self.tls {
            None => (
                within(self.timeout, async {
                    Ok(
                        AsyncSmtpConnection::connect_with_transport(Box::new(tcp), &self.hello)
                            .await?,
                    )
                })
                .await?,
                None,
            ),
            Some(tls) => {
                let stream = within(self.timeout, self.starttls(tcp, tls.clone())).await?;
                let fingerprint = stream
                    .inner
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .map(|c| pin::fingerprint(c.as_ref()));
                let conn = within(self.timeout, async {
                    Ok(
                        AsyncSmtpConnection::connect_with_transport(Box::new(stream), &self.hello)
                            .await?,
                    )
                })
                .await?;
                (conn, fingerprint)
            }
        };
        if let Some(credentials) = &self.credentials {
            within(self.timeout, async {
                conn.auth(&[Mechanism::Plain, Mechanism::Login], credentials)
                    .await
                    .map_err(SmtpError::Auth)
            })
            .await?;
        }
        Ok(Session {
            conn,
            timeout: self.timeout,
            certificate_sha256,
        })
    }

    /// The clear-text opening (greeting, `EHLO`, `STARTTLS`), then the
    /// handshake.
    async fn starttls(
        &self,
        tcp: TcpStream,
        tls: Arc<rustls::ClientConfig>,
    ) -> Result<Resumed, SmtpError> {
        let mut reader = BufReader::new(tcp);
        expect(&mut reader, 220).await?;
        let hello = format!("EHLO {}\r\n", self.hello);
        reader
            .get_mut()
            .write_all(hello.as_bytes())
            .await
            .map_err(net)?;
        let ehlo = expect(&mut reader, 250).await?;
        if !ehlo.iter().any(|l| {
            l.get(4..)
                .is_some_and(|k| k.to_ascii_uppercase().starts_with("STARTTLS"))
        }) {
            return Err(SmtpError::NoStarttls);
        }
        reader
            .get_mut()
            .write_all(b"STARTTLS\r\n")
            .await
            .map_err(net)?;
        expect(&mut reader, 220).await?;
        // Anything the server sent after its 220 would be read as if it came
        // over TLS (the STARTTLS command-injection flaw): refuse it.
        if !reader.buffer().is_empty() {
            return Err(SmtpError::Protocol(
                "bytes after its STARTTLS reply, before the TLS handshake".into(),
            ));
        }
        let name = rustls::pki_types::ServerName::try_from(self.host.clone())
            .map_err(|e| SmtpError::Tls(format!("{:?} is not a host name: {e}", self.host)))?;
        let inner = tokio_rustls::TlsConnector::from(tls)
            .connect(name, reader.into_inner())
            .await
            .map_err(|e| SmtpError::Tls(pin::explain(&e)))?;
        Ok(Resumed {
            greeting: GREETING,
            sent: 0,
            inner,
        })
    }
}

impl Session {
    /// Sends one message (`MAIL`, `RCPT`, `DATA`), and on `250` returns the
    /// server's reply.
    pub async fn send(&mut self, email: &Message) -> Result<Reply, SmtpError> {
        let bytes = email.formatted();
        let envelope = email.envelope().clone();
        let conn = &mut self.conn;
        let resp = within(self.timeout, async {
            Ok(conn.send(&envelope, &bytes).await?)
        })
        .await?;
        let code = u16::from(resp.code());
        let text = std::iter::once(code.to_string())
            .chain(resp.message().map(str::to_owned))
            .collect::<Vec<_>>()
            .join(" ");
        Ok(Reply { code, text })
    }

    /// Says goodbye; a failure here changes nothing already sent.
    pub async fn quit(mut self) {
        let conn = &mut self.conn;
        let _ = within(self.timeout, async { Ok(conn.quit().await?) }).await;
    }
}

/// What lettre reads first after being handed the encrypted stream: it
/// expects a greeting, but after STARTTLS the server sends none.
const GREETING: &[u8] = b"220 STARTTLS done\r\n";

/// The TLS stream, replaying [`GREETING`] to lettre before the server's
/// bytes.
struct Resumed {
    greeting: &'static [u8],
    sent: usize,
    inner: tokio_rustls::client::TlsStream<TcpStream>,
}

impl std::fmt::Debug for Resumed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Resumed(TLS)")
    }
}

impl AsyncRead for Resumed {
    fn poll_read(
        mut self: StdPin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.sent < self.greeting.len() {
            let rest = &self.greeting[self.sent..];
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            self.sent += n;
            return Poll::Ready(Ok(()));
        }
        StdPin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Resumed {
    fn poll_write(
        mut self: StdPin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        StdPin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: StdPin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        StdPin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: StdPin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        StdPin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl AsyncTokioStream for Resumed {
    fn peer_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.inner.get_ref().0.peer_addr()
    }
}

fn net(e: std::io::Error) -> SmtpError {
    SmtpError::Protocol(format!("(connection lost: {e})"))
}

async fn within<T>(
    timeout: Duration,
    f: impl Future<Output = Result<T, SmtpError>>,
) -> Result<T, SmtpError> {
    tokio::time::timeout(timeout, f)
        .await
        .map_err(|_| SmtpError::Timeout(timeout))?
}

/// Reads one (possibly multi-line) reply and checks its code; returns its
/// lines.
async fn expect(reader: &mut BufReader<TcpStream>, code: u16) -> Result<Vec<String>, SmtpError> {
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        let n = (&mut *reader)
            .take(LINE_MAX as u64)
            .read_line(&mut line)
            .await
            .map_err(net)?;
        if n == 0 {
            return Err(SmtpError::Protocol("(connection closed)".into()));
        }
        let line = line.trim_end().to_owned();
        let last = line.as_bytes().get(3) != Some(&b'-');
        let got = line.get(..3).and_then(|c| c.parse::<u16>().ok());
        lines.push(line);
        if lines.len() > 100 {
            return Err(SmtpError::Protocol("(a reply of over 100 lines)".into()));
        }
        if last {
            if got != Some(code) {
                return Err(SmtpError::Protocol(lines.join(" ")));
            }
            return Ok(lines);
        }
    }
}
