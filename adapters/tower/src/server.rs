//! [`Server`]: the [`InteractionService`] served by hyper's HTTP/1.1 server on tokio, with
//! the same API as the other adapters' servers (feature `server`, on by default).

use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::{InteractionService, ServeError, ServeOptions, Service, ShutdownHandle};

/// A server for one [`Service`]: its [`InteractionService`] served by hyper (HTTP/1.1).
///
/// [`Server::serve`] starts the service (startup callbacks) before accepting anything,
/// accepts at most [`ServeOptions::max_connections`](crate::ServeOptions) connections at
/// once, and on shutdown — [`ShutdownHandle::shutdown`], or Ctrl-C / SIGTERM when
/// `handle_signals` is set — stops accepting, lets hyper finish the requests in flight
/// (idle connections close at once), waits for after-response work within the grace
/// period and runs the shutdown callbacks. hyper applies `http.head_timeout` to request
/// heads; the service applies `http.body_timeout`.
#[derive(Debug)]
pub struct Server {
    service: Service,
    shutdown: ShutdownHandle,
}

impl Server {
    /// A server for `service`.
    #[must_use]
    pub fn new(service: Service) -> Self {
        Self {
            service,
            shutdown: ShutdownHandle::default(),
        }
    }

    /// The service (endpoint, lifespan callbacks, options).
    #[must_use]
    pub fn service(&self) -> &Service {
        &self.service
    }

    /// The service, mutably.
    pub fn service_mut(&mut self) -> &mut Service {
        &mut self.service
    }

    /// A handle that shuts this server down gracefully.
    #[must_use]
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.shutdown.clone()
    }

    /// Serves `listener` until shutdown.
    ///
    /// # Errors
    /// [`ServeError::Startup`] if a startup callback failed (nothing was served),
    /// [`ServeError::Shutdown`] if a shutdown callback failed.
    pub async fn serve(self, listener: TcpListener) -> Result<(), ServeError> {
        let Self { service, shutdown } = self;
        let options = service.options().clone();
        let interactions = InteractionService::with_shutdown(service, shutdown.clone());
        interactions.start().await?;
        let signals = options.handle_signals.then(|| {
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                if yuyo_tokio::glue::wait_for_signal().await {
                    tracing::info!("signal received: shutting down");
                    shutdown.shutdown();
                }
            })
        });

        let connections = Connections {
            service: interactions.clone(),
            stop: shutdown.signal.token.clone(),
            force: CancellationToken::new(),
            tracker: TaskTracker::new(),
            options: options.clone(),
        };
        connections.accept(&listener, options.max_connections).await;
        drop(listener);

        let deadline = tokio::time::Instant::now() + options.grace_period;
        connections.tracker.close();
        if tokio::time::timeout_at(deadline, connections.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                connections = connections.tracker.len(),
                "grace period over: closing the remaining connections"
            );
            connections.force.cancel();
            connections.tracker.wait().await;
        }
        if let Some(signals) = signals {
            signals.abort();
        }
        interactions.close_by(deadline).await
    }
}

struct Connections {
    service: InteractionService,
    /// Graceful shutdown requested.
    stop: CancellationToken,
    /// The grace period is over.
    force: CancellationToken,
    tracker: TaskTracker,
    options: ServeOptions,
}

impl Connections {
    async fn accept(&self, listener: &TcpListener, max_connections: usize) {
        let stop = self.stop.cancelled();
        yuyo_tokio::glue::accept_loop(listener, max_connections, stop, |stream, permit, open| {
            let head_timeout = self.options.connection_config(open).head_timeout;
            let connection = self.connection(stream, head_timeout);
            let force = self.force.clone();
            self.tracker.spawn(async move {
                let _permit = permit;
                force.run_until_cancelled(connection).await;
            });
        })
        .await;
    }

    fn connection(
        &self,
        stream: TcpStream,
        head_timeout: std::time::Duration,
    ) -> impl Future<Output = ()> + Send + 'static {
        let stop = self.stop.clone();
        // Boxed once here rather than pinned inside the task: an async block keeps
        // the moved-in connection and the pinned copy in separate slots, doubling
        // what every idle connection holds.
        let mut connection = Box::pin(
            http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(head_timeout)
                .serve_connection(
                    TokioIo::new(stream),
                    TowerToHyperService::new(self.service.clone()),
                ),
        );
        async move {
            let result = tokio::select! {
                result = connection.as_mut() => result,
                () = stop.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(error) = result {
                tracing::debug!(%error, "connection ended with an error");
            }
        }
    }
}
