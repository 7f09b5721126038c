//! A loopback HTTP server that can stop listening and come back on the same port, so that a
//! URL written into the broker's configuration stays valid across an outage.
//!
//! While down, the port is held by a socket that is bound but not listening: connecting is
//! refused (as it is to a host whose service died), and no other socket on this machine can
//! take the port in the meantime. Coming back, that same socket starts listening.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use axum::Router;
use tokio::net::TcpSocket;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

enum Phase {
    Up {
        stop: oneshot::Sender<()>,
        serving: JoinHandle<std::io::Result<()>>,
    },
    Down {
        held: TcpSocket,
    },
    /// Between the two, inside `go_down` and `come_up`.
    Changing,
}

pub(super) struct Listener {
    addr: SocketAddr,
    router: Router,
    phase: Mutex<Phase>,
}

impl Listener {
    /// Serves `router` on `127.0.0.1:<a port the OS picks>`.
    pub(super) fn start(router: Router) -> Listener {
        let held = bound(SocketAddr::from(([127, 0, 0, 1], 0)))
            .unwrap_or_else(|e| panic!("binding a loopback port: {e}"));
        let addr = held.local_addr().unwrap();
        let listener = Listener {
            addr,
            router,
            phase: Mutex::new(Phase::Changing),
        };
        *listener.phase.lock().unwrap() = listener.serve(held);
        listener
    }

    pub(super) fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub(super) fn is_up(&self) -> bool {
        matches!(*self.phase.lock().unwrap(), Phase::Up { .. })
    }

    /// Stops listening and closes every connection; returns once new connections are
    /// refused. Requests still being answered get five seconds.
    pub(super) async fn go_down(&self) {
        let phase = std::mem::replace(&mut *self.phase.lock().unwrap(), Phase::Changing);
        let Phase::Up { stop, mut serving } = phase else {
            *self.phase.lock().unwrap() = phase;
            return;
        };
        let _ = stop.send(());
        // axum drops the listener at once, then waits for open connections to finish.
        if tokio::time::timeout(Duration::from_secs(5), &mut serving)
            .await
            .is_err()
        {
            serving.abort();
        }
        // Take the port back as soon as the listener has let it go.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let held = loop {
            match bound(self.addr) {
                Ok(held) => break held,
                Err(e) if std::time::Instant::now() >= deadline => {
                    panic!("holding {} while down: {e}", self.addr)
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        };
        *self.phase.lock().unwrap() = Phase::Down { held };
    }

    /// Listens again on the same port (bound before this returns).
    pub(super) fn come_up(&self) {
        let mut phase = self.phase.lock().unwrap();
        *phase = match std::mem::replace(&mut *phase, Phase::Changing) {
            Phase::Down { held } => self.serve(held),
            other => other,
        };
    }

    fn serve(&self, held: TcpSocket) -> Phase {
        let listener = held
            .listen(1024)
            .unwrap_or_else(|e| panic!("listening on {}: {e}", self.addr));
        let (stop, stopped) = oneshot::channel::<()>();
        let serving = tokio::spawn(
            axum::serve(listener, self.router.clone())
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .into_future(),
        );
        Phase::Up { stop, serving }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Ok(mut phase) = self.phase.lock()
            && let Phase::Up { serving, .. } = std::mem::replace(&mut *phase, Phase::Changing)
        {
            serving.abort();
        }
    }
}

/// A socket bound to `addr` (address reuse on, for connections still in TIME_WAIT) that
/// does not listen yet.
fn bound(addr: SocketAddr) -> std::io::Result<TcpSocket> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    Ok(socket)
}
