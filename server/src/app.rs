//! Application assembly: builds the state, binds the listeners, and runs the API until it is
//! asked to stop (graceful shutdown on SIGTERM and ctrl-c).

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;

use anyhow::Context;
use axum_server::Handle;
use axum_server::accept::NoDelayAcceptor;

use crate::audit::AuditWriter;
use crate::audit::export::Exports;
use crate::auth::cache::AuthCache;
use crate::auth::oidc::Issuers;
use crate::auth::token::TokenKeys;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::metrics::cloudwatch::Publisher;
use crate::sts::Sts;
use crate::sts::cache::AssumedRoleCache;
use crate::{db, http};

pub use crate::state::{AppState, Inner};

/// Stops a running [`Application`] (graceful or immediate).
pub type ServerHandle = Handle<SocketAddr>;

/// A built application: listeners bound, database migrated, ready to run.
pub struct Application {
    state: AppState,
    api_listener: TcpListener,
    metrics_listener: TcpListener,
    handle: Handle<SocketAddr>,
    /// Set when CloudWatch publishing is on; flushed once on the way out.
    cloudwatch: Option<Publisher>,
}

impl Application {
    /// Connects to (and creates, and migrates) the database, loads the signing key, and binds
    /// both listeners. Port 0 picks a free port; see [`Application::port`].
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let db = db::connect_and_migrate(&config.database_url, config.db_max_connections).await?;
        let keys = Arc::new(TokenKeys::load_or_generate(&config)?);
        let sdk = crate::aws::sdk_config(&config).await;
        let metrics = Metrics::new()?;
        let sts = Sts::new(&config, &sdk, metrics.sts());
        let api_listener = bind(config.listen_addr)?;
        let metrics_listener = bind(config.metrics_addr)?;
        let (metrics, cloudwatch) = match Publisher::start(&config, &sdk, metrics.cloudwatch()) {
            Some((recorder, publisher)) => (metrics.with_cloudwatch(recorder), Some(publisher)),
            None => (metrics, None),
        };
        crate::metrics::spawn_active_sessions(db.clone(), metrics.clone());
        if let Some(retention) = config.audit_retention {
            crate::audit::retention::spawn(db.clone(), retention);
        }
        // An audit write that cannot finish well within the request timeout fails the request
        // (503, no credentials) instead of holding it.
        let audit = AuditWriter::start(db.clone(), config.request_timeout / 2, metrics.clone());
        let assumed_roles = AssumedRoleCache::new(config.denied_cache);
        let exports = Exports::new(config.export_idle, config.export_max, metrics.clone());
        let auth_cache = Arc::new(AuthCache::new(config.auth_cache));
        let issuers = Issuers::new(&config.oidc_issuers, &metrics.oidc())?;
        crate::auth::cache::spawn_listener(db.clone(), auth_cache.clone());
        let outbox = crate::events::Outbox::new(config.webhooks.clone(), metrics.events().clone());
        crate::events::deliver::spawn(db.clone(), outbox.clone(), metrics.events().clone())?;
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("lanyard/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let state = AppState(Arc::new(Inner {
            config,
            db,
            keys,
            sts,
            metrics,
            audit,
            assumed_roles,
            auth_cache,
            exports,
            issuers,
            outbox,
            http,
            validations: tokio::sync::Semaphore::new(2),
        }));
        Ok(Application {
            state,
            api_listener,
            metrics_listener,
            handle: Handle::new(),
            cloudwatch,
        })
    }

    /// The application with its audit writer replaced by one that writes nothing, for the
    /// audit-off benchmark only (`tests/bench P3`; see [`AuditWriter::discarding`]).
    #[cfg(feature = "bench-unaudited")]
    pub fn without_audit_for_benchmark(mut self) -> anyhow::Result<Self> {
        let inner =
            Arc::get_mut(&mut self.state.0).context("the application's state is already shared")?;
        inner.audit = AuditWriter::discarding();
        Ok(self)
    }

    pub fn port(&self) -> u16 {
        self.api_listener
            .local_addr()
            .map(|a| a.port())
            .unwrap_or(0)
    }

    pub fn metrics_port(&self) -> u16 {
        self.metrics_listener
            .local_addr()
            .map(|a| a.port())
            .unwrap_or(0)
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// A handle that stops the server gracefully when asked (tests use it; `run_until_stopped`
    /// also stops on SIGTERM and ctrl-c).
    pub fn handle(&self) -> Handle<SocketAddr> {
        self.handle.clone()
    }

    /// Serves until SIGTERM, ctrl-c or the handle asks to stop, then lets in-flight requests
    /// finish within the configured grace period.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let Application {
            state,
            api_listener,
            metrics_listener,
            handle,
            cloudwatch,
        } = self;
        let grace = state.config.shutdown_grace;
        let tls = state.config.tls.clone();
        let app = http::router(state.clone()).into_make_service_with_connect_info::<SocketAddr>();
        let metrics_app = state.metrics.router();

        // One control drives both listeners: a shutdown drains the API and stops metrics.
        let metrics_handle: Handle<SocketAddr> = Handle::with_control(handle.control());
        let metrics_task = tokio::spawn(
            axum_server::from_tcp(metrics_listener)?
                .handle(metrics_handle)
                .serve(metrics_app.into_make_service()),
        );

        let signal_handle = handle.clone();
        tokio::spawn(async move {
            shutdown_signal().await;
            tracing::info!("shutdown requested; draining in-flight requests");
            signal_handle.graceful_shutdown(Some(grace));
        });

        tracing::info!(
            addr = %api_listener.local_addr()?,
            metrics = %state.config.metrics_addr,
            tls = tls.is_some(),
            "lanyard-server listening"
        );
        let result = match tls {
            Some(files) => {
                let rustls = crate::tls::load(&files).await?;
                crate::tls::spawn_reloader(rustls.clone(), files);
                axum_server::from_tcp_rustls(api_listener, rustls)?
                    .map(|tls| tls.acceptor(NoDelayAcceptor::new()))
                    .handle(handle.clone())
                    .serve(app)
                    .await
            }
            None => {
                // Small responses go out at once: without TCP_NODELAY, Nagle's algorithm and
                // delayed ACKs hold some of them back ~40 ms on keep-alive connections.
                axum_server::from_tcp(api_listener)?
                    .acceptor(NoDelayAcceptor::new())
                    .handle(handle.clone())
                    .serve(app)
                    .await
            }
        };
        handle.shutdown();
        let _ = metrics_task.await;
        if let Some(publisher) = cloudwatch {
            // Best effort, bounded: the open window goes out now rather than never.
            publisher.stop().await;
        }
        state.db.close().await;
        tracing::info!("lanyard-server stopped");
        result.context("serving the API")
    }
}

fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    let listener = TcpListener::bind(addr).with_context(|| format!("binding {addr}"))?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}
