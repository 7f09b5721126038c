//! Role verification: what AssumeRole said, with and without the external ID, and what the
//! broker makes of it (the decision table behind a role's `status`, `trust_check` and
//! `last_error`).
//!
//! The confused-deputy check (<https://docs.aws.amazon.com/IAM/latest/UserGuide/confused-deputy.html>):
//! a role that the broker can assume *without* the customer's external ID could be reached
//! by anyone who learns its ARN. With `enforce` such a role is not activated; with `warn` it
//! is, and flagged.

use super::{ExternalId, RoleStatus, TrustCheck};

/// An error AWS (or the SDK on its behalf) answered a call with: a code and its message,
/// never a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct AwsError {
    pub code: String,
    pub message: String,
}

impl AwsError {
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        AwsError {
            code: code.into(),
            message: message.into(),
        }
    }

    pub fn is_access_denied(&self) -> bool {
        self.code == "AccessDenied"
    }
}

/// What the verification calls found.
#[derive(Debug, Clone)]
pub enum Probe {
    /// No candidate external ID let the broker assume the role.
    Failed(AwsError),
    /// The role was assumed with `verified_with`; `without_external_id` is the answer to the
    /// same call without any external ID.
    Assumed {
        verified_with: ExternalId,
        without_external_id: Result<(), AwsError>,
    },
}

/// What a verification records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub status: RoleStatus,
    pub trust: TrustCheck,
    /// The external ID the role is now verified with (sessions use it).
    pub verified_with: Option<ExternalId>,
    /// Why it failed, or a warning.
    pub error: Option<String>,
    /// The code for the audit row of a failure.
    pub error_code: Option<String>,
}

/// Decides a verification. `still_valid` says whether the external ID the role was assumed
/// with is still one of the customer's (it may have been rotated meanwhile); `enforce` is
/// `LANYARD_TRUST_CHECK=enforce`.
pub fn decide(probe: &Probe, still_valid: impl Fn(&ExternalId) -> bool, enforce: bool) -> Decision {
    let failed = |trust, error: String, code: &str| Decision {
        status: RoleStatus::Failed,
        trust,
        verified_with: None,
        error: Some(error),
        error_code: Some(code.to_owned()),
    };
    let verified = |trust, verified_with: &ExternalId, warning: Option<String>| Decision {
        status: RoleStatus::Verified,
        trust,
        verified_with: Some(verified_with.clone()),
        error: warning,
        error_code: None,
    };
    let (verified_with, answer) = match probe {
        Probe::Failed(e) => {
            return failed(
                TrustCheck::NotRun,
                format!("AssumeRole with the external ID failed: {e}"),
                &e.code,
            );
        }
        Probe::Assumed {
            verified_with,
            without_external_id,
        } => (verified_with, without_external_id),
    };
    let trust = match answer {
        Ok(()) => TrustCheck::Open,
        Err(e) if e.is_access_denied() => TrustCheck::Passed,
        Err(_) => TrustCheck::Inconclusive,
    };
    if !still_valid(verified_with) {
        return failed(
            trust,
            "the external ID changed while the role was being verified; verify again".to_owned(),
            "ExternalIdChanged",
        );
    }
    match (trust, answer) {
        (TrustCheck::Passed, _) => verified(trust, verified_with, None),
        (TrustCheck::Open, _) if enforce => failed(
            trust,
            "the role's trust policy lets the broker assume it without the external ID \
             (confused-deputy risk); add the sts:ExternalId condition and verify again"
                .to_owned(),
            "TrustPolicyOpen",
        ),
        (TrustCheck::Open, _) => verified(
            trust,
            verified_with,
            Some(
                "warning: the trust policy does not require the external ID (confused-deputy \
                 risk); activated because LANYARD_TRUST_CHECK=warn"
                    .to_owned(),
            ),
        ),
        (_, Err(e)) if enforce => failed(
            trust,
            format!("the confused-deputy check could not complete: {e}"),
            &e.code,
        ),
        (_, Err(e)) => verified(
            trust,
            verified_with,
            Some(format!(
                "warning: the confused-deputy check could not complete: {e}"
            )),
        ),
        (_, Ok(())) => verified(trust, verified_with, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::CustomerId;

    fn external_id() -> ExternalId {
        ExternalId::generate("Lanyard", &CustomerId::parse("acme-corp").unwrap()).unwrap()
    }

    fn assumed(without: Result<(), AwsError>) -> Probe {
        Probe::Assumed {
            verified_with: external_id(),
            without_external_id: without,
        }
    }

    fn denied() -> Result<(), AwsError> {
        Err(AwsError::new("AccessDenied", "not without the external ID"))
    }

    fn throttled() -> Result<(), AwsError> {
        Err(AwsError::new("Throttling", "slow down"))
    }

    #[test]
    fn a_role_that_refuses_the_call_without_the_external_id_is_verified() {
        for enforce in [true, false] {
            let d = decide(&assumed(denied()), |_| true, enforce);
            assert_eq!(
                (d.status, d.trust),
                (RoleStatus::Verified, TrustCheck::Passed)
            );
            assert!(d.verified_with.is_some() && d.error.is_none());
        }
    }

    #[test]
    fn an_open_trust_policy_fails_under_enforce_and_is_flagged_under_warn() {
        let d = decide(&assumed(Ok(())), |_| true, true);
        assert_eq!((d.status, d.trust), (RoleStatus::Failed, TrustCheck::Open));
        assert_eq!(d.error_code.as_deref(), Some("TrustPolicyOpen"));
        assert!(d.verified_with.is_none());
        let d = decide(&assumed(Ok(())), |_| true, false);
        assert_eq!(
            (d.status, d.trust),
            (RoleStatus::Verified, TrustCheck::Open)
        );
        assert!(d.error.unwrap().starts_with("warning:"));
    }

    #[test]
    fn an_inconclusive_check_fails_under_enforce_and_warns_otherwise() {
        let d = decide(&assumed(throttled()), |_| true, true);
        assert_eq!(
            (d.status, d.trust),
            (RoleStatus::Failed, TrustCheck::Inconclusive)
        );
        assert_eq!(d.error_code.as_deref(), Some("Throttling"));
        let d = decide(&assumed(throttled()), |_| true, false);
        assert_eq!(d.status, RoleStatus::Verified);
        assert!(d.error.unwrap().contains("could not complete"));
    }

    #[test]
    fn a_failed_assume_role_or_a_rotated_external_id_fails() {
        let d = decide(
            &Probe::Failed(AwsError::new("AccessDenied", "no")),
            |_| true,
            true,
        );
        assert_eq!(
            (d.status, d.trust),
            (RoleStatus::Failed, TrustCheck::NotRun)
        );
        assert!(d.error.unwrap().contains("AccessDenied"));
        let d = decide(&assumed(denied()), |_| false, true);
        assert_eq!(d.status, RoleStatus::Failed);
        assert_eq!(d.error_code.as_deref(), Some("ExternalIdChanged"));
    }
}
