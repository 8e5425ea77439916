//! Pooled HTTP/1.1 connections to a backend, driven inside the task of the request that uses
//! them (as nginx's workers do): no connection task, no channel hop between the request and its
//! connection, no cross-thread wake-up per request.
//!
//! A connection is checked out for one request, carries it, and goes back to the pool when its
//! response body has been read to the end and hyper reports it ready for another request; a body
//! dropped early (the client went away), a `Connection: close` answer or any error closes it
//! instead. Idle connections are kept per address, most recently used first, for the pool's idle
//! timeout. A pooled connection the backend closed meanwhile is noticed at check-out; a request
//! that could not even be written to such a connection is retried once on a fresh one, as
//! hyper-util's pool does.

use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::uri::{PathAndQuery, Scheme};
use http::{Request, Response, Uri};
use http_body::Body as _;
use hyper::body::Incoming;
use hyper::client::conn::http1;

use crate::BoxError;
use crate::body::Body;
use crate::connect::{BackendStream, Connector};
use crate::resolve::BackendAddr;

/// One HTTP/1.1 connection: hyper's request handle and the connection state machine, which
/// whoever uses the connection polls.
struct Conn {
    sender: http1::SendRequest<Body>,
    driver: http1::Connection<BackendStream, Body>,
}

impl Conn {
    /// Polls the connection once. `false` when it has ended (closed or failed).
    fn drive(&mut self, cx: &mut Context<'_>) -> bool {
        Pin::new(&mut self.driver).poll(cx).is_pending()
    }

    /// Whether it can take another request now: still open, and the previous exchange (request
    /// body included) has finished. Polls once so hyper notices an end of message or a close.
    fn reusable(&mut self, cx: &mut Context<'_>) -> bool {
        self.drive(cx) && !self.sender.is_closed() && self.sender.is_ready()
    }
}

struct Idle {
    conn: Box<Conn>,
    since: Instant,
}

/// The idle connections to one address.
struct Slot {
    addr: BackendAddr,
    idle: Vec<Idle>,
}

/// The HTTP/1.1 connection pool of one backend transport.
pub(crate) struct Http1Pool {
    connector: Connector,
    idle_timeout: Duration,
    slots: Mutex<Vec<Slot>>,
    /// Whether a task is closing expired idle connections.
    reaping: AtomicBool,
}

impl Http1Pool {
    pub(crate) fn new(connector: Connector, idle_timeout: Duration) -> Arc<Http1Pool> {
        Arc::new(Http1Pool {
            connector,
            idle_timeout,
            slots: Mutex::new(Vec::new()),
            reaping: AtomicBool::new(false),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Slot>> {
        match self.slots.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Idle connections (for tests and metrics).
    #[cfg(test)]
    pub(crate) fn idle_count(&self) -> usize {
        self.lock().iter().map(|s| s.idle.len()).sum()
    }

    /// The most recently used idle connection to `addr` that is still open.
    async fn checkout(&self, addr: &BackendAddr) -> Option<Box<Conn>> {
        loop {
            let candidate = {
                let mut slots = self.lock();
                let slot = slots.iter_mut().find(|s| s.addr == *addr)?;
                slot.idle.pop()?
            };
            if candidate.since.elapsed() >= self.idle_timeout {
                continue;
            }
            let mut conn = candidate.conn;
            // A backend that closed the connection meanwhile shows up here as a finished
            // connection; polling also registers this task for the connection's I/O.
            if poll_fn(|cx| Poll::Ready(conn.reusable(cx))).await {
                return Some(conn);
            }
        }
    }

    /// Returns a connection that finished an exchange.
    fn put(self: &Arc<Self>, addr: &BackendAddr, conn: Box<Conn>) {
        let now = Instant::now();
        let mut expired = Vec::new();
        let start_reaper = {
            let mut slots = self.lock();
            let slot = match slots.iter().position(|s| s.addr == *addr) {
                Some(i) => &mut slots[i],
                None => {
                    slots.push(Slot {
                        addr: addr.clone(),
                        idle: Vec::new(),
                    });
                    let last = slots.len() - 1;
                    &mut slots[last]
                }
            };
            // The oldest are at the front; drop those past the idle timeout.
            let keep_from = slot
                .idle
                .iter()
                .position(|i| now.duration_since(i.since) < self.idle_timeout)
                .unwrap_or(slot.idle.len());
            expired.extend(slot.idle.drain(..keep_from));
            slot.idle.push(Idle { conn, since: now });
            !self.reaping.swap(true, Ordering::AcqRel)
        };
        // Closing sockets happens outside the lock.
        drop(expired);
        if start_reaper {
            self.spawn_reaper();
        }
    }

    /// Closes idle connections once they pass the idle timeout, so a pool that is no longer
    /// used does not keep sockets open; stops when the pool is empty or gone.
    fn spawn_reaper(self: &Arc<Self>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.reaping.store(false, Ordering::Release);
            return;
        };
        let pool: Weak<Http1Pool> = Arc::downgrade(self);
        let every = (self.idle_timeout / 2).max(Duration::from_millis(10));
        runtime.spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(pool) = pool.upgrade() else {
                    return;
                };
                let now = Instant::now();
                let mut expired = Vec::new();
                let empty = {
                    let mut slots = pool.lock();
                    for slot in slots.iter_mut() {
                        let keep_from = slot
                            .idle
                            .iter()
                            .position(|i| now.duration_since(i.since) < pool.idle_timeout)
                            .unwrap_or(slot.idle.len());
                        expired.extend(slot.idle.drain(..keep_from));
                    }
                    slots.retain(|s| !s.idle.is_empty());
                    let empty = slots.is_empty();
                    if empty {
                        pool.reaping.store(false, Ordering::Release);
                    }
                    empty
                };
                drop(expired);
                if empty {
                    return;
                }
            }
        });
    }

    /// A new connection, boxed once: it moves between the pool and response bodies per request.
    async fn connect(&self, addr: &BackendAddr) -> Result<Box<Conn>, BoxError> {
        // No `?` into the boxed error: that conversion trips the higher-ranked `Send`
        // inference of callers that box these futures (rustc's "not general enough").
        let stream = match self.connector.dial(addr.host(), addr.port()).await {
            Ok(stream) => stream,
            Err(e) => return Err(Box::new(e)),
        };
        match http1::Builder::new().handshake::<_, Body>(stream).await {
            Ok((sender, driver)) => Ok(Box::new(Conn { sender, driver })),
            Err(e) => Err(Box::new(e)),
        }
    }

    /// Sends `request` (absolute URI) to `addr` over a pooled or new connection and returns the
    /// response; its body keeps the connection until it has been read or dropped.
    ///
    /// The request is written like hyper-util's pooled client writes it: origin-form target,
    /// `Host` from the URI's authority without the scheme's default port.
    pub(crate) async fn send(
        self: &Arc<Self>,
        addr: &BackendAddr,
        mut request: Request<Body>,
    ) -> Result<Response<PooledBody>, BoxError> {
        prepare(&mut request, addr);
        let mut retried = false;
        loop {
            let (conn, reused) = match self.checkout(addr).await {
                Some(conn) => (conn, true),
                None => match self.connect(addr).await {
                    Ok(conn) => (conn, false),
                    Err(error) => return Err(error),
                },
            };
            match exchange(conn, request).await {
                Ok((response, conn)) => {
                    let (head, body) = response.into_parts();
                    let body = PooledBody {
                        inner: body,
                        conn,
                        pool: Arc::downgrade(self),
                        addr: addr.clone(),
                        ended: false,
                    };
                    return Ok(Response::from_parts(head, body));
                }
                Err(mut failed) => match failed.take_message() {
                    // Never written: the pooled connection was already closing. Once.
                    Some(unsent) if reused && !retried => {
                        retried = true;
                        request = unsent;
                    }
                    _ => return Err(Box::new(failed.into_error())),
                },
            }
        }
    }
}

/// Origin-form target and `Host`, as hyper-util's client writes HTTP/1.1 requests (the
/// authority without the scheme's default port).
fn prepare(request: &mut Request<Body>, addr: &BackendAddr) {
    let (host, origin) = {
        let uri = request.uri();
        let host = uri.authority().and_then(|authority| {
            let default_port = match uri.scheme() {
                Some(s) if *s == Scheme::HTTPS => Some(443),
                Some(s) if *s == Scheme::HTTP => Some(80),
                _ => None,
            };
            let port = authority.port_u16();
            if port.is_some() && port == default_port {
                HeaderValue::from_str(authority.host()).ok()
            } else if authority == addr.authority() {
                // Prepared once per address.
                Some(addr.host_header().clone())
            } else {
                HeaderValue::from_str(authority.as_str()).ok()
            }
        });
        let origin = (uri.scheme().is_some() || uri.authority().is_some()).then(|| {
            let mut parts = http::uri::Parts::default();
            parts.path_and_query = Some(
                uri.path_and_query()
                    .cloned()
                    .unwrap_or_else(|| PathAndQuery::from_static("/")),
            );
            Uri::from_parts(parts)
        });
        (host, origin)
    };
    if let Some(host) = host
        && !request.headers().contains_key(header::HOST)
    {
        request.headers_mut().insert(header::HOST, host);
    }
    if let Some(Ok(origin)) = origin {
        *request.uri_mut() = origin;
    }
}

type Failed = hyper::client::conn::TrySendError<Request<Body>>;

/// Writes the request and drives the connection until the response head arrives.
async fn exchange(
    mut conn: Box<Conn>,
    request: Request<Body>,
) -> Result<(Response<Incoming>, Option<Box<Conn>>), Failed> {
    let mut response = pin!(conn.sender.try_send_request(request));
    let mut alive = true;
    let response = poll_fn(|cx| {
        // The connection first: it writes the request and reads the answer into `response`.
        if alive {
            alive = conn.drive(cx);
        }
        response.as_mut().poll(cx)
    })
    .await?;
    Ok((response, alive.then_some(conn)))
}

/// A response body that drives its connection while it is read, and returns the connection to
/// the pool once the body has ended.
pub(crate) struct PooledBody {
    inner: Incoming,
    conn: Option<Box<Conn>>,
    pool: Weak<Http1Pool>,
    addr: BackendAddr,
    ended: bool,
}

impl http_body::Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let mut polled = Pin::new(&mut this.inner).poll_frame(cx);
        if polled.is_pending()
            && let Some(conn) = &mut this.conn
        {
            // Nothing buffered: let the connection read more into the body, then look again.
            if !conn.drive(cx) {
                this.conn = None;
            }
            polled = Pin::new(&mut this.inner).poll_frame(cx);
        }
        if let Poll::Ready(None) = polled {
            this.ended = true;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.ended || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for PooledBody {
    fn drop(&mut self) {
        let Some(mut conn) = self.conn.take() else {
            return;
        };
        // Only a body read to its end leaves the connection between messages; one dropped
        // early still has unread bytes on the wire and is closed.
        if !(self.ended || self.inner.is_end_stream()) {
            return;
        }
        let Some(pool) = self.pool.upgrade() else {
            return;
        };
        // No task to wake here: the next user of the connection polls it with its own.
        let mut cx = Context::from_waker(Waker::noop());
        if conn.reusable(&mut cx) {
            pool.put(&self.addr, conn);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connect::Timeouts;
    use crate::tls::Roots;
    use http_body_util::BodyExt;
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    use rustls_pki_types::ServerName;
    use std::convert::Infallible;
    use std::sync::atomic::AtomicUsize;
    use tokio::net::TcpListener;

    /// A plain-HTTP backend counting connections; `/close` answers with `Connection: close`,
    /// `/big` streams 64 KiB in chunks.
    async fn backend() -> (BackendAddr, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = BackendAddr::from_socket(listener.local_addr().unwrap());
        let conns = Arc::new(AtomicUsize::new(0));
        let counter = conns.clone();
        tokio::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                let n = counter.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<Incoming>| async move {
                        let path = req.uri().path().to_owned();
                        let host = req
                            .headers()
                            .get(header::HOST)
                            .map(|h| h.to_str().unwrap_or_default().to_owned())
                            .unwrap_or_default();
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        let mut response = match path.as_str() {
                            "/big" => Response::new(crate::body::full(vec![b'x'; 65536])),
                            _ => Response::new(crate::body::full(format!(
                                "conn={n} path={path} host={host} body={}",
                                body.len()
                            ))),
                        };
                        if path == "/close" {
                            response
                                .headers_mut()
                                .insert(header::CONNECTION, HeaderValue::from_static("close"));
                        }
                        Ok::<_, Infallible>(response)
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), service)
                        .await;
                });
            }
        });
        (addr, conns)
    }

    fn pool() -> Arc<Http1Pool> {
        let connector = Connector {
            tls: None,
            server_name: ServerName::try_from("backend.test.svc").unwrap(),
            roots: Roots::Insecure,
            timeouts: Timeouts {
                connect: Duration::from_secs(5),
                handshake: Duration::from_secs(5),
            },
        };
        Http1Pool::new(connector, Duration::from_secs(90))
    }

    fn request(addr: &BackendAddr, path: &str, body: &'static str) -> Request<Body> {
        Request::builder()
            .method(if body.is_empty() { "GET" } else { "POST" })
            .uri(format!("http://{addr}{path}"))
            .body(crate::body::full(body))
            .unwrap()
    }

    async fn text(response: Response<PooledBody>) -> String {
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn sequential_requests_reuse_one_connection_with_origin_form_and_host() {
        let (addr, conns) = backend().await;
        let pool = pool();
        for i in 0..5 {
            let response = pool
                .send(&addr, request(&addr, &format!("/a/{i}?x=1"), ""))
                .await;
            let got = text(response.unwrap()).await;
            assert_eq!(got, format!("conn=0 path=/a/{i} host={addr} body=0"));
        }
        assert_eq!(conns.load(Ordering::SeqCst), 1);
        assert_eq!(pool.idle_count(), 1);
    }

    #[tokio::test]
    async fn request_bodies_are_sent_and_big_bodies_stream() {
        let (addr, conns) = backend().await;
        let pool = pool();
        let got = text(
            pool.send(&addr, request(&addr, "/p", "hello"))
                .await
                .unwrap(),
        )
        .await;
        assert!(got.ends_with("body=5"), "{got}");
        let big = pool.send(&addr, request(&addr, "/big", "")).await.unwrap();
        let mut body = big.into_body();
        let mut total = 0;
        let mut frames = 0;
        while let Some(frame) = body.frame().await {
            total += frame.unwrap().into_data().unwrap().len();
            frames += 1;
        }
        drop(body);
        assert_eq!(total, 65536);
        assert!(frames >= 1);
        let _ = text(
            pool.send(&addr, request(&addr, "/again", ""))
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(conns.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn concurrent_requests_get_their_own_connections_and_all_return() {
        let (addr, conns) = backend().await;
        let pool = pool();
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..8 {
            let pool = pool.clone();
            let addr = addr.clone();
            tasks.spawn(async move {
                text(
                    pool.send(&addr, request(&addr, &format!("/c{i}"), ""))
                        .await
                        .unwrap(),
                )
                .await
            });
        }
        while let Some(done) = tasks.join_next().await {
            done.unwrap();
        }
        let opened = conns.load(Ordering::SeqCst);
        assert!((1..=8).contains(&opened), "{opened}");
        assert_eq!(pool.idle_count(), opened);
    }

    #[tokio::test]
    async fn connection_close_and_abandoned_bodies_are_not_reused() {
        let (addr, conns) = backend().await;
        let pool = pool();
        let _ = text(
            pool.send(&addr, request(&addr, "/close", ""))
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(pool.idle_count(), 0);
        let abandoned = pool.send(&addr, request(&addr, "/big", "")).await.unwrap();
        drop(abandoned);
        assert_eq!(pool.idle_count(), 0);
        let _ = text(pool.send(&addr, request(&addr, "/x", "")).await.unwrap()).await;
        assert_eq!(conns.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_connection_the_backend_closed_is_replaced() {
        // A backend that closes every connection right after its first answer, without saying
        // so: the pooled connection is dead by the time of the second request.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = BackendAddr::from_socket(listener.local_addr().unwrap());
        let conns = Arc::new(AtomicUsize::new(0));
        let counter = conns.clone();
        tokio::spawn(async move {
            loop {
                let (mut tcp, _) = listener.accept().await.unwrap();
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    use tokio::io::{AsyncReadExt, AsyncWriteExt};
                    let mut buf = [0u8; 4096];
                    let _ = tcp.read(&mut buf).await;
                    let _ = tcp
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                        .await;
                    // Closes the socket.
                });
            }
        });
        let pool = pool();
        for _ in 0..3 {
            assert_eq!(
                text(pool.send(&addr, request(&addr, "/", "")).await.unwrap()).await,
                "ok"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(conns.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn bodies_relayed_by_a_hyper_server_return_their_connection() {
        // What the aggregator does: a hyper server answers with the pooled response body and
        // drops it after the last frame (it checks `is_end_stream` instead of polling to the end).
        let (addr, conns) = backend().await;
        let pool = pool();
        let front = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let front_addr = front.local_addr().unwrap();
        {
            let pool = pool.clone();
            let addr = addr.clone();
            tokio::spawn(async move {
                let (tcp, _) = front.accept().await.unwrap();
                let service = service_fn(move |req: Request<Incoming>| {
                    let pool = pool.clone();
                    let addr = addr.clone();
                    async move {
                        let path = req.uri().path().to_owned();
                        let response = pool.send(&addr, request(&addr, &path, "")).await.unwrap();
                        Ok::<_, Infallible>(response)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
        let tcp = tokio::net::TcpStream::connect(front_addr).await.unwrap();
        let (mut sender, conn) = http1::handshake::<_, Body>(TokioIo::new(tcp))
            .await
            .unwrap();
        tokio::spawn(conn);
        for path in ["/a", "/big", "/b", "/c"] {
            let req = Request::builder()
                .uri(path)
                .header(header::HOST, "front")
                .body(crate::body::empty())
                .unwrap();
            let response = sender.send_request(req).await.unwrap();
            let _ = response.into_body().collect().await.unwrap();
        }
        assert_eq!(conns.load(Ordering::SeqCst), 1);
        assert_eq!(pool.idle_count(), 1);
    }

    #[tokio::test]
    async fn idle_connections_expire() {
        let (addr, conns) = backend().await;
        let connector = pool().connector.clone();
        let pool = Http1Pool::new(connector, Duration::from_millis(100));
        let _ = text(pool.send(&addr, request(&addr, "/", "")).await.unwrap()).await;
        assert_eq!(pool.idle_count(), 1);
        // The reaper looks every 50 ms; a generous margin keeps this independent of load.
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(pool.idle_count(), 0);
        let _ = text(pool.send(&addr, request(&addr, "/", "")).await.unwrap()).await;
        assert_eq!(conns.load(Ordering::SeqCst), 2);
    }
}
