//! The live view's local server (`pflow run … --live`): one self-contained
//! page and a server-sent-events stream of the run's live feed
//! ([`crate::telemetry::live`]), on 127.0.0.1 only.
//!
//! The run never waits on it: the feed never blocks, each client reads the
//! feed at its own pace (a slow one loses the oldest events and is told so),
//! and [`LiveServer::close`] gives clients a short grace to receive the `end`
//! event before every connection is dropped and the port closed.
//!
//! Every path starts with a random per-run token (`/TOKEN/`, `/TOKEN/events`):
//! 127.0.0.1 is reachable by every user of the machine, while the run's
//! trace files are its owner's alone (0600), so only whoever holds the URL
//! (printed on the owner's stderr, and in the owner's 0600 discovery file)
//! can read the stream.
//!
//! While it runs, a discovery file `$PFLOW_HOME/traces/live/<pid>.json` names
//! its URL, so `pflow trace tail` (see [`tail`]) can find and follow the run.

pub mod tail;

use crate::telemetry::live::{FeedItem, LiveFeed, Subscription};
use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use std::convert::Infallible;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

/// How long clients get to receive the `end` event before the server closes.
pub const CLOSE_GRACE: Duration = Duration::from_millis(1500);

/// A comment line sent this often keeps idle connections (and proxies) open.
const KEEPALIVE: Duration = Duration::from_secs(10);

/// The page's content security policy: no network but its own event stream.
pub const CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; connect-src 'self'; img-src data:";

const PAGE: &str = include_str!("page.html");

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    #[error("cannot serve the live view on 127.0.0.1:{port}: {source}")]
    Bind {
        port: u16,
        #[source]
        source: std::io::Error,
    },
}

/// The running server; [`LiveServer::close`] stops it.
pub struct LiveServer {
    addr: SocketAddr,
    token: Arc<str>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    discovery: Option<PathBuf>,
}

/// What a discovery file holds.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Discovery {
    pub url: String,
    pub pid: u32,
    /// RFC 3339.
    pub started: String,
}

/// Where live runs announce themselves: `$PFLOW_HOME/traces/live`.
pub fn discovery_dir(home: &Path) -> PathBuf {
    home.join("traces").join("live")
}

type Body = BoxBody<Bytes, Infallible>;

impl LiveServer {
    /// Binds 127.0.0.1:`port` (0: any free port) and serves `feed`; the
    /// discovery file goes under `home` (a failure to write it only costs `trace tail`).
    pub async fn start(feed: LiveFeed, port: u16, home: &Path) -> Result<LiveServer, LiveError> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, port))
            .await
            .map_err(|source| LiveError::Bind { port, source })?;
        let addr = listener
            .local_addr()
            .map_err(|source| LiveError::Bind { port, source })?;
        let (stop, stopped) = watch::channel(false);
        let token: Arc<str> = new_token().into();
        let task = tokio::spawn(serve(listener, feed, addr, token.clone(), stopped));
        let mut server = LiveServer {
            addr,
            token,
            stop,
            task,
            discovery: None,
        };
        server.discovery = write_discovery(home, &server.url());
        Ok(server)
    }

    /// `http://127.0.0.1:PORT/TOKEN/`.
    pub fn url(&self) -> String {
        format!("http://{}/{}/", self.addr, self.token)
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Stops the server once the feed has ended (or at once when it never
    /// will): clients that are still reading get [`CLOSE_GRACE`] to receive
    /// the rest, then every connection is dropped and the port closed.
    pub async fn close(self) {
        if let Some(d) = &self.discovery {
            let _ = std::fs::remove_file(d);
        }
        let _ = self.stop.send(true);
        let mut task = self.task;
        if tokio::time::timeout(CLOSE_GRACE, &mut task).await.is_err() {
            task.abort();
            let _ = task.await;
        }
    }
}

/// 128 random bits in hex: the path prefix only the URL's holder knows.
fn new_token() -> String {
    let b: [u8; 16] = rand::random();
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn write_discovery(home: &Path, url: &str) -> Option<PathBuf> {
    let dir = discovery_dir(home);
    crate::telemetry::file::ensure_dir(&dir).ok()?;
    let path = dir.join(format!("{}.json", std::process::id()));
    let d = Discovery {
        url: url.to_string(),
        pid: std::process::id(),
        started: chrono::Utc::now().to_rfc3339(),
    };
    let json = serde_json::to_vec(&d).ok()?;
    // Written whole, then renamed: a reader never sees half a file.
    let tmp = dir.join(format!(".{}.json.tmp", std::process::id()));
    // 0600, like the trace files: the URL in it is the key to the stream.
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    o.open(&tmp).and_then(|mut f| f.write_all(&json)).ok()?;
    std::fs::rename(&tmp, &path).ok()?;
    Some(path)
}

/// Accepts connections until told to stop, then lets the open ones finish
/// (each closes its idle keep-alive and ends its stream at the `end` event).
async fn serve(
    listener: TcpListener,
    feed: LiveFeed,
    addr: SocketAddr,
    token: Arc<str>,
    mut stopped: watch::Receiver<bool>,
) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let feed = feed.clone();
                let stop = stopped.clone();
                conns.spawn(connection(stream, feed, addr, token.clone(), stop));
            }
            _ = stopped.changed() => break,
            // Reap finished connections so the set does not grow.
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    drop(listener);
    while conns.join_next().await.is_some() {}
}

async fn connection(
    stream: tokio::net::TcpStream,
    feed: LiveFeed,
    addr: SocketAddr,
    token: Arc<str>,
    mut stop: watch::Receiver<bool>,
) {
    let io = hyper_util::rt::TokioIo::new(stream);
    let service = hyper::service::service_fn(move |req| {
        let feed = feed.clone();
        let token = token.clone();
        async move { Ok::<_, Infallible>(handle(req, &feed, addr, &token)) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(Duration::from_secs(10))
        .serve_connection(io, service);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = async { stop.wait_for(|s| *s).await.is_ok() } => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

fn handle(
    req: Request<Incoming>,
    feed: &LiveFeed,
    addr: SocketAddr,
    token: &str,
) -> Response<Body> {
    // Only our own origin: a page elsewhere that resolves its name to
    // 127.0.0.1 (DNS rebinding) sends its own Host and is refused.
    let host_ok = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .is_some_and(|h| {
            h == format!("127.0.0.1:{}", addr.port()) || h == format!("localhost:{}", addr.port())
        });
    if !host_ok {
        return plain(StatusCode::FORBIDDEN, "forbidden: unexpected Host\n");
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return plain(StatusCode::METHOD_NOT_ALLOWED, "only GET\n");
    }
    // Without the token, nothing is here (not even a hint that something is).
    let Some(path) = req
        .uri()
        .path()
        .strip_prefix('/')
        .and_then(|p| p.strip_prefix(token))
    else {
        return plain(StatusCode::NOT_FOUND, "not found\n");
    };
    match path {
        // `EventSource("events")` is relative: the page must be at `/TOKEN/`.
        "" => {
            let mut r = plain(StatusCode::PERMANENT_REDIRECT, "");
            if let Ok(v) = header::HeaderValue::from_str(&format!("/{token}/")) {
                r.headers_mut().insert(header::LOCATION, v);
            }
            r
        }
        "/" | "/index.html" => page(),
        "/events" => {
            let once = req
                .uri()
                .query()
                .is_some_and(|q| q.split('&').any(|p| p == "once=1"));
            let last = req
                .headers()
                .get("last-event-id")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok());
            events(feed, last, once)
        }
        "/run" => {
            let body = serde_json::to_string(&feed.run_start()).unwrap_or_else(|_| "null".into());
            response(StatusCode::OK, "application/json", body)
        }
        _ => plain(StatusCode::NOT_FOUND, "not found\n"),
    }
}

fn response(status: StatusCode, content_type: &'static str, body: String) -> Response<Body> {
    with_headers(Full::new(Bytes::from(body)).boxed(), status, content_type)
}

/// Every response: its type, never cached, never sniffed as another type.
fn with_headers(body: Body, status: StatusCode, content_type: &'static str) -> Response<Body> {
    let mut r = Response::new(body);
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    h.insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        header::HeaderValue::from_static("nosniff"),
    );
    r
}

fn plain(status: StatusCode, text: &str) -> Response<Body> {
    response(status, "text/plain; charset=utf-8", text.to_string())
}

fn page() -> Response<Body> {
    let mut r = response(
        StatusCode::OK,
        "text/html; charset=utf-8",
        PAGE.replace("{{CSP}}", CSP)
            .replace("{{VERSION}}", env!("CARGO_PKG_VERSION")),
    );
    r.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        header::HeaderValue::from_static(CSP),
    );
    r.headers_mut().insert(
        header::REFERRER_POLICY,
        header::HeaderValue::from_static("no-referrer"),
    );
    r
}

/// One server-sent event: `id`, `event` and one `data` line (the JSON has no newline).
pub fn sse_frame(seq: u64, name: &str, json: &str) -> Bytes {
    Bytes::from(format!("id: {seq}\nevent: {name}\ndata: {json}\n\n"))
}

/// The stream of one client: the history, then events as they come, until
/// `end` (or, with `once`, until the history is sent).
fn events(feed: &LiveFeed, last_seen: Option<u64>, once: bool) -> Response<Body> {
    let mut sub = feed.subscribe();
    if let Some(seq) = last_seen {
        sub.skip_through(seq);
    }
    let mut head = String::from("retry: 1000\n\n");
    if sub.forgotten > 0 && last_seen.is_none() {
        head.push_str(&format!(
            "event: lagged\ndata: {{\"missed\":{}}}\n\n",
            sub.forgotten
        ));
    }
    struct St {
        sub: Subscription,
        head: Option<Bytes>,
        once: bool,
        done: bool,
        tick: tokio::time::Interval,
    }
    let mut tick = tokio::time::interval(KEEPALIVE);
    tick.reset();
    let st = St {
        sub,
        head: Some(Bytes::from(head)),
        once,
        done: false,
        tick,
    };
    let stream = futures::stream::unfold(st, |mut st| async move {
        if let Some(h) = st.head.take() {
            return Some((Ok(Frame::data(h)), st));
        }
        if st.done {
            return None;
        }
        if st.once && st.sub.backlog_empty() {
            return None;
        }
        let item = tokio::select! {
            item = st.sub.next() => item,
            _ = st.tick.tick() => return Some((Ok(Frame::data(Bytes::from_static(b": keep-alive\n\n"))), st)),
        };
        let bytes = match item {
            Some(FeedItem::Event(e)) => {
                st.done = st.sub.is_ended();
                sse_frame(e.seq, e.kind.name(), &e.json)
            }
            Some(FeedItem::Lagged(n)) => {
                Bytes::from(format!("event: lagged\ndata: {{\"missed\":{n}}}\n\n"))
            }
            None => return None,
        };
        Some((Ok::<_, Infallible>(Frame::data(bytes)), st))
    });
    with_headers(
        BodyExt::boxed(StreamBody::new(stream)),
        StatusCode::OK,
        "text/event-stream",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_well_formed_server_sent_events() {
        assert_eq!(
            sse_frame(3, "span", "{\"a\":1}"),
            Bytes::from("id: 3\nevent: span\ndata: {\"a\":1}\n\n")
        );
    }

    #[test]
    fn the_page_fetches_nothing_but_its_own_stream() {
        assert!(PAGE.contains("{{CSP}}"));
        for external in ["http://", "https://", "src=\"//"] {
            assert!(!PAGE.contains(external), "{external}");
        }
        assert!(CSP.starts_with("default-src 'none'"));
        assert!(CSP.contains("connect-src 'self'"));
    }
}
