//! `yuyo serve`: the demo endpoint on the chosen runtime adapter.

use std::io::Write as _;
use std::net::SocketAddr;
use std::process::ExitCode;

use std::time::Duration;
use tracing_subscriber::EnvFilter;

use yuyo_core::endpoint::EndpointConfig;
use yuyo_core::server::tls::ServerTls;
use yuyo_core::service::{ServeError, Service};
use yuyo_demo as demo;

use crate::listen::Listen;
use crate::{Runtime, ServeArgs, keys, shell_quote, sign, unix_now};

/// Runs `yuyo serve` until Ctrl-C / SIGTERM.
pub fn run(args: &ServeArgs) -> Result<ExitCode, String> {
    refuse_public_demo_key(args)?;
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let metrics = args.metrics.map(crate::exporter::start).transpose()?;
    let (verifier, public_key) = keys::verifier(args.public_key.as_deref())?;
    let demo_key = args.public_key.is_none();
    let events_path = Some(args.events_path.as_str()).filter(|path| *path != "none");
    let mut config = EndpointConfig::new(verifier);
    if let Some(path) = events_path {
        config = config.events_path(path);
    }
    config = match args.health_path.as_str() {
        "none" => config.without_health_check(),
        path => config.health_path(path),
    };
    let mut service = Service::new(demo::demo_endpoint_for(config));
    let scheme = match tls(args)? {
        Some(tls) => {
            reload_on_sighup(tls.clone());
            service.set_tls(Some(tls));
            "https"
        }
        None => "http",
    };
    service.options_mut().handle_signals = true;
    service.options_mut().drain_period = Duration::from_secs_f64(args.drain_period);
    let listen = match (args.listen_fd, args.reuse_port) {
        (Some(index), _) => Listen::Activated(index),
        (None, true) => Listen::Handover(args.bind),
        (None, false) => Listen::Bind(args.bind),
    };
    let listener = listen.listener().map_err(|e| e.to_string())?;

    let endpoint = service.endpoint().clone();
    let slots = service.slots().clone();
    let announce = |addr: SocketAddr| {
        announce(addr, scheme, &public_key, demo_key, args.runtime);
        if let Some(path) = events_path {
            println!("webhook events: {scheme}://{addr}{path}");
        }
        if let Some(metrics) = metrics {
            println!("metrics: http://{metrics}/metrics");
        }
    };
    let served = match args.runtime {
        Runtime::Smol => smol(service, listener, announce),
        Runtime::Tokio => tokio(service, listener, announce),
        Runtime::Blocking => blocking(service, listener, announce),
        Runtime::Tower => tower(service, listener, announce),
    };
    served.map_err(|e| e.to_string())?;
    let stats = endpoint.verify_queue().stats();
    tracing::info!(
        evictions = slots.stats().evictions,
        batches = stats.batches,
        batched_signatures = stats.batched_signatures,
        single_signatures = stats.single_signatures,
        failed_batches = stats.failed_batches,
        "stopped"
    );
    Ok(ExitCode::SUCCESS)
}

/// The demo key's secret is public: served beyond loopback, anyone could sign requests
/// the endpoint accepts. Refused unless the user gave a key or insisted.
fn refuse_public_demo_key(args: &ServeArgs) -> Result<(), String> {
    if args.public_key.is_some() || args.insecure_demo_key || args.bind.ip().is_loopback() {
        return Ok(());
    }
    Err(format!(
        "refusing to serve on {} with the built-in demo key: its secret key is public, so \
         anyone who reaches this address could sign requests the endpoint accepts. Pass \
         --public-key with your application's public key (Developer Portal, General \
         Information), bind to 127.0.0.1, or pass --insecure-demo-key to serve the demo key \
         anyway",
        args.bind
    ))
}

/// The certificate and key of `--tls-cert`/`--tls-key`, when given.
fn tls(args: &ServeArgs) -> Result<Option<ServerTls>, String> {
    let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) else {
        return Ok(None);
    };
    if args.runtime == Runtime::Tower {
        return Err(
            "--tls-cert: yuyo-tower serves under its host's TLS (hyper, axum, a \
                    proxy); choose --runtime smol, tokio or blocking to serve HTTPS"
                .to_owned(),
        );
    }
    ServerTls::from_pem_files(cert, key)
        .map(Some)
        .map_err(|e| format!("cannot serve HTTPS: {e}"))
}

/// On `SIGHUP`, re-reads the certificate and key for new connections (open ones keep
/// theirs); a failed reload keeps the old ones and says why.
#[cfg(unix)]
fn reload_on_sighup(tls: ServerTls) {
    let signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGHUP]);
    let mut signals = match signals {
        Ok(signals) => signals,
        Err(error) => {
            tracing::warn!(%error, "SIGHUP cannot reload the certificate");
            return;
        }
    };
    let spawned = std::thread::Builder::new()
        .name("yuyo-sighup".into())
        .spawn(move || {
            for _ in signals.forever() {
                match tls.reload_from_files() {
                    Ok(()) => tracing::info!("SIGHUP: certificate reloaded for new connections"),
                    Err(error) => tracing::error!(%error, "SIGHUP: reload failed; serving the old certificate"),
                }
            }
        });
    if let Err(error) = spawned {
        tracing::warn!(%error, "SIGHUP cannot reload the certificate");
    }
}

#[cfg(not(unix))]
fn reload_on_sighup(_tls: ServerTls) {}

/// Why serving failed: the listening socket, or the server.
#[derive(Debug)]
enum Failed {
    Listener(std::io::Error),
    Serve(ServeError),
    Other(String),
}

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Listener(e) => write!(f, "cannot serve the listening socket: {e}"),
            Self::Serve(e) => write!(f, "{e}"),
            Self::Other(e) => f.write_str(e),
        }
    }
}

impl From<ServeError> for Failed {
    fn from(e: ServeError) -> Self {
        Self::Serve(e)
    }
}

/// Prints the bound address (first stdout line), the key and how to try the endpoint.
fn announce(addr: SocketAddr, scheme: &str, public_key: &str, demo_key: bool, runtime: Runtime) {
    let url = format!("{scheme}://{addr}/");
    let mut out = std::io::stdout().lock();
    // Nothing sensible to do if stdout is gone; serving goes on.
    let _ = writeln!(out, "listening on {scheme}://{addr}");
    let runtime = clap::ValueEnum::to_possible_value(&runtime)
        .map_or_else(|| format!("{runtime:?}"), |v| v.get_name().to_owned());
    let _ = writeln!(out, "runtime: {runtime}");
    let _ = writeln!(out, "public key: {public_key}");
    if demo_key {
        let timestamp = unix_now();
        let body = r#"{"type":1}"#;
        let signature = demo::sign(&demo::DEMO_SECRET_SEED, &timestamp, body.as_bytes());
        let _ = writeln!(
            out,
            "(the built-in demo key pair: never use it for a real application)\n\n\
             try it:\n  yuyo check {url} --secret-key {}\n  yuyo sign --url {url} --body {}\n  {}",
            hex::encode(demo::DEMO_SECRET_SEED),
            shell_quote(body),
            sign::curl_line(&url, &signature, &timestamp, &shell_quote(body)),
        );
    } else {
        let _ = writeln!(
            out,
            "\ntry it (with the secret key of this test key pair; for your application's \
             key, only Discord can sign: `yuyo check {url}` checks the rest):\n  \
             yuyo check {url} --secret-key SECRET_HEX\n  \
             yuyo sign --secret-key SECRET_HEX --url {url} --body '{{\"type\":1}}'"
        );
    }
    let _ = out.flush();
}

fn smol(
    service: Service,
    listener: std::net::TcpListener,
    announce: impl FnOnce(SocketAddr),
) -> Result<(), Failed> {
    async_io::block_on(async {
        let listener = async_net::TcpListener::try_from(listener).map_err(Failed::Listener)?;
        announce(listener.local_addr().map_err(Failed::Listener)?);
        yuyo_smol::Server::new(service).serve(listener).await?;
        Ok(())
    })
}

fn tokio_runtime() -> Result<tokio::runtime::Runtime, Failed> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failed::Other(format!("cannot start a tokio runtime: {e}")))
}

/// Serves `listener` with `serve` (yuyo-tokio, or the tower service under hyper) on a
/// multi-threaded tokio runtime.
fn on_tokio<F, Fut>(
    service: Service,
    listener: std::net::TcpListener,
    announce: impl FnOnce(SocketAddr),
    serve: F,
) -> Result<(), Failed>
where
    F: FnOnce(Service, tokio::net::TcpListener) -> Fut,
    Fut: std::future::Future<Output = Result<(), ServeError>>,
{
    tokio_runtime()?.block_on(async {
        listener.set_nonblocking(true).map_err(Failed::Listener)?;
        let listener = tokio::net::TcpListener::from_std(listener).map_err(Failed::Listener)?;
        announce(listener.local_addr().map_err(Failed::Listener)?);
        serve(service, listener).await?;
        Ok(())
    })
}

fn tokio(
    service: Service,
    listener: std::net::TcpListener,
    announce: impl FnOnce(SocketAddr),
) -> Result<(), Failed> {
    on_tokio(service, listener, announce, |service, listener| {
        yuyo_tokio::Server::new(service).serve(listener)
    })
}

fn blocking(
    service: Service,
    listener: std::net::TcpListener,
    announce: impl FnOnce(SocketAddr),
) -> Result<(), Failed> {
    announce(listener.local_addr().map_err(Failed::Listener)?);
    yuyo_blocking::Server::new(service).serve(listener)?;
    Ok(())
}

/// The tower service served by hyper (HTTP/1.1) on a multi-threaded tokio runtime.
fn tower(
    service: Service,
    listener: std::net::TcpListener,
    announce: impl FnOnce(SocketAddr),
) -> Result<(), Failed> {
    on_tokio(service, listener, announce, |service, listener| {
        yuyo_tower::Server::new(service).serve(listener)
    })
}
