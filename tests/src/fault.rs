//! A TCP fault proxy for tests: sits between the application and a dependency (Postgres,
//! moto/STS, anything speaking TCP) and, on command, makes that dependency look dead, slow
//! or stuck, without touching the dependency itself.
//!
//! ```no_run
//! # async fn demo(upstream: std::net::SocketAddr) {
//! let proxy = lanyard_tests::FaultProxy::start(upstream).await;
//! // point the application at proxy.addr() instead of upstream, then:
//! proxy.cut().await; // open connections closed, new ones refused
//! proxy.restore();   // forwards normally again
//! # }
//! ```
//!
//! Faults are signalled through a `tokio::sync::watch` channel that the accept loop and
//! every connection task watch, so they take effect at once; `cut` returns only when the
//! fault is complete. The proxy never sleeps except to add the latency asked for.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Forward bytes both ways (after the configured delay).
    Forward,
    /// Keep connections open but forward nothing until released.
    Hold,
    /// Close every connection and the listener: connecting is refused.
    Refuse,
    /// Close every connection; accept new ones and close them at once.
    CloseOnAccept,
}

impl Mode {
    fn severed(self) -> bool {
        matches!(self, Mode::Refuse | Mode::CloseOnAccept)
    }
}

#[derive(Debug, Clone, Copy)]
struct Faults {
    mode: Mode,
    /// Added before each chunk is forwarded, in either direction.
    delay: Duration,
}

struct Shared {
    addr: SocketAddr,
    upstream: SocketAddr,
    faults: watch::Sender<Faults>,
    /// Whether the accept loop holds a bound listener.
    listening: watch::Sender<bool>,
    /// A listener bound by `restore` after a `cut`, for the accept loop to take.
    rebound: Mutex<Option<TcpListener>>,
    /// Client connections open through the proxy.
    open: watch::Sender<usize>,
    /// Chunks being held back by `hold`.
    held: watch::Sender<usize>,
}

/// A TCP proxy on `127.0.0.1:<free port>` forwarding to one upstream address. Dropping it
/// closes its listener and every connection through it.
pub struct FaultProxy {
    shared: Arc<Shared>,
    accept: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    /// Starts a proxy to `upstream`; it forwards normally until told otherwise.
    pub async fn start(upstream: SocketAddr) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let shared = Arc::new(Shared {
            addr: listener.local_addr().unwrap(),
            upstream,
            faults: watch::Sender::new(Faults {
                mode: Mode::Forward,
                delay: Duration::ZERO,
            }),
            listening: watch::Sender::new(true),
            rebound: Mutex::new(None),
            open: watch::Sender::new(0),
            held: watch::Sender::new(0),
        });
        let accept = tokio::spawn(accept_loop(listener, shared.clone()));
        FaultProxy { shared, accept }
    }

    /// The address to give the application instead of the upstream's.
    pub fn addr(&self) -> SocketAddr {
        self.shared.addr
    }

    /// A dead upstream host: closes every open connection and stops listening, so new
    /// connections are refused. Returns once both are done.
    pub async fn cut(&self) {
        self.sever(Mode::Refuse).await;
    }

    /// A front end (load balancer, pooler) whose upstream died: closes every open
    /// connection, and accepts new ones only to close them at once. Returns once no
    /// connection is open.
    pub async fn cut_accepting(&self) {
        self.sever(Mode::CloseOnAccept).await;
    }

    async fn sever(&self, mode: Mode) {
        self.set_mode(mode);
        let listening = mode == Mode::CloseOnAccept;
        // The senders live in `self.shared`: these channels cannot close while we wait.
        let shared = &self.shared;
        let _ = shared
            .listening
            .subscribe()
            .wait_for(|l| *l == listening)
            .await;
        let _ = shared.open.subscribe().wait_for(|n| *n == 0).await;
    }

    /// Clears every fault (cut, hold, delay): the proxy listens again on the same address
    /// (bound before this returns) and forwards normally; held chunks go on.
    pub fn restore(&self) {
        self.set_mode(Mode::Forward);
        self.delay(Duration::ZERO);
    }

    fn set_mode(&self, mode: Mode) {
        let addr = self.shared.addr;
        if self.shared.faults.borrow().mode == Mode::Refuse && mode != Mode::Refuse {
            // Bound here, so that nobody is refused once this returns; the accept loop takes it.
            let listener = std::net::TcpListener::bind(addr)
                .unwrap_or_else(|e| panic!("listening again on {addr}: {e}"));
            listener.set_nonblocking(true).unwrap();
            *self.shared.rebound.lock().unwrap() = Some(TcpListener::from_std(listener).unwrap());
        }
        self.shared.faults.send_modify(|f| f.mode = mode);
    }

    /// Adds `latency` before every chunk forwarded, in both directions, from now on.
    pub fn delay(&self, latency: Duration) {
        self.shared.faults.send_modify(|f| f.delay = latency);
    }

    /// A stuck upstream: connections stay open (new ones too) but nothing is forwarded;
    /// what either side sends waits in the proxy until [`FaultProxy::restore`].
    pub fn hold(&self) {
        self.set_mode(Mode::Hold);
    }

    /// Waits until at least one chunk is held back by [`FaultProxy::hold`]: someone is
    /// now waiting on the upstream.
    pub async fn held(&self) {
        let _ = self.shared.held.subscribe().wait_for(|n| *n > 0).await;
    }

    /// Client connections open through the proxy now.
    pub fn open_connections(&self) -> usize {
        *self.shared.open.borrow()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.shared.faults.send_modify(|f| f.mode = Mode::Refuse);
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut faults = shared.faults.subscribe();
    let mut listener = Some(listener);
    loop {
        let mode = faults.borrow_and_update().mode;
        if mode == Mode::Refuse {
            listener = None;
        } else if listener.is_none() {
            listener = shared.rebound.lock().unwrap().take();
        }
        shared.listening.send_replace(listener.is_some());
        let Some(bound) = &listener else {
            if faults.changed().await.is_err() {
                return;
            }
            continue;
        };
        let client = tokio::select! {
            biased;
            _ = faults.changed() => continue,
            accepted = bound.accept() => match accepted {
                Ok((client, _)) => client,
                // A connection aborted before it was accepted, or no file descriptor left.
                Err(_) => {
                    tokio::task::yield_now().await;
                    continue;
                }
            },
        };
        if mode.severed() {
            continue; // dropped: closed at once
        }
        shared.open.send_modify(|n| *n += 1);
        tokio::spawn(connection(client, shared.clone()));
    }
}

/// Forwards one client connection until either side closes it or the proxy is cut.
async fn connection(client: TcpStream, shared: Arc<Shared>) {
    let mut faults = shared.faults.subscribe();
    tokio::select! {
        biased;
        // Checks the current mode first, so a cut that raced the accept still wins.
        _ = faults.wait_for(|f| f.mode.severed()) => {}
        _ = relay(client, &shared) => {}
    }
    // Both sockets are closed by now (dropped with the relay).
    shared.open.send_modify(|n| *n -= 1);
}

async fn relay(client: TcpStream, shared: &Shared) -> std::io::Result<()> {
    let server = TcpStream::connect(shared.upstream).await?;
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    tokio::try_join!(
        pump(client_read, server_write, shared),
        pump(server_read, client_write, shared),
    )?;
    Ok(())
}

/// Copies one direction, applying the current faults to every chunk; passes EOF on as a
/// half-close.
async fn pump(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    shared: &Shared,
) -> std::io::Result<()> {
    let mut faults = shared.faults.subscribe();
    let mut buf = vec![0_u8; 16 * 1024];
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            return to.shutdown().await;
        }
        let delay = faults.borrow_and_update().delay;
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        if faults.borrow().mode == Mode::Hold {
            let _held = Counted::new(&shared.held);
            let released = faults
                .wait_for(|f| f.mode != Mode::Hold)
                .await
                .map(|f| f.mode);
            if !matches!(released, Ok(Mode::Forward)) {
                return Ok(()); // cut while held (the connection task closes both sides)
            }
        }
        to.write_all(&buf[..n]).await?;
    }
}

/// Adds one to a counter for as long as it lives, so that cancellation keeps it right.
struct Counted<'a>(&'a watch::Sender<usize>);

impl<'a> Counted<'a> {
    fn new(counter: &'a watch::Sender<usize>) -> Self {
        counter.send_modify(|n| *n += 1);
        Counted(counter)
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n -= 1);
    }
}

/// The socket address of `host:port` in a URL such as `postgres://u@host:port/db` or
/// `http://host:port`.
pub async fn socket_of(url: &str, default_port: u16) -> SocketAddr {
    let (_, rest) = url.split_once("://").unwrap();
    let authority = rest.split('/').next().unwrap();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host_port = if host_port.contains(':') {
        host_port.to_owned()
    } else {
        format!("{host_port}:{default_port}")
    };
    tokio::net::lookup_host(host_port.as_str())
        .await
        .unwrap()
        .find(SocketAddr::is_ipv4)
        .unwrap_or_else(|| panic!("{host_port} does not resolve to an IPv4 address"))
}

/// `url` with its `host:port` replaced by `addr` (user, database and parameters kept).
pub fn through(url: &str, addr: SocketAddr) -> String {
    let (scheme, rest) = url.split_once("://").unwrap();
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let user = authority
        .rsplit_once('@')
        .map_or(String::new(), |(u, _)| format!("{u}@"));
    format!("{scheme}://{user}{addr}{path}")
}
