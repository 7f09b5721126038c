//! HTTP: router assembly, the one middleware function, extractors, errors, and one file per
//! resource under `routes/`.

pub mod error;
pub mod extract;
pub mod openapi;
pub mod routes;

use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tower_http::catch_panic::CatchPanicLayer;
use tracing::Instrument;
use utoipa_swagger_ui::SwaggerUi;

use crate::state::AppState;
use error::{ApiError, REQUEST_ID};

pub const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// The API router: every resource's routes, the OpenAPI document, the docs page, and the
/// middleware.
pub fn router(state: AppState) -> Router {
    let (api, openapi) = openapi::split();
    let body_limit = state.config.body_limit_bytes;
    // Outermost first: a panic anywhere becomes a problem document; then the one middleware
    // (request id, span, metrics, security headers, timeout, declared body size); the body
    // limit is enforced by the extractors through `DefaultBodyLimit`, so that it answers
    // with problem+json too.
    let layers = tower::ServiceBuilder::new()
        .layer(CatchPanicLayer::custom(|_| {
            ApiError::Service(anyhow::anyhow!("handler panicked").into()).into_response()
        }))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware,
        ))
        .layer(axum::extract::DefaultBodyLimit::max(body_limit));
    api.merge(SwaggerUi::new("/docs").url("/openapi.json", openapi))
        .fallback(|| async { ApiError::not_found("no such endpoint") })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(layers)
        .with_state(state)
}

/// The one middleware, in this order: request id → trace span carrying it → propagate the
/// id to the response → metrics → security headers → timeout. (The body limit is enforced
/// by the extractors through `DefaultBodyLimit`, so that it answers with problem+json.)
pub async fn middleware(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let start = Instant::now();
    let request_id = req
        .headers()
        .get(&REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = req.method().clone();
    req.extensions_mut().insert(RequestId(request_id.clone()));
    let span = tracing::info_span!("request", %request_id, %method, %route);
    let timeout = state.config.request_timeout;

    let body_limit = state.config.body_limit_bytes;
    let mut response = REQUEST_ID
        .scope(request_id.clone(), async move {
            // A body announced larger than the limit is refused before anything reads it (or
            // waits for it): the extractors would only find out once the bytes arrived.
            if let Some(length) = declared_length(&req)
                && length > body_limit as u64
            {
                return ApiError::Rejected {
                    status: StatusCode::PAYLOAD_TOO_LARGE,
                    detail: format!(
                        "the request body ({length} bytes) is larger than the limit of \
                         {body_limit} bytes"
                    ),
                }
                .into_response();
            }
            match tokio::time::timeout(timeout, next.run(req)).await {
                Ok(response) => response,
                Err(_) => ApiError::Timeout.into_response(),
            }
        })
        .instrument(span.clone())
        .await;

    let elapsed = start.elapsed();
    let status = response.status();
    span.in_scope(|| {
        tracing::info!(
            status = status.as_u16(),
            latency_ms = elapsed.as_secs_f64() * 1000.0,
            "answered"
        );
    });
    state
        .metrics
        .observe_http(&route, method.as_str(), status, elapsed);

    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        headers.insert(REQUEST_ID_HEADER, value);
    }
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if !route.starts_with("/docs") {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'"),
        );
    }
    response
}

/// The `Content-Length` a request announces, if it is a number.
fn declared_length(req: &Request) -> Option<u64> {
    req.headers()
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// The request id, for handlers that record it (audit rows).
#[derive(Debug, Clone)]
pub struct RequestId(pub String);
