//! `sd serve`: the A1111- / OpenAI-compatible HTTP API and web page of sd-server, over the
//! models of `--models-dir`, on 127.0.0.1 unless `--listen` says otherwise.

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use anyhow::{anyhow, Result};
use sd_server::{Auth, Limits, Server, ServerConfig};

/// Arguments of `sd serve`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The folder of models that may be served (diffusers folders, .safetensors / .ckpt);
    /// requests name models from it, never by path.
    #[arg(long, value_name = "DIR")]
    pub models_dir: PathBuf,
    /// The model to load first, by name in --models-dir (default: the first by name).
    #[arg(long, value_name = "NAME")]
    pub model: Option<String>,
    /// The address to listen on: an IP (with --port) or IP:PORT. Default 127.0.0.1, this
    /// machine only; 0.0.0.0 serves the network (set --api-key or --api-auth then).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// The port, when --listen gives none (0: any free port).
    #[arg(long, default_value_t = sd_server::DEFAULT_PORT)]
    pub port: u16,
    /// Require `Authorization: Bearer KEY` on every route.
    #[arg(long, value_name = "KEY")]
    pub api_key: Option<String>,
    /// Require basic auth on every route (A1111's --api-auth): user:password, several
    /// separated by commas.
    #[arg(long, value_name = "USER:PASS[,...]")]
    pub api_auth: Option<String>,
    /// LoRA files for the prompts' <lora:NAME:WEIGHT> tags, kept as side branches.
    #[arg(long, value_name = "DIR")]
    pub lora_dir: Option<PathBuf>,
    /// The largest request body read, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = Limits::default().max_body)]
    pub max_body: usize,
    /// The most pixels (width x height) of one image.
    #[arg(long, default_value_t = Limits::default().max_pixels)]
    pub max_pixels: usize,
    /// The most inference steps of one request.
    #[arg(long, default_value_t = Limits::default().max_steps)]
    pub max_steps: usize,
    /// The most images of one request (batch_size x n_iter).
    #[arg(long, default_value_t = Limits::default().max_images)]
    pub max_images: usize,
    /// The most jobs waiting behind the running one; more are answered 503.
    #[arg(long, value_name = "N", default_value_t = 8)]
    pub queue: usize,
}

impl Args {
    /// The server's config from the arguments.
    fn config(&self) -> Result<ServerConfig> {
        let listen = match self.listen.as_deref() {
            None => SocketAddr::from(([127, 0, 0, 1], self.port)),
            Some(text) => match text.parse::<SocketAddr>() {
                Ok(addr) => addr,
                Err(_) => {
                    let ip: IpAddr = text.parse().map_err(|_| {
                        anyhow!("--listen {text}: not an IP address or IP:PORT (e.g. 0.0.0.0:7860)")
                    })?;
                    SocketAddr::new(ip, self.port)
                }
            },
        };
        let basic = match &self.api_auth {
            Some(text) => Auth::parse_basic(text).map_err(|e| anyhow!(e))?,
            None => Vec::new(),
        };
        if self.api_key.as_deref() == Some("") {
            return Err(anyhow!(
                "--api-key: empty; give a key or leave the option out"
            ));
        }
        Ok(ServerConfig {
            listen,
            models_dir: self.models_dir.clone(),
            model: self.model.clone(),
            lora_dir: self.lora_dir.clone(),
            auth: Auth {
                api_key: self.api_key.clone(),
                basic,
            },
            limits: Limits {
                max_body: self.max_body,
                max_pixels: self.max_pixels,
                max_steps: self.max_steps,
                max_images: self.max_images,
            },
            queue_length: self.queue,
        })
    }
}

/// Runs `sd serve` until Ctrl-C, writing the address to `out` once listening.
pub fn run(args: &Args, out: &mut impl Write) -> Result<()> {
    let config = args.config()?;
    let open = config.auth.is_open() && !config.listen.ip().is_loopback();
    let server = Server::bind(config)?;
    let addr = server.local_addr()?;
    writeln!(out, "sd serve: listening on http://{addr}")?;
    if open {
        writeln!(
            out,
            "warning: {} is reachable from other machines and no --api-key / --api-auth is set",
            addr.ip()
        )?;
    }
    out.flush()?;
    server.run()?;
    Ok(())
}
