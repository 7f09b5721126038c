//! Bindings: which tokens of a trusted OpenID issuer become which Lanyard token. A binding
//! names claims that must all match (`*` matches any run of characters, `?` one
//! character), the role and customers the Lanyard token gets, the claim that becomes its
//! subject, and how long it lasts. The first binding that matches decides.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Map, Value};
use wildmatch::WildMatch;

use super::{CustomerId, TokenRole, check_plain_text};

/// The longest a token from an exchange may last.
pub const MAX_TTL: Duration = Duration::from_secs(12 * 3600);
/// Without `ttl`: long enough for a CI job or a working session, short enough to matter.
pub const DEFAULT_TTL: Duration = Duration::from_secs(15 * 60);
/// The longest subject a Lanyard token holds (as `issued_token.subject`).
pub const MAX_SUBJECT_CHARS: usize = 128;

/// Which customers a binding grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Customers {
    /// `customers = ["*"]`: every customer (a token without a customer limit).
    All,
    /// `customers = ["acme-corp", ...]`.
    Listed(Vec<CustomerId>),
    /// `customers_claim = "..."`: the customer ids the token's claim holds (a string or an
    /// array of strings).
    FromClaim(String),
}

#[derive(Debug, Clone)]
pub struct Binding {
    /// For audit rows and messages: the binding's `name`, or `#<position>` (1-based).
    pub name: String,
    pub claims: Vec<(String, Pattern)>,
    pub role: TokenRole,
    pub customers: Customers,
    pub subject_claim: String,
    /// Put before the subject claim's value, so that a subject from this issuer cannot pass
    /// for a subject of another issuer or of an operator-issued token.
    pub subject_prefix: String,
    pub ttl: Duration,
}

/// What a binding is written with (the config file's fields, checked by [`Binding::new`]).
pub struct BindingSpec<'a> {
    pub name: String,
    pub claims: &'a BTreeMap<String, String>,
    pub role: TokenRole,
    pub customers: Option<&'a [String]>,
    pub customers_claim: Option<&'a str>,
    pub subject_claim: Option<&'a str>,
    pub subject_prefix: String,
    pub ttl: Option<Duration>,
}

/// A claim pattern as written, and compiled.
#[derive(Debug, Clone)]
pub struct Pattern {
    pub raw: String,
    matcher: WildMatch,
}

impl Pattern {
    pub fn new(raw: &str) -> Self {
        Pattern {
            raw: raw.to_owned(),
            matcher: WildMatch::new(raw),
        }
    }

    /// A string claim matches when the pattern does; an array when one of its strings does;
    /// numbers and booleans by their JSON text. Objects and null never match.
    fn matches(&self, value: &Value) -> bool {
        match value {
            Value::String(s) => self.matcher.matches(s),
            Value::Array(items) => items.iter().any(|item| match item {
                Value::String(s) => self.matcher.matches(s),
                _ => false,
            }),
            Value::Number(n) => self.matcher.matches(&n.to_string()),
            Value::Bool(b) => self.matcher.matches(if *b { "true" } else { "false" }),
            Value::Null | Value::Object(_) => false,
        }
    }
}

/// The default prefix of an issuer's subjects: the issuer without its scheme and trailing
/// `/`, then `:` (`token.actions.githubusercontent.com:`). Refused exchanges are audited
/// under the same form, so neither can pass for another issuer's or an operator's subject.
pub fn subject_prefix_of(issuer: &str) -> String {
    let rest = issuer.split_once("://").map_or(issuer, |(_, rest)| rest);
    format!("{}:", rest.trim_end_matches('/'))
}

/// Where an exchanged token came from: the trusted issuer and the subject it vouched for
/// (the external token's `sub`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Provenance {
    pub iss: String,
    pub sub: String,
}

/// What a matched binding gives the token's holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The binding's name, for the audit row.
    pub binding: String,
    pub subject: String,
    pub role: TokenRole,
    /// `None`: every customer.
    pub customers: Option<Vec<CustomerId>>,
    pub ttl: Duration,
}

impl Binding {
    /// Checks the settings as written in the config file.
    pub fn new(spec: BindingSpec<'_>) -> Result<Self, String> {
        let BindingSpec {
            name,
            claims,
            role,
            customers,
            customers_claim,
            subject_claim,
            subject_prefix,
            ttl,
        } = spec;
        let customers = match (customers, customers_claim) {
            (Some(_), Some(_)) => return Err("set customers or customers_claim, not both".into()),
            (None, None) => {
                return Err(
                    "set customers (ids, or [\"*\"] for every customer) or customers_claim".into(),
                );
            }
            (None, Some(claim)) if !claim.is_empty() => Customers::FromClaim(claim.to_owned()),
            (None, Some(_)) => return Err("customers_claim must not be empty".into()),
            (Some([all]), None) if all == "*" => Customers::All,
            (Some([]), None) => return Err("customers must not be empty".into()),
            (Some(list), None) => Customers::Listed(
                list.iter()
                    .map(|c| CustomerId::parse(c).map_err(|e| format!("customers: {e}")))
                    .collect::<Result<_, _>>()?,
            ),
        };
        let ttl = ttl.unwrap_or(DEFAULT_TTL);
        if ttl > MAX_TTL {
            return Err("ttl must be at most 12h".into());
        }
        if claims.keys().any(String::is_empty) {
            return Err("claim names must not be empty".into());
        }
        // A binding that pins no claim takes every token of the issuer: on a shared issuer
        // (GitHub Actions, gitlab.com) anyone's.
        if !claims
            .values()
            .any(|p| p.chars().any(|c| c != '*' && c != '?'))
        {
            return Err(
                "claims must pin at least one claim to a value (a pattern that is not only \
                 * and ?): a binding without one takes every token of the issuer"
                    .into(),
            );
        }
        if subject_prefix.chars().count() > 100 {
            return Err("subject_prefix must be at most 100 characters".into());
        }
        check_plain_text("subject_prefix", &subject_prefix).map_err(|e| e.to_string())?;
        Ok(Binding {
            name,
            claims: claims
                .iter()
                .map(|(name, pattern)| (name.clone(), Pattern::new(pattern)))
                .collect(),
            role,
            customers,
            subject_claim: subject_claim.unwrap_or("sub").to_owned(),
            subject_prefix,
            ttl,
        })
    }

    /// Whether every claim this binding names is present and matches.
    pub fn matches(&self, claims: &Map<String, Value>) -> bool {
        self.claims
            .iter()
            .all(|(name, pattern)| claims.get(name).is_some_and(|v| pattern.matches(v)))
    }

    /// The grant for a token this binding matched; `Err` says why the token cannot have it
    /// (its subject or customer claim is unusable).
    pub fn grant(&self, claims: &Map<String, Value>) -> Result<Grant, String> {
        let subject = match claims.get(&self.subject_claim) {
            Some(Value::String(s)) if !s.is_empty() => format!("{}{s}", self.subject_prefix),
            _ => {
                return Err(format!(
                    "the token has no string claim '{}' to name its holder",
                    self.subject_claim
                ));
            }
        };
        if subject.chars().count() > MAX_SUBJECT_CHARS {
            return Err(format!(
                "subject_prefix and the token's '{}' claim together exceed \
                 {MAX_SUBJECT_CHARS} characters (set a shorter subject_prefix)",
                self.subject_claim
            ));
        }
        check_plain_text(&self.subject_claim, &subject).map_err(|e| e.to_string())?;
        let customers = match &self.customers {
            Customers::All => None,
            Customers::Listed(list) => Some(list.clone()),
            Customers::FromClaim(claim) => Some(customers_from(claims.get(claim), claim)?),
        };
        Ok(Grant {
            binding: self.name.clone(),
            subject,
            role: self.role,
            customers,
            ttl: self.ttl,
        })
    }
}

/// The customer ids in a claim: one string or an array of strings, each a valid id.
fn customers_from(value: Option<&Value>, claim: &str) -> Result<Vec<CustomerId>, String> {
    let bad = || format!("the token's '{claim}' claim holds no valid customer ids");
    let names: Vec<&str> = match value {
        Some(Value::String(s)) => vec![s.as_str()],
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().ok_or_else(bad))
            .collect::<Result<_, _>>()?,
        _ => return Err(bad()),
    };
    if names.is_empty() {
        return Err(bad());
    }
    names
        .into_iter()
        .map(|n| CustomerId::parse(n).map_err(|_| bad()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn binding(claims: &[(&str, &str)]) -> Binding {
        let claims = claims
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Binding::new(BindingSpec {
            name: "#1".into(),
            claims: &claims,
            role: TokenRole::Service,
            customers: Some(&["acme-corp".to_owned()]),
            customers_claim: None,
            subject_claim: Some("job_workflow_ref"),
            subject_prefix: "ci:".into(),
            ttl: None,
        })
        .unwrap()
    }

    fn claims(value: Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    #[test]
    fn every_named_claim_must_match_and_stars_glob() {
        let b = binding(&[("repository", "acme/billing-*"), ("ref", "refs/heads/main")]);
        let ok = claims(json!({"repository": "acme/billing-api", "ref": "refs/heads/main"}));
        assert!(b.matches(&ok));
        let other_repo = claims(json!({"repository": "acme/other", "ref": "refs/heads/main"}));
        assert!(!b.matches(&other_repo));
        let other_ref = claims(json!({"repository": "acme/billing-api", "ref": "refs/heads/dev"}));
        assert!(!b.matches(&other_ref));
        let missing = claims(json!({"repository": "acme/billing-api"}));
        assert!(!b.matches(&missing));
        // Arrays match when one element does; objects never.
        let b = binding(&[("groups", "lanyard-*")]);
        assert!(b.matches(&claims(json!({"groups": ["staff", "lanyard-support"]}))));
        assert!(!b.matches(&claims(json!({"groups": {"lanyard-x": true}}))));
    }

    #[test]
    fn grants_take_the_subject_and_customers_from_the_named_claims() {
        let b = binding(&[("repository", "acme/*")]);
        let grant = b
            .grant(&claims(
                json!({"sub": "x", "job_workflow_ref": "acme/billing/.github/workflows/d.yml@refs/heads/main"}),
            ))
            .unwrap();
        assert_eq!(
            grant.subject,
            "ci:acme/billing/.github/workflows/d.yml@refs/heads/main"
        );
        assert_eq!(grant.ttl, DEFAULT_TTL);
        assert!(b.grant(&claims(json!({"sub": "x"}))).is_err());

        let pinned = BTreeMap::from([("email_verified".to_owned(), "true".to_owned())]);
        let from_claim = Binding::new(BindingSpec {
            name: "ops".into(),
            claims: &pinned,
            role: TokenRole::Support,
            customers: None,
            customers_claim: Some("lanyard_customers"),
            subject_claim: None,
            subject_prefix: String::new(),
            ttl: Some(Duration::from_secs(3600)),
        })
        .unwrap();
        let grant = from_claim
            .grant(&claims(
                json!({"sub": "alice", "lanyard_customers": ["acme-corp", "globex"]}),
            ))
            .unwrap();
        assert_eq!(grant.customers.unwrap().len(), 2);
        assert!(
            from_claim
                .grant(&claims(
                    json!({"sub": "alice", "lanyard_customers": ["NOT VALID"]})
                ))
                .is_err()
        );
        assert!(
            from_claim
                .grant(&claims(json!({"sub": "alice", "lanyard_customers": []})))
                .is_err()
        );
    }

    #[test]
    fn settings_that_leave_the_customers_or_the_claims_open_are_refused() {
        let pinned = BTreeMap::from([("repository".to_owned(), "acme/*".to_owned())]);
        fn spec<'a>(
            claims: &'a BTreeMap<String, String>,
            customers: Option<&'a [String]>,
            customers_claim: Option<&'a str>,
            ttl: Option<Duration>,
        ) -> BindingSpec<'a> {
            BindingSpec {
                name: "b".into(),
                claims,
                role: TokenRole::Service,
                customers,
                customers_claim,
                subject_claim: None,
                subject_prefix: String::new(),
                ttl,
            }
        }
        let new = |customers: Option<&[String]>, claim: Option<&str>, ttl| {
            Binding::new(spec(&pinned, customers, claim, ttl))
        };
        // No claim pinned to a value: every token of the issuer would match.
        for open in [
            BTreeMap::new(),
            BTreeMap::from([("sub".to_owned(), "*".to_owned())]),
        ] {
            assert!(Binding::new(spec(&open, Some(&["*".into()]), None, None)).is_err());
        }
        assert!(new(None, None, None).is_err());
        assert!(new(Some(&["acme-corp".into()]), Some("c"), None).is_err());
        assert!(new(Some(&[]), None, None).is_err());
        assert!(new(Some(&["Not An Id".into()]), None, None).is_err());
        assert!(
            new(
                Some(&["*".into()]),
                None,
                Some(MAX_TTL + Duration::from_secs(1))
            )
            .is_err()
        );
        assert_eq!(
            new(Some(&["*".into()]), None, None).unwrap().customers,
            Customers::All
        );
    }
}
