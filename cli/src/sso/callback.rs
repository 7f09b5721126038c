//! The loopback end of the browser sign-in (RFC 8252 §7.3): a listener of this process on
//! 127.0.0.1 that the provider redirects the browser to, answering the one request that
//! carries this sign-in's `state`.

use anyhow::Context;

use super::Refused;

/// Waits for the browser's redirect to the loopback listener; returns the code. A request
/// without this sign-in's `state` (another local process, a web page probing ports) gets a
/// 400 and changes nothing: the listener keeps waiting for the real one.
pub async fn code(listener: tokio::net::TcpListener, state: &str) -> anyhow::Result<String> {
    use axum::extract::Query;
    use axum::http::StatusCode;
    use std::collections::HashMap;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<HashMap<String, String>>(1);
    let expected = state.to_owned();
    let app = axum::Router::new().route(
        "/callback",
        axum::routing::get(move |Query(params): Query<HashMap<String, String>>| {
            let tx = tx.clone();
            let ours = params.get("state") == Some(&expected);
            async move {
                if !ours {
                    return (
                        StatusCode::BAD_REQUEST,
                        axum::response::Html("Not this sign-in."),
                    );
                }
                let _ = tx.send(params).await;
                (
                    StatusCode::OK,
                    axum::response::Html(
                        "<!doctype html><title>Lanyard</title><p>Signed in. You can close this \
                         window and return to the terminal.</p>",
                    ),
                )
            }
        }),
    );
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let params = rx.recv().await.context("the sign-in listener stopped")?;
    server.abort();
    if let Some(error) = params.get("error") {
        return Err(Refused {
            error: error.clone(),
            description: params.get("error_description").cloned(),
        }
        .into());
    }
    params
        .get("code")
        .cloned()
        .context("the sign-in redirect carried no code")
}
