//! AWS STS: the broker's identity, AssumeRole, and role verification.
//!
//! One SDK client per instance, with standard retries (exponential backoff with jitter),
//! bounded timeouts, and one rate limiter that every AssumeRole of the instance passes (the
//! STS budget). Credentials obtained here are never logged.

pub mod cache;

use std::num::NonZeroU32;
use std::time::Instant;

use aws_config::SdkConfig;
use aws_sdk_sts::config::http::HttpResponse;
use aws_sdk_sts::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_sts::types::{PolicyDescriptorType, Tag};
use tokio::sync::OnceCell;

use crate::config::Config;
use crate::domain::verification::{AwsError, Probe};
use crate::domain::{ExternalId, RoleArn};
use crate::metrics::StsMetrics;
use lanyard_api::roles::{ActionDecision, ActionResult};

/// An SDK failure as an [`AwsError`]: the AWS error code and message, or a code of the
/// broker's own for what never reached AWS (`Timeout`, `Unreachable`, `ClientError`).
pub(crate) fn aws_error<E>(err: SdkError<E, HttpResponse>) -> AwsError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match &err {
        SdkError::ServiceError(service) => {
            let inner = service.err();
            // The SDK reads `ErrorResponse/Error/Code`. Some STS-compatible endpoints
            // (moto among them) nest it as `ErrorResponse/Errors/Error/Code`; read the
            // raw body then, so the operator still sees the real code.
            let body = std::str::from_utf8(service.raw().body().bytes().unwrap_or_default())
                .unwrap_or_default();
            let code = inner
                .code()
                .map(str::to_owned)
                .or_else(|| xml_element(body, "Code"))
                .unwrap_or_else(|| format!("HTTP{}", service.raw().status().as_u16()));
            let message = inner
                .message()
                .map(str::to_owned)
                .or_else(|| xml_element(body, "Message"))
                .unwrap_or_else(|| "no message".to_owned());
            AwsError { code, message }
        }
        SdkError::TimeoutError(_) => AwsError::new("Timeout", "STS did not answer in time"),
        SdkError::DispatchFailure(f) => AwsError::new(
            "Unreachable",
            if f.is_timeout() {
                "STS did not answer in time"
            } else {
                "could not reach STS"
            },
        ),
        _ => {
            // The SDK's own failures (no broker credentials, bad configuration) can describe
            // the broker's setup: the log gets them, the client a fixed text.
            tracing::error!(error = %error_text(&err), "calling STS failed");
            AwsError::new("ClientError", "the broker could not call STS; see its log")
        }
    }
}

/// The text of the first `<name>` element in an XML error body (error bodies are tiny
/// and flat; a full XML parser buys nothing here).
fn xml_element(body: &str, name: &str) -> Option<String> {
    let open = format!("<{name}>");
    let start = body.find(&open)? + open.len();
    let len = body[start..].find(&format!("</{name}>"))?;
    let text = body[start..start + len].trim();
    (!text.is_empty()).then(|| {
        text.replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&apos;", "'")
            .replace("&amp;", "&")
    })
}

/// An SDK error with its chain of causes, for the log (SDK errors carry no secrets).
pub(crate) fn error_text(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// An AssumeRole request as the broker makes it.
#[derive(Debug, Clone)]
pub struct AssumeRoleRequest<'a> {
    pub role_arn: &'a RoleArn,
    /// `None` only for the confused-deputy check.
    pub external_id: Option<&'a ExternalId>,
    pub session_name: String,
    pub source_identity: Option<String>,
    pub tags: Vec<(String, String)>,
    pub duration_seconds: i32,
    pub policy: Option<String>,
    /// Managed policies that scope the session down (an access tier's).
    pub policy_arns: Vec<String>,
}

/// Temporary credentials. `Debug` hides the secret parts.
pub struct AssumedCredentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: String,
    pub expiration: chrono::DateTime<chrono::Utc>,
}

impl std::fmt::Debug for AssumedCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AssumedCredentials")
            .field("access_key_id", &self.access_key_id)
            .field("expiration", &self.expiration)
            .finish_non_exhaustive()
    }
}

/// How long a failed sts:GetCallerIdentity is not asked again.
const CALLER_RETRY: std::time::Duration = std::time::Duration::from_secs(60);

pub struct Sts {
    client: aws_sdk_sts::Client,
    configured_principal: Option<String>,
    /// The caller ARN from sts:GetCallerIdentity, asked once.
    caller: OnceCell<String>,
    /// When and how asking for it last failed: not asked again for [`CALLER_RETRY`], the
    /// failure answered instead (under STS throttling every credential request, and every
    /// request already waiting on the first attempt, would otherwise add its own calls).
    caller_failed: std::sync::Mutex<Option<(Instant, AwsError)>>,
    budget: governor::DefaultDirectRateLimiter,
    metrics: StsMetrics,
    /// The SDK settings (region, timeouts, retries) IAM clients are built from.
    sdk: SdkConfig,
    iam_endpoint: Option<String>,
}

impl Sts {
    pub fn new(config: &Config, sdk: &SdkConfig, metrics: StsMetrics) -> Self {
        let per_second = NonZeroU32::new(config.sts_rate_limit).unwrap_or(NonZeroU32::MIN);
        Sts {
            client: aws_sdk_sts::Client::new(sdk),
            configured_principal: config.broker_principal_arn.clone(),
            caller: OnceCell::new(),
            caller_failed: std::sync::Mutex::new(None),
            budget: governor::RateLimiter::direct(governor::Quota::per_second(per_second)),
            metrics,
            sdk: sdk.clone(),
            iam_endpoint: config
                .iam_endpoint_url
                .clone()
                .or_else(|| config.aws_endpoint_url.clone()),
        }
    }

    /// The IAM principal customers must trust: from configuration, else from
    /// sts:GetCallerIdentity (an assumed-role ARN is turned into its role ARN).
    pub async fn broker_principal(&self) -> Result<String, AwsError> {
        if let Some(arn) = &self.configured_principal {
            return Ok(arn.clone());
        }
        Ok(principal_from_caller_arn(self.caller_arn().await?))
    }

    async fn caller_arn(&self) -> Result<&str, AwsError> {
        self.caller
            .get_or_try_init(|| async {
                let recent = |failed: &Option<(Instant, AwsError)>| {
                    failed
                        .as_ref()
                        .filter(|(at, _)| at.elapsed() < CALLER_RETRY)
                        .map(|(_, error)| error.clone())
                };
                if let Some(error) =
                    recent(&self.caller_failed.lock().unwrap_or_else(|p| p.into_inner()))
                {
                    return Err(error);
                }
                match self.client.get_caller_identity().send().await {
                    Ok(out) => Ok(out.arn().unwrap_or_default().to_owned()),
                    Err(e) => {
                        let error = aws_error(e);
                        *self.caller_failed.lock().unwrap_or_else(|p| p.into_inner()) =
                            Some((Instant::now(), error.clone()));
                        Err(error)
                    }
                }
            })
            .await
            .map(String::as_str)
    }

    /// Whether the broker's own credentials come from a role, which limits the sessions it
    /// can create to one hour (role chaining). Unknown counts as yes: the safe answer.
    pub async fn broker_on_role(&self) -> bool {
        match self.caller_arn().await {
            Ok(arn) => arn.contains(":assumed-role/"),
            // Failed now or within the last minute (then not asked again).
            Err(_) => true,
        }
    }

    #[tracing::instrument(skip_all, fields(role_arn = %req.role_arn, session_name = %req.session_name))]
    pub async fn assume_role(
        &self,
        req: &AssumeRoleRequest<'_>,
    ) -> Result<AssumedCredentials, AwsError> {
        let tags = req
            .tags
            .iter()
            .map(|(k, v)| Tag::builder().key(k).value(v).build())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| AwsError {
                code: "InvalidTag".into(),
                message: e.to_string(),
            })?;
        self.budget.until_ready().await;
        let started = Instant::now();
        let out = self
            .client
            .assume_role()
            .role_arn(req.role_arn.as_str())
            .role_session_name(&req.session_name)
            .set_external_id(req.external_id.map(|e| e.as_str().to_owned()))
            .set_source_identity(req.source_identity.clone())
            .set_tags((!tags.is_empty()).then_some(tags))
            .duration_seconds(req.duration_seconds)
            .set_policy(req.policy.clone())
            .set_policy_arns((!req.policy_arns.is_empty()).then(|| {
                req.policy_arns
                    .iter()
                    .map(|arn| PolicyDescriptorType::builder().arn(arn).build())
                    .collect()
            }))
            .send()
            .await
            .map_err(aws_error);
        self.metrics.observe(
            out.as_ref().err().map(|e| e.code.as_str()),
            started.elapsed(),
        );
        let out = out?;
        let creds = out.credentials().ok_or_else(|| AwsError {
            code: "NoCredentials".into(),
            message: "AssumeRole returned no credentials".into(),
        })?;
        let expiration = chrono::DateTime::from_timestamp(creds.expiration().secs(), 0)
            .unwrap_or_else(chrono::Utc::now);
        Ok(AssumedCredentials {
            access_key_id: creds.access_key_id().to_owned(),
            secret_access_key: creds.secret_access_key().to_owned(),
            session_token: creds.session_token().to_owned(),
            expiration,
        })
    }

    /// Verifies a role: AssumeRole with each candidate external ID in turn (pending first),
    /// then once without any (the confused-deputy check,
    /// <https://docs.aws.amazon.com/IAM/latest/UserGuide/confused-deputy.html>).
    pub async fn verify_role(
        &self,
        role_arn: &RoleArn,
        customer: &str,
        candidates: &[&ExternalId],
    ) -> Probe {
        let request = |external_id| AssumeRoleRequest {
            role_arn,
            external_id,
            session_name: crate::domain::session::aws_name(&format!("lanyard-verify-{customer}")),
            source_identity: Some("lanyard-verify".into()),
            tags: vec![("lanyard-purpose".into(), "verify".into())],
            duration_seconds: 900,
            policy: None,
            policy_arns: Vec::new(),
        };
        let mut last_error = None;
        let mut verified_with = None;
        for candidate in candidates {
            match self.assume_role(&request(Some(*candidate))).await {
                Ok(_) => {
                    verified_with = Some((*candidate).clone());
                    break;
                }
                Err(e) => last_error = Some(e),
            }
        }
        let Some(verified_with) = verified_with else {
            return Probe::Failed(last_error.unwrap_or_else(|| {
                AwsError::new("NoExternalId", "the customer has no external ID")
            }));
        };
        Probe::Assumed {
            verified_with,
            without_external_id: self.assume_role(&request(None)).await.map(|_| ()),
        }
    }
}

impl Sts {
    /// iam:SimulatePrincipalPolicy for `actions` on `role_arn`, called with credentials of
    /// that role (the customer's template lets the role simulate its own policies, so the
    /// broker needs no IAM rights in the customer's account).
    pub async fn simulate(
        &self,
        credentials: &AssumedCredentials,
        role_arn: &RoleArn,
        actions: &[String],
    ) -> Result<Vec<ActionResult>, AwsError> {
        let provider = aws_sdk_iam::config::Credentials::new(
            credentials.access_key_id.clone(),
            credentials.secret_access_key.clone(),
            Some(credentials.session_token.clone()),
            None,
            "lanyard-validate",
        );
        let mut config =
            aws_sdk_iam::config::Builder::from(&self.sdk).credentials_provider(provider);
        if let Some(url) = &self.iam_endpoint {
            config = config.endpoint_url(url);
        }
        let client = aws_sdk_iam::Client::from_conf(config.build());
        let mut results = Vec::new();
        let mut marker = None;
        loop {
            let page = client
                .simulate_principal_policy()
                .policy_source_arn(role_arn.as_str())
                .set_action_names(Some(actions.to_vec()))
                .set_marker(marker.take())
                .send()
                .await
                .map_err(aws_error)?;
            for result in page.evaluation_results() {
                use aws_sdk_iam::types::PolicyEvaluationDecisionType as D;
                results.push(ActionResult {
                    action: result.eval_action_name().to_owned(),
                    decision: match result.eval_decision() {
                        D::Allowed => ActionDecision::Allowed,
                        D::ExplicitDeny => ActionDecision::ExplicitDeny,
                        _ => ActionDecision::ImplicitDeny,
                    },
                });
            }
            match (page.is_truncated(), page.marker()) {
                (true, Some(next)) => marker = Some(next.to_owned()),
                _ => break,
            }
        }
        Ok(results)
    }
}

fn principal_from_caller_arn(arn: &str) -> String {
    // arn:aws:sts::123456789012:assumed-role/RoleName/session → arn:aws:iam::123456789012:role/RoleName
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    if let [_, partition, "sts", _, account, resource] = parts.as_slice()
        && let Some(rest) = resource.strip_prefix("assumed-role/")
        && let Some((role, _session)) = rest.split_once('/')
    {
        return format!("arn:{partition}:iam::{account}:role/{role}");
    }
    // AWS reports IAM users as arn:aws:iam::…:user/name; some emulators (moto) say
    // arn:aws:sts::…:user/name, which no trust policy accepts. Normalise it.
    if let [_, partition, "sts", _, account, resource] = parts.as_slice()
        && resource.starts_with("user/")
    {
        return format!("arn:{partition}:iam::{account}:{resource}");
    }
    arn.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assumed_role_callers_become_role_principals() {
        assert_eq!(
            principal_from_caller_arn("arn:aws:sts::123456789012:assumed-role/Broker/i-0abc"),
            "arn:aws:iam::123456789012:role/Broker"
        );
        assert_eq!(
            principal_from_caller_arn("arn:aws:iam::123456789012:user/broker"),
            "arn:aws:iam::123456789012:user/broker"
        );
        assert_eq!(
            principal_from_caller_arn("arn:aws:sts::123456789012:user/moto"),
            "arn:aws:iam::123456789012:user/moto"
        );
    }

    #[test]
    fn error_codes_are_read_from_either_error_body_shape() {
        let nested = r#"<ErrorResponse><Errors><Error><Code>AccessDenied</Code><Message>a &amp; b</Message></Error></Errors></ErrorResponse>"#;
        assert_eq!(xml_element(nested, "Code").as_deref(), Some("AccessDenied"));
        assert_eq!(xml_element(nested, "Message").as_deref(), Some("a & b"));
        assert_eq!(xml_element("<Code></Code>", "Code"), None);
        assert_eq!(xml_element("not xml", "Code"), None);
    }
}
