//! Statuses, kinds and outcomes: enums, never strings re-parsed later. Each is stored as its
//! lowercase name (text columns with CHECK constraints in the schema).

use serde::{Deserialize, Serialize};

/// Defines a status enum: serde and the database use the snake_case variant names, which
/// `as_str` returns too.
macro_rules! status_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        #[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
        #[cfg_attr(
            feature = "sqlx",
            derive(sqlx::Type),
            sqlx(type_name = "text", rename_all = "snake_case")
        )]
        pub enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl $name {
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

status_enum! {
    /// A customer's status: `pending` until a role has been verified, then `active`;
    /// `disabled` blocks every new session and credential.
    CustomerStatus {
        Pending => "pending",
        Active => "active",
        Disabled => "disabled",
    }
}

status_enum! {
    /// A role's verification status.
    RoleStatus {
        /// AssumeRole with the external ID worked (and the trust check allowed activation).
        Verified => "verified",
        /// The last verification failed; `last_error` says why.
        Failed => "failed",
        /// Registered, not verified yet.
        Unverified => "unverified",
    }
}

status_enum! {
    /// The confused-deputy check: AssumeRole *without* the external ID.
    TrustCheck {
        /// Denied, as it must be.
        Passed => "passed",
        /// Allowed: anyone who learns the role ARN could use the broker to reach the account.
        Open => "open",
        /// The check could not complete (throttling, network).
        Inconclusive => "inconclusive",
        /// Not run (the AssumeRole with the external ID already failed).
        NotRun => "not_run",
    }
}

status_enum! {
    /// How an audited action ended.
    Outcome {
        Success => "success",
        /// The rules or AWS said no.
        Denied => "denied",
        /// Something failed (the database, AWS, the broker).
        Error => "error",
    }
}

status_enum! {
    /// Where a session stands now (computed from its end and revocation, not stored).
    SessionStatus {
        /// Waiting for a second person's approval (`POST /v1/sessions/{id}/approve`); no
        /// credentials until then, and the session's clock has not started.
        PendingApproval => "pending_approval",
        Active => "active",
        Expired => "expired",
        Revoked => "revoked",
        /// An approver turned the request down.
        Denied => "denied",
    }
}

status_enum! {
    /// A session's approval, when its tier needed one.
    ApprovalStatus {
        Pending => "pending",
        Approved => "approved",
        Denied => "denied",
    }
}

status_enum! {
    /// What the case system said about a support session's case when it opened.
    CaseCheck {
        /// The case system answered that the case is open.
        Open => "open",
        /// The case system could not be reached and `when_unavailable = "allow"` let the
        /// session open anyway: flagged for review.
        Unavailable => "unavailable",
    }
}

status_enum! {
    /// Where one delivery of one event to one webhook stands.
    DeliveryState {
        /// Not delivered yet: waiting for its turn or for its next attempt.
        Pending => "pending",
        /// The receiver answered 2xx.
        Delivered => "delivered",
        /// Every attempt failed; no more are made.
        Dead => "dead",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_read_and_write_their_lowercase_names() {
        assert_eq!(
            serde_json::to_string(&TrustCheck::NotRun).unwrap(),
            "\"not_run\""
        );
        assert_eq!(TrustCheck::NotRun.as_str(), "not_run");
        assert_eq!(
            serde_json::from_str::<CustomerStatus>("\"disabled\"").unwrap(),
            CustomerStatus::Disabled
        );
        assert!(serde_json::from_str::<Outcome>("\"maybe\"").is_err());
    }
}
