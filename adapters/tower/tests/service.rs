//! The tower service without sockets: lifecycle (503 + Retry-After), streaming body limit,
//! body errors, and mounting in axum at `/interactions`.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Full};
use tower::ServiceExt;
use yuyo_conformance::demo::{DEMO_SECRET_SEED, DEMO_TIMESTAMP, demo_service, demo_verifier, sign};
use yuyo_conformance::fixtures;
use yuyo_core::endpoint::{Endpoint, EndpointConfig};
use yuyo_tower::{InteractionService, ResponseBody, Service};

fn signed<B>(path: &str, body: &[u8], make: impl FnOnce(Bytes) -> B) -> Request<B> {
    Request::post(path)
        .header("content-type", "application/json")
        .header(
            "x-signature-ed25519",
            sign(&DEMO_SECRET_SEED, DEMO_TIMESTAMP, body),
        )
        .header("x-signature-timestamp", DEMO_TIMESTAMP)
        .body(make(Bytes::copy_from_slice(body)))
        .unwrap()
}

fn ping(path: &str) -> Request<Full<Bytes>> {
    signed(path, fixtures::PING, Full::new)
}

async fn text<B: Body>(response: Response<B>) -> (StatusCode, String)
where
    B::Error: std::fmt::Debug,
{
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

fn assert_unavailable(response: &Response<ResponseBody>) {
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        response.headers().contains_key("retry-after"),
        "{response:?}"
    );
}

#[tokio::test]
async fn unavailable_before_start_and_after_close() {
    let stopped = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stopped);
    let service = demo_service(demo_verifier()).with_shutdown_callback(move || {
        let flag = Arc::clone(&flag);
        async move {
            flag.store(true, Ordering::SeqCst);
            Ok(())
        }
    });
    let interactions = InteractionService::new(service);

    let before = interactions.clone().oneshot(ping("/")).await.unwrap();
    assert_unavailable(&before);

    interactions.start().await.unwrap();
    assert!(interactions.is_running());
    let (status, body) = text(interactions.clone().oneshot(ping("/")).await.unwrap()).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, r#"{"type":1}"#));

    interactions.close().await.unwrap();
    assert!(stopped.load(Ordering::SeqCst), "shutdown callbacks ran");
    let after = interactions.clone().oneshot(ping("/")).await.unwrap();
    assert_unavailable(&after);
    // Closing again is harmless; starting again is refused.
    interactions.close().await.unwrap();
    assert!(interactions.start().await.is_err());
}

#[tokio::test]
async fn startup_failure_keeps_answering_503() {
    let service = demo_service(demo_verifier()).with_startup_callback(|| async {
        Err(yuyo_core::lifespan::CallbackError::new(
            "database unreachable",
        ))
    });
    let interactions = InteractionService::new(service);
    let error = interactions.start().await.unwrap_err();
    assert!(
        error.to_string().contains("database unreachable"),
        "{error}"
    );
    assert_unavailable(&interactions.clone().oneshot(ping("/")).await.unwrap());
}

#[tokio::test]
async fn shutdown_handle_drains_health_and_close_stops_requests() {
    let interactions = InteractionService::new(demo_service(demo_verifier()));
    interactions.start().await.unwrap();
    let health = || {
        Request::get("/healthz")
            .body(Full::new(Bytes::new()))
            .unwrap()
    };
    let status = |response: &Response<_>| response.status().as_u16();
    assert_eq!(
        status(&interactions.clone().oneshot(health()).await.unwrap()),
        200
    );
    let handle = interactions.shutdown_handle();
    handle.shutdown();
    handle.shutdown();
    interactions.shutdown_requested().await;
    assert_eq!(
        status(&interactions.clone().oneshot(health()).await.unwrap()),
        503
    );
    // Requests that still arrive are served: they may carry an interaction.
    assert_eq!(
        status(&interactions.clone().oneshot(ping("/")).await.unwrap()),
        200
    );
    interactions.close().await.unwrap();
    assert_unavailable(&interactions.clone().oneshot(ping("/")).await.unwrap());
}

/// An endless body of 16-byte frames that counts how many were pulled.
struct Endless(Arc<AtomicUsize>);

impl Body for Endless {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(
            b"{\"type\":1,     }",
        )))))
    }
}

#[tokio::test]
async fn body_limit_is_enforced_while_streaming() {
    let endpoint = Endpoint::new(
        EndpointConfig::new(demo_verifier()).max_body_size(64),
        yuyo_conformance::demo::demo_handlers(),
    );
    let interactions = InteractionService::new(Service::new(endpoint));
    interactions.start().await.unwrap();
    let pulled = Arc::new(AtomicUsize::new(0));
    let request = signed("/", fixtures::PING, |_| Endless(Arc::clone(&pulled)));
    let response = interactions.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    // 64 bytes fit in four frames: the fifth is refused, nothing more is read.
    assert_eq!(pulled.load(Ordering::SeqCst), 5);
    interactions.close().await.unwrap();
}

/// A body that fails.
struct Broken;

impl Body for Broken {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        Poll::Ready(Some(Err(std::io::Error::other("connection reset"))))
    }
}

#[tokio::test]
async fn body_error_is_400() {
    let interactions = InteractionService::new(demo_service(demo_verifier()));
    interactions.start().await.unwrap();
    let request = signed("/", fixtures::PING, |_| Broken);
    let response = interactions.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    interactions.close().await.unwrap();
}

#[tokio::test]
async fn mounted_in_axum_at_interactions() {
    let interactions = InteractionService::new(demo_service(demo_verifier()));
    let app = axum::Router::new()
        .route("/", axum::routing::get(|| async { "home" }))
        .nest_service("/interactions", interactions.clone());
    interactions.start().await.unwrap();

    let to_axum = |request: Request<Full<Bytes>>| request.map(axum::body::Body::new);
    let (status, body) = text(
        app.clone()
            .oneshot(to_axum(ping("/interactions")))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, r#"{"type":1}"#));

    let echo = signed("/interactions", fixtures::COMMAND_ECHO, Full::new);
    let (status, body) = text(app.clone().oneshot(to_axum(echo)).await.unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains(fixtures::ECHO_TEXT), "{body}");

    let (status, body) = text(
        app.clone()
            .oneshot(Request::get("/").body(axum::body::Body::empty()).unwrap())
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "home"));
    interactions.close().await.unwrap();
}
