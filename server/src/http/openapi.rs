//! The OpenAPI 3.1 document: metadata and the bearer security scheme. Paths and schemas come
//! from the `#[utoipa::path]` annotations collected by `routes::router`.

use utoipa::Modify;
use utoipa::OpenApi;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};

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
    }
}

/// The document as the server serves it, pretty-printed with a trailing newline (the form
/// committed in `openapi/lanyard.json`).
pub fn document_json() -> String {
    let (_, api) = super::routes::router().split_for_parts();
    let mut text = api
        .to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
    text.push('\n');
    text
}
