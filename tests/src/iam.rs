//! A stand-in for the one IAM call moto lacks, iam:SimulatePrincipalPolicy: an HTTP server
//! on a loopback port that answers that action (Query protocol, XML) from a table of
//! decisions the test sets, and records what it was asked and with which access key. Every
//! other call stays on moto.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;

/// One SimulatePrincipalPolicy request as received.
#[derive(Debug, Clone)]
pub struct Simulation {
    pub policy_source_arn: String,
    pub actions: Vec<String>,
    /// The access key of the SigV4 `Authorization` header: who asked.
    pub access_key_id: String,
}

#[derive(Default)]
struct State {
    /// action → `allowed`, `explicitDeny` (anything unlisted: `implicitDeny`).
    decisions: BTreeMap<String, String>,
    received: Vec<Simulation>,
}

pub struct IamStandIn {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
}

impl IamStandIn {
    pub async fn start() -> IamStandIn {
        let state = Arc::new(Mutex::new(State::default()));
        let shared = state.clone();
        let app = axum::Router::new().route(
            "/",
            axum::routing::post(move |headers: HeaderMap, body: Bytes| {
                let state = shared.clone();
                async move { answer(&state, &headers, &body) }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        IamStandIn { addr, state }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Sets what the role's policies decide for `action` (`allowed`, `explicitDeny`).
    pub fn decide(&self, action: &str, decision: &str) {
        self.state
            .lock()
            .unwrap()
            .decisions
            .insert(action.to_owned(), decision.to_owned());
    }

    pub fn received(&self) -> Vec<Simulation> {
        self.state.lock().unwrap().received.clone()
    }
}

fn answer(state: &Mutex<State>, headers: &HeaderMap, body: &[u8]) -> axum::response::Response {
    let form: BTreeMap<String, String> = url_form(body);
    if form.get("Action").map(String::as_str) != Some("SimulatePrincipalPolicy") {
        return (
            StatusCode::BAD_REQUEST,
            "<ErrorResponse><Error><Code>InvalidAction</Code><Message>only SimulatePrincipalPolicy</Message></Error></ErrorResponse>",
        )
            .into_response();
    }
    let actions: Vec<String> = (1..)
        .map_while(|n| form.get(&format!("ActionNames.member.{n}")).cloned())
        .collect();
    let access_key_id = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split("Credential=").nth(1))
        .and_then(|v| v.split('/').next())
        .unwrap_or_default()
        .to_owned();
    let mut state = state.lock().unwrap();
    state.received.push(Simulation {
        policy_source_arn: form.get("PolicySourceArn").cloned().unwrap_or_default(),
        actions: actions.clone(),
        access_key_id,
    });
    let members: String = actions
        .iter()
        .map(|action| {
            let decision = state
                .decisions
                .get(action)
                .map_or("implicitDeny", String::as_str);
            format!(
                "<member><EvalActionName>{action}</EvalActionName>\
                 <EvalResourceName>*</EvalResourceName><EvalDecision>{decision}</EvalDecision>\
                 <MatchedStatements/><MissingContextValues/></member>"
            )
        })
        .collect();
    let xml = format!(
        "<SimulatePrincipalPolicyResponse xmlns=\"https://iam.amazonaws.com/doc/2010-05-08/\">\
         <SimulatePrincipalPolicyResult><IsTruncated>false</IsTruncated>\
         <EvaluationResults>{members}</EvaluationResults></SimulatePrincipalPolicyResult>\
         <ResponseMetadata><RequestId>stand-in</RequestId></ResponseMetadata>\
         </SimulatePrincipalPolicyResponse>"
    );
    ([("content-type", "text/xml")], xml).into_response()
}

fn url_form(body: &[u8]) -> BTreeMap<String, String> {
    String::from_utf8_lossy(body)
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| {
            let decode = |s: &str| {
                urlencoding::decode(&s.replace('+', " "))
                    .map(|d| d.into_owned())
                    .unwrap_or_default()
            };
            (decode(k), decode(v))
        })
        .collect()
}
