//! The API thread: hyper's HTTP/1.1 server on a Unix socket, driven by a
//! current-thread tokio runtime on one thread named `api`.
//!
//! Each connection is a task on that runtime; each request is read (up to
//! [`MAX_BODY_SIZE`]), translated by [`route`], and handed to the VMM with
//! [`ActionSender::submit`]: the task then awaits the VMM's answer on a
//! oneshot channel, so a request waiting for the VMM (a pause, a boot)
//! never stalls the other connections, and no other thread is involved.
//! Only a sender that cannot submit (its `submit` hands the action back)
//! is called through [`ActionSender::send`] on tokio's blocking pool.

use std::convert::Infallible;
use std::io;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::header::CONTENT_LENGTH;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::sync::oneshot;

use crate::response::{error_response, success_response, ResponseBody};
use crate::routes::{route, MAX_BODY_SIZE};
use crate::{ActionError, ActionSender, ApiError, Reply, VmmData};

/// How long [`ApiServer::shutdown`] lets in-flight requests finish (and
/// their responses be written) before it drops their connections.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// How long the accept loop backs off after a failed `accept` (EMFILE and
/// the like), so that it does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(10);

/// The running API thread. Dropping it stops the server like
/// [`ApiServer::shutdown`].
#[must_use = "dropping the ApiServer stops the API thread"]
#[derive(Debug)]
pub struct ApiServer {
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl ApiServer {
    /// Stops accepting connections, lets requests in flight finish writing
    /// their responses (at most [`SHUTDOWN_GRACE`]), closes idle
    /// keep-alive connections and joins the API thread.
    pub fn shutdown(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        if let Some(stop) = self.stop.take() {
            // The thread may have ended already; then there is no one to tell.
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                log::error!("api: the API thread panicked");
            }
        }
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

/// Starts the API thread serving `listener` (already bound); returns at
/// once.
pub fn start_server(
    listener: std::os::unix::net::UnixListener,
    sender: Arc<dyn ActionSender>,
) -> io::Result<ApiServer> {
    start_server_with(listener, sender, || Ok(()))
}

/// Starts the API thread like [`start_server`], running `init` on that
/// thread before it serves anything (podvm installs the API thread's
/// seccomp filter there). Returns once `init` has run; its error is the
/// error of the start.
pub fn start_server_with(
    listener: std::os::unix::net::UnixListener,
    sender: Arc<dyn ActionSender>,
    init: impl FnOnce() -> Result<(), String> + Send + 'static,
) -> io::Result<ApiServer> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()?;
    listener.set_nonblocking(true)?;
    // Registering with the reactor needs the runtime's context.
    let listener = {
        let _guard = runtime.enter();
        tokio::net::UnixListener::from_std(listener)?
    };
    let (stop, stopped) = oneshot::channel();
    let (started, start_result) = std::sync::mpsc::sync_channel(1);
    let thread = std::thread::Builder::new()
        .name("api".into())
        .spawn(move || {
            let ready = init();
            let failed = ready.is_err();
            // The starting thread waits for this answer.
            let _ = started.send(ready);
            if failed {
                return;
            }
            runtime.block_on(serve(listener, sender, stopped));
            // Blocking-pool threads still inside `send` answer nobody now.
            runtime.shutdown_background();
        })?;
    let mut server = ApiServer {
        stop: Some(stop),
        thread: Some(thread),
    };
    match start_result.recv() {
        Ok(Ok(())) => Ok(server),
        Ok(Err(e)) => {
            server.stop_and_join();
            Err(io::Error::other(e))
        }
        Err(_) => {
            server.stop_and_join();
            Err(io::Error::other("the API thread ended while starting"))
        }
    }
}

async fn serve(
    listener: tokio::net::UnixListener,
    sender: Arc<dyn ActionSender>,
    mut stopped: oneshot::Receiver<()>,
) {
    let graceful = GracefulShutdown::new();
    let mut http = http1::Builder::new();
    http.keep_alive(true);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let sender = sender.clone();
                    let service = service_fn(move |req| {
                        let sender = sender.clone();
                        async move { Ok::<_, Infallible>(handle(req, sender).await) }
                    });
                    let conn = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
                    tokio::spawn(async move {
                        if let Err(e) = conn.await {
                            log::debug!("api: connection ended: {e}");
                        }
                    });
                }
                Err(e) => {
                    log::warn!("api: cannot accept a connection: {e}");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
            // A dropped sender stops the server as well.
            _ = &mut stopped => break,
        }
    }
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        log::warn!("api: requests still in flight at shutdown were dropped");
    }
}

async fn handle(req: Request<Incoming>, sender: Arc<dyn ActionSender>) -> Response<ResponseBody> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let response = match answer(req, sender).await {
        Ok(data) => success_response(data),
        Err(e) => {
            log::info!("api: {method} {path}: {e}");
            error_response(&e)
        }
    };
    log::debug!("api: {method} {path}: {}", response.status());
    response
}

async fn answer(
    req: Request<Incoming>,
    sender: Arc<dyn ActionSender>,
) -> Result<VmmData, ApiError> {
    let too_large = ApiError::PayloadTooLarge {
        limit: MAX_BODY_SIZE,
    };
    // Refuse a declared oversize body before reading any of it.
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_SIZE as u64) {
        return Err(too_large);
    }
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, MAX_BODY_SIZE).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => return Err(too_large),
        Err(e) => return Err(ApiError::ReadBody(e)),
    };
    let action = route(&parts.method, parts.uri.path(), &body)?;
    let (tx, rx) = oneshot::channel();
    let reply = Reply::new(move |result| {
        // A client that went away needs no answer.
        let _ = tx.send(result);
    });
    let result = match sender.submit(action, reply) {
        Ok(()) => rx
            .await
            .unwrap_or_else(|_| Err(ActionError("the VMM is stopping".into()))),
        Err((action, _)) => tokio::task::spawn_blocking(move || sender.send(action))
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))?,
    };
    Ok(result?)
}
