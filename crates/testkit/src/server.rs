//! Starting the real `kube-aggregator` binary (`serve`, `metrics-server`, `up`) for end-to-end tests.
//!
//! [`Aggregator::start`] writes certificates with `kube-aggregator pki init`, adds a token file,
//! starts `kube-aggregator serve` on a free loopback port and waits for `/readyz`.
//! [`https_request`] is a small blocking HTTPS/1.1 client (rustls, aws-lc-rs) for raw checks
//! such as headers and status codes that kubectl hides.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use crate::process::{ChildGuard, free_port, wait_for};

/// The token file every [`Aggregator`] gets: `admin-token` (in `system:masters`) and
/// `viewer-token` (user `viewer`, group `viewers`).
pub const TOKENS: &str = "admin-token,token-admin,uid-admin,\"system:masters\"\nviewer-token,viewer,uid-viewer,viewers\n";
/// The reader token of [`TOKENS`].
pub const VIEWER_TOKEN: &str = "viewer-token";
/// The admin token of [`TOKENS`].
pub const ADMIN_TOKEN: &str = "admin-token";

/// A running `kube-aggregator serve`.
#[derive(Debug)]
pub struct Aggregator {
    /// The process (killed on drop).
    pub child: ChildGuard,
    /// Where it listens.
    pub addr: SocketAddr,
    /// `https://127.0.0.1:PORT`.
    pub url: String,
    /// The `pki init` directory (ca.pem, admin.pem, admin.kubeconfig, …).
    pub pki_dir: PathBuf,
    /// Logs of the process.
    pub log_dir: PathBuf,
    /// The cluster CA (PEM).
    pub ca_pem: String,
    bin: PathBuf,
    args: Vec<String>,
}

/// Options of [`Aggregator::start`].
#[derive(Debug, Clone)]
pub struct Options {
    /// `--store` value.
    pub store: String,
    /// More flags.
    pub extra_args: Vec<String>,
}

impl Aggregator {
    /// Runs `BIN pki init` into `work/pki` (ECDSA keys, kubeconfig pointing at a free port),
    /// writes `work/tokens.csv` ([`TOKENS`]) and starts `BIN serve` with the serving
    /// certificate, the client CA, the token file and `opts`, waiting up to 30 s for `/readyz`.
    pub fn start(bin: &Path, work: &Path, opts: &Options) -> Result<Aggregator> {
        let port = free_port();
        let url = format!("https://127.0.0.1:{port}");
        let pki_dir = work.join("pki");
        let ran = crate::tools::Cmd::new(bin)
            .args([
                "pki",
                "init",
                "--key-algo",
                "ecdsa",
                "--server",
                &url,
                "--dir",
            ])
            .arg(&pki_dir)
            .run()?;
        if !ran.success() {
            bail!("pki init failed: {ran}");
        }
        let tokens = work.join("tokens.csv");
        std::fs::write(&tokens, TOKENS)?;
        let p = |f: &str| pki_dir.join(f).display().to_string();
        let mut args = vec![
            "serve".to_string(),
            "--bind-address=127.0.0.1".into(),
            format!("--secure-port={port}"),
            format!("--tls-cert-file={}", p("aggregator.pem")),
            format!("--tls-private-key-file={}", p("aggregator-key.pem")),
            format!("--client-ca-file={}", p("ca.pem")),
            format!("--token-auth-file={}", tokens.display()),
            format!("--store={}", opts.store),
        ];
        args.extend(opts.extra_args.iter().cloned());
        let log_dir = work.join("logs");
        let ca_pem = std::fs::read_to_string(pki_dir.join("ca.pem"))?;
        let child = spawn(bin, &args, &log_dir)?;
        let mut agg = Aggregator {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            url,
            pki_dir,
            log_dir,
            ca_pem,
            bin: bin.to_owned(),
            args,
        };
        agg.wait_ready(Duration::from_secs(30))?;
        Ok(agg)
    }

    /// Waits for `/readyz` to answer 200.
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let addr = self.addr;
        let ca = self.ca_pem.clone();
        let res = wait_for("kube-aggregator /readyz", timeout, || {
            match https_request(addr, &ca, None, "GET", "/readyz", &[], b"") {
                Ok(r) if r.status == 200 => Ok(Some(())),
                Ok(r) => bail!("readyz answered {}: {}", r.status, r.body_text()),
                Err(e) => Err(e),
            }
        });
        if let Err(e) = res {
            if !self.child.is_running() {
                bail!("kube-aggregator exited early:\n{}", self.child.log());
            }
            bail!("{e:#}\n--- log\n{}", self.child.log());
        }
        Ok(())
    }

    /// Stops the process with SIGKILL and starts it again with the same flags.
    pub fn restart(&mut self) -> Result<()> {
        self.child.kill();
        self.child = spawn(&self.bin, &self.args, &self.log_dir)?;
        self.wait_ready(Duration::from_secs(30))
    }

    /// `admin.kubeconfig` (client certificate, `system:masters`).
    pub fn admin_kubeconfig(&self) -> PathBuf {
        self.pki_dir.join("admin.kubeconfig")
    }

    /// Writes a kubeconfig for `token` into the pki dir and returns its path.
    pub fn token_kubeconfig(&self, name: &str, token: &str) -> Result<PathBuf> {
        let path = self.pki_dir.join(format!("{name}.kubeconfig"));
        std::fs::write(
            &path,
            crate::kubectl::token_kubeconfig(&self.url, &self.ca_pem, token),
        )?;
        Ok(path)
    }

    /// The admin client certificate and key (PEM) for [`https_request`].
    pub fn admin_identity(&self) -> Result<(String, String)> {
        Ok((
            std::fs::read_to_string(self.pki_dir.join("admin.pem"))?,
            std::fs::read_to_string(self.pki_dir.join("admin-key.pem"))?,
        ))
    }

    /// An HTTPS request as admin (client certificate).
    pub fn request_as_admin(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<HttpResponse> {
        let id = self.admin_identity()?;
        https_request(
            self.addr,
            &self.ca_pem,
            Some((&id.0, &id.1)),
            method,
            path,
            headers,
            body,
        )
    }
}

fn spawn(bin: &Path, args: &[String], log_dir: &Path) -> Result<ChildGuard> {
    let mut cmd = Command::new(bin);
    cmd.args(args).env("RUST_LOG", "info");
    ChildGuard::spawn("kube-aggregator-serve", cmd, log_dir)
}

/// An HTTP response read by [`https_request`].
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// The status code.
    pub status: u16,
    /// Headers (names lower-cased), in order.
    pub headers: Vec<(String, String)>,
    /// The body (de-chunked).
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The first value of header `name` (lower-case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as text.
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON.
    pub fn json(&self) -> Result<serde_json::Value> {
        serde_json::from_slice(&self.body)
            .with_context(|| format!("not JSON: {}", self.body_text()))
    }
}

/// A TLS client configuration trusting `ca_pem`, optionally with a client certificate
/// `(cert_pem, key_pem)`. No ALPN, so the server speaks HTTP/1.1.
fn client_config(ca_pem: &str, identity: Option<(&str, &str)>) -> Result<rustls::ClientConfig> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c?)?;
    }
    let builder = rustls::ClientConfig::builder().with_root_certificates(roots);
    Ok(match identity {
        Some((cert, key)) => {
            let chain: Vec<CertificateDer<'static>> =
                CertificateDer::pem_slice_iter(cert.as_bytes()).collect::<Result<_, _>>()?;
            builder.with_client_auth_cert(chain, PrivateKeyDer::from_pem_slice(key.as_bytes())?)?
        }
        None => builder.with_no_client_auth(),
    })
}

/// One blocking HTTPS/1.1 connection for what [`https_request`] cannot do: reading a
/// streamed (chunked) body piece by piece, or taking over the connection after an upgrade.
pub struct HttpsConn {
    tls: rustls::StreamOwned<rustls::ClientConnection, TcpStream>,
}

impl std::fmt::Debug for HttpsConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpsConn").finish_non_exhaustive()
    }
}

impl HttpsConn {
    /// Connects to `addr` (server name `localhost`), reads time out after 10 s.
    pub fn connect(
        addr: SocketAddr,
        ca_pem: &str,
        identity: Option<(&str, &str)>,
    ) -> Result<HttpsConn> {
        let conn = rustls::ClientConnection::new(
            Arc::new(client_config(ca_pem, identity)?),
            ServerName::try_from("localhost")?.to_owned(),
        )?;
        let tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
        Ok(HttpsConn {
            tls: rustls::StreamOwned::new(conn, tcp),
        })
    }

    /// Sends a request without a body (and without `Connection: close`) and reads the
    /// response head: status and headers (names lower-case).
    pub fn request_head(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<(u16, Vec<(String, String)>)> {
        let mut head = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\n");
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        self.tls.write_all(head.as_bytes())?;
        self.tls.flush()?;
        crate::backend::read_head(&mut self.tls)
    }

    /// The next chunk of a chunked body (`None` at its end).
    pub fn read_chunk(&mut self) -> Result<Option<Vec<u8>>> {
        let line = self.read_line()?;
        let size = usize::from_str_radix(line.split(';').next().unwrap_or_default().trim(), 16)
            .with_context(|| format!("bad chunk size line {line:?}"))?;
        if size == 0 {
            let _ = self.read_line();
            return Ok(None);
        }
        let mut chunk = vec![0u8; size];
        self.tls.read_exact(&mut chunk)?;
        let mut crlf = [0u8; 2];
        self.tls.read_exact(&mut crlf)?;
        Ok(Some(chunk))
    }

    fn read_line(&mut self) -> Result<String> {
        let mut line = Vec::new();
        let mut byte = [0u8; 1];
        while !line.ends_with(b"\r\n") {
            if self.tls.read(&mut byte)? == 0 {
                bail!("EOF in a chunk size line");
            }
            line.push(byte[0]);
        }
        line.truncate(line.len() - 2);
        Ok(String::from_utf8_lossy(&line).into_owned())
    }

    /// The connection itself (after a 101: the tunnel).
    pub fn stream(&mut self) -> &mut rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
        &mut self.tls
    }
}

/// One blocking HTTPS/1.1 request (`Connection: close`), trusting `ca_pem`, optionally with a
/// client certificate `(cert_pem, key_pem)`.
pub fn https_request(
    addr: SocketAddr,
    ca_pem: &str,
    identity: Option<(&str, &str)>,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<HttpResponse> {
    let conn = rustls::ClientConnection::new(
        Arc::new(client_config(ca_pem, identity)?),
        ServerName::try_from("localhost")?.to_owned(),
    )?;
    let tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    tcp.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    tls.write_all(head.as_bytes())?;
    tls.write_all(body)?;
    tls.flush()?;
    let mut raw = Vec::new();
    match tls.read_to_end(&mut raw) {
        Ok(_) => {}
        // A peer that closes without close_notify after a complete response is fine here.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !raw.is_empty() => {}
        Err(e) => return Err(e.into()),
    }
    parse_response(&raw)
}

fn parse_response(raw: &[u8]) -> Result<HttpResponse> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no end of response head")?;
    let head = String::from_utf8_lossy(&raw[..end]);
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("bad status line {status_line:?}"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut body = raw[end + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    if chunked {
        body = dechunk(&body)?;
    }
    Ok(HttpResponse {
        status,
        headers,
        body,
    })
}

fn dechunk(mut b: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = b
            .windows(2)
            .position(|w| w == b"\r\n")
            .context("bad chunk size line")?;
        let size_text = String::from_utf8_lossy(&b[..line_end]);
        let size =
            usize::from_str_radix(size_text.split(';').next().unwrap_or_default().trim(), 16)?;
        b = &b[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        if b.len() < size + 2 {
            bail!("truncated chunk");
        }
        out.extend_from_slice(&b[..size]);
        b = &b[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_chunked_responses() -> Result<()> {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        let r = parse_response(raw)?;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(r.body, b"abcde");
        Ok(())
    }
}
