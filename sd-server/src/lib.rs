#![doc = include_str!("../README.md")]

pub mod a1111;
pub mod api_error;
pub mod auth;
pub mod error;
pub mod images;
pub mod json;
pub mod limits;
pub mod loras;
pub mod models;
pub mod openai;
pub mod page;
pub mod progress;
pub mod queue;
pub mod routes;
pub mod samplers;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

pub use api_error::ApiError;
pub use auth::Auth;
pub use error::{Error, Result};
pub use limits::Limits;
pub use queue::QueueStats;

use crate::models::ModelCatalog;
use crate::queue::Queue;
use crate::routes::{AppState, Options};

/// The port A1111 listens on.
pub const DEFAULT_PORT: u16 = 7860;

/// How to run a server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Where to listen (default 127.0.0.1:7860: this machine only).
    pub listen: SocketAddr,
    /// The folder of models that may be loaded.
    pub models_dir: PathBuf,
    /// The model to load first, by name in `models_dir` (default: the first by name).
    pub model: Option<String>,
    /// A folder of LoRA files, loaded as side branches for `<lora:NAME:W>` tags.
    pub lora_dir: Option<PathBuf>,
    /// Credentials every route requires (default: none).
    pub auth: Auth,
    /// Caps on requests.
    pub limits: Limits,
    /// The most jobs waiting behind the running one; more are refused with 503 (default 8;
    /// 0 serves one job at a time and refuses any while busy).
    pub queue_length: usize,
}

impl ServerConfig {
    /// Defaults, serving the models of `models_dir`.
    pub fn new(models_dir: impl Into<PathBuf>) -> Self {
        Self {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, DEFAULT_PORT)),
            models_dir: models_dir.into(),
            model: None,
            lora_dir: None,
            auth: Auth::default(),
            limits: Limits::default(),
            queue_length: 8,
        }
    }
}

/// A server with its model loaded and its address bound, ready to [`run`](Self::run).
pub struct Server {
    listener: std::net::TcpListener,
    state: AppState,
}

impl Server {
    /// Loads the first model and binds the address (port 0 picks a free port).
    ///
    /// # Errors
    /// [`Error`] naming the folder, model or address at fault.
    pub fn bind(config: ServerConfig) -> Result<Self> {
        let catalog = ModelCatalog::open(&config.models_dir)?;
        let entry = match &config.model {
            Some(name) => catalog
                .find("--model", name)
                .map_err(|e| Error::UnknownModel {
                    name: name.clone(),
                    message: match e {
                        ApiError::PathNotAllowed { message, .. } => message,
                        other => other.to_string().replacen("--model: ", "", 1),
                    },
                })?,
            None => catalog
                .list()
                .ok()
                .and_then(|models| models.into_iter().next())
                .ok_or_else(|| Error::ModelsDir {
                    path: config.models_dir.clone(),
                    message: "holds no model".into(),
                })?,
        };
        let loras = match &config.lora_dir {
            Some(dir) => loras::list(dir)?,
            None => Vec::new(),
        };
        let listener =
            std::net::TcpListener::bind(config.listen).map_err(|source| Error::Bind {
                addr: config.listen,
                source,
            })?;
        listener.set_nonblocking(true).map_err(Error::Serve)?;
        let queue = Queue::start(entry, loras.clone(), config.queue_length)?;
        Ok(Self {
            listener,
            state: AppState {
                queue: Arc::new(queue),
                catalog: Arc::new(catalog),
                loras: Arc::new(loras),
                limits: config.limits,
                options: Arc::new(Mutex::new(Options { clip_skip: 1 })),
                auth: Arc::new(config.auth),
            },
        })
    }

    /// The address bound.
    ///
    /// # Errors
    /// When the operating system cannot tell (it can for a bound socket).
    pub fn local_addr(&self) -> Result<SocketAddr> {
        self.listener.local_addr().map_err(Error::Serve)
    }

    /// Serves until Ctrl-C (SIGINT), then stops the running job and returns.
    ///
    /// # Errors
    /// [`Error::Serve`] when the runtime or the listener fails.
    pub fn run(self) -> Result<()> {
        self.run_until(async {
            let _ = tokio::signal::ctrl_c().await;
        })
    }

    /// Serves until `stop` completes.
    fn run_until(self, stop: impl std::future::Future<Output = ()> + Send + 'static) -> Result<()> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name("sd-serve-http")
            .build()
            .map_err(Error::Serve)?;
        let queue = self.state.queue.clone();
        let app = routes::router(self.state);
        runtime.block_on(async move {
            let listener =
                tokio::net::TcpListener::from_std(self.listener).map_err(Error::Serve)?;
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    stop.await;
                    // Running and waiting jobs end now, so their requests can be answered.
                    let _ = tokio::task::spawn_blocking(move || queue.stop()).await;
                })
                .await
                .map_err(Error::Serve)
        })
    }

    /// Serves on a thread of its own until the returned handle is stopped or dropped.
    ///
    /// # Errors
    /// As [`local_addr`](Self::local_addr).
    pub fn spawn(self) -> Result<RunningServer> {
        let addr = self.local_addr()?;
        let queue = self.state.queue.clone();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("sd-serve".into())
            .spawn(move || {
                self.run_until(async {
                    let _ = stop_rx.await;
                })
            })
            .map_err(Error::Serve)?;
        Ok(RunningServer {
            addr,
            queue,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }
}

/// A server serving on its own thread ([`Server::spawn`]).
pub struct RunningServer {
    addr: SocketAddr,
    queue: Arc<Queue>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<Result<()>>>,
}

impl RunningServer {
    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR`, the base of every route.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// What happened to the jobs so far.
    pub fn stats(&self) -> QueueStats {
        self.queue.stats()
    }

    /// Stops serving and waits for the server thread.
    ///
    /// # Errors
    /// The server's error, if it failed while serving.
    pub fn stop(mut self) -> Result<()> {
        self.shut_down()
    }

    fn shut_down(&mut self) -> Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(Error::Serve(std::io::Error::other(
                "the server thread panicked",
            ))),
            None => Ok(()),
        }
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        let _ = self.shut_down();
    }
}
