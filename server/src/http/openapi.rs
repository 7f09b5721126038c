//! The OpenAPI 3.1 document: metadata and the bearer security scheme. Paths and schemas come
//! from the `#[utoipa::path]` annotations collected by `routes::router`.

use utoipa::Modify;
use utoipa::OpenApi;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, Http, HttpAuthScheme, SecurityScheme};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Lanyard",
        description = "Self-hosted credential broker for cross-account AWS access. Every \
                       error is an RFC 9457 problem document (application/problem+json).",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    modifiers(&BearerAuth),
    tags(
        (name = "customers", description = "Customers, external IDs and onboarding"),
        (name = "roles", description = "Customer IAM roles and their verification"),
        (name = "sessions", description = "Support and customer sessions, and their credentials"),
        (name = "audit", description = "The audit log: queries and exports"),
        (name = "reports", description = "Usage reports, from rollups kept with the audit log"),
        (name = "auth", description = "The caller's own token"),
        (name = "events", description = "Cases, and the events delivered to webhooks"),
        (name = "health", description = "Liveness and readiness"),
    )
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                Http::builder()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
        components.add_security_scheme(
            "case_signature",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "Lanyard-Signature",
                "t=<unix seconds>,v1=<hex HMAC-SHA256 of \"{t}.{body}\"> with the [cases] \
                 secret; at most 5 minutes old, accepted once",
            ))),
        );
    }
}

/// Error responses are served as `application/problem+json` (see `http::error`); utoipa
/// writes `application/json` for every `body = Problem`, so rename them in one place once
/// the routes' paths are collected (see [`split`]).
struct ProblemJson;

impl Modify for ProblemJson {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::RefOr;
        for item in openapi.paths.paths.values_mut() {
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
                &mut item.head,
                &mut item.options,
                &mut item.trace,
            ];
            for operation in operations.into_iter().flatten() {
                for response in operation.responses.responses.values_mut() {
                    let RefOr::T(response) = response else {
                        continue;
                    };
                    let is_problem = matches!(
                        response.content.get("application/json"),
                        Some(RefOr::T(content)) if matches!(
                            &content.schema,
                            Some(RefOr::Ref(r)) if r.ref_location == "#/components/schemas/Problem"
                        )
                    );
                    if is_problem
                        && let Some(content) = response.content.shift_remove("application/json")
                    {
                        response
                            .content
                            .insert(crate::http::error::PROBLEM_JSON.to_owned(), content);
                    }
                }
            }
        }
    }
}

/// The API routes and the finished OpenAPI document that describes them.
pub fn split() -> (
    axum::Router<crate::state::AppState>,
    utoipa::openapi::OpenApi,
) {
    let (router, mut api) = super::routes::router().split_for_parts();
    ProblemJson.modify(&mut api);
    (router, api)
}

/// The document as the server serves it, pretty-printed with a trailing newline (the form
/// committed in `openapi/lanyard.json`).
pub fn document_json() -> String {
    let (_, api) = split();
    let mut text = api
        .to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
    text.push('\n');
    text
}
