//! Wiring of `berth serve`: store + control actor + HTTP API (+ one in-process agent with
//! `--local`), with graceful shutdown.

use crate::agent::{self, Agent, AgentConfig};
use crate::control::{self, ControlConfig};
use crate::metrics::Metrics;
use crate::server::{self, AppState, Tokens};
use crate::store::{SqliteStore, Store};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[derive(Clone, Debug)]
pub struct ServeConfig {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub tokens: Tokens,
    pub control: ControlConfig,
    /// `--local`: also run one agent in this process against the local Docker engine.
    pub local_agent: Option<LocalAgent>,
}

#[derive(Clone, Debug)]
pub struct LocalAgent {
    pub name: String,
    pub isolation: crate::docker::Isolation,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("store: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("control plane: {0}")]
    Control(String),
    #[error("listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("local agent: {0}")]
    Agent(#[from] agent::AgentError),
}

/// A running control plane.
pub struct Running {
    pub addr: SocketAddr,
    pub agent: Option<Agent>,
    shutdown: tokio::sync::watch::Sender<bool>,
    server: tokio::task::JoinHandle<()>,
}

impl Running {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting requests, lets in-flight ones finish (at most `grace`), stops the agent.
    pub async fn shutdown(self, grace: Duration) {
        let _ = self.shutdown.send(true);
        let _ = tokio::time::timeout(grace, self.server).await;
        if let Some(a) = self.agent {
            a.stop();
        }
    }
}

/// Starts the control plane (and the local agent) and returns once it listens.
pub async fn start(config: ServeConfig) -> Result<Running, ServeError> {
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&config.data_dir)?);
    let metrics = Arc::new(Metrics::default());
    #[allow(unused_mut)]
    let mut control = config.control.clone();
    // EC2 pools: the instance specs come from DescribeInstanceTypes (prices from the shipped
    // catalogue) before the controller is built, so it plans with what EC2 launches.
    #[cfg(feature = "ec2")]
    let cloud = match control.ec2.clone() {
        Some(ec2) => {
            let pools = Arc::new(crate::ec2::Ec2Pools::connect(ec2.clone(), control.seed).await);
            let (catalog, source) = pools
                .instance_catalog(&control.catalog)
                .await
                .map_err(|e| ServeError::Control(format!("pools file: {e}")))?;
            tracing::info!(%source, "EC2 pool instance specs");
            control.catalog = Arc::new(catalog);
            if control.controller.pools.is_empty() {
                control.controller.pools = ec2.pool_specs(&control.catalog);
            }
            pools
                .ensure_launch_templates()
                .await
                .map_err(|e| ServeError::Control(format!("EC2 pools: {e}")))?;
            let (tx, rx) = tokio::sync::mpsc::channel(crate::cloud::CLOUD_QUEUE_MAX);
            control.cloud = Some(tx);
            Some((pools, rx))
        }
        None => None,
    };
    let (handle, _actor) = control::spawn(control.clone(), store.clone(), metrics.clone())
        .map_err(ServeError::Control)?;
    #[cfg(feature = "ec2")]
    if let Some((pools, rx)) = cloud {
        crate::ec2::driver::spawn(pools, rx, handle.clone());
    }
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServeError::Listen {
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| ServeError::Listen {
        addr: config.listen,
        source,
    })?;
    let state = AppState {
        control: handle,
        store,
        metrics,
        tokens: config.tokens.clone(),
        http: reqwest::Client::new(),
    };
    let app = server::router(state);
    let (shutdown, mut rx) = tokio::sync::watch::channel(false);
    let server = tokio::spawn(async move {
        let stop = async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(stop)
            .await
        {
            tracing::error!(error = %e, "HTTP server failed");
        }
    });
    tracing::info!(%addr, data_dir = %config.data_dir.display(), "control plane listening");
    let agent = match &config.local_agent {
        Some(l) => {
            let mut ac = AgentConfig::new(
                &format!("http://{addr}"),
                &config.tokens.agent,
                &l.name,
                config.data_dir.join("agent"),
            );
            ac.isolation = l.isolation.clone();
            Some(agent::start(ac).await?)
        }
        None => None,
    };
    Ok(Running {
        addr,
        agent,
        shutdown,
        server,
    })
}

/// Waits for SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(t) => t,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// A random token (16 bytes from the OS, hex).
pub fn random_token() -> std::io::Result<String> {
    use std::io::Read;
    let mut b = [0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut b)?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}
