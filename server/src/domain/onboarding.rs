//! The onboarding document: what a customer's AWS administrator needs to create the role
//! the broker assumes (external ID, trust policy, CloudFormation template, quick-create
//! link, steps).

use std::collections::BTreeMap;

use lanyard_api::customers::Onboarding;

use super::CustomerId;

/// The CloudFormation template that creates the customer's role, as shipped in `deploy/`.
pub const CUSTOMER_ROLE_TEMPLATE: &str = include_str!("../../../deploy/aws/customer-role.yaml");
/// The role name the template and documentation suggest.
pub const SUGGESTED_ROLE_NAME: &str = "LanyardAccess";

/// A customer's external IDs: the current one, and a rotated one waiting to be verified.
pub struct ExternalIds<'a> {
    pub current: &'a str,
    pub pending: Option<&'a str>,
}

/// The document for `customer`, whose role must trust `broker` (the broker's principal ARN).
/// `template_url` is the template's S3 URL, for a console quick-create link.
pub fn onboarding_document(
    customer: &CustomerId,
    ids: ExternalIds<'_>,
    broker: &str,
    template_url: Option<&str>,
) -> Onboarding {
    // During rotation the new ID goes into new roles; the trust policy accepts both, so a
    // role created from it verifies with either.
    let external_id = ids.pending.unwrap_or(ids.current).to_owned();
    let accepted: Vec<String> = std::iter::once(ids.current)
        .chain(ids.pending)
        .map(str::to_owned)
        .collect();
    let condition_value = match accepted.as_slice() {
        [one] => serde_json::json!(one),
        many => serde_json::json!(many),
    };
    let trust_policy = serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Sid": "LanyardBroker",
            "Effect": "Allow",
            "Principal": { "AWS": broker },
            "Action": ["sts:AssumeRole", "sts:TagSession", "sts:SetSourceIdentity"],
            "Condition": { "StringEquals": { "sts:ExternalId": condition_value } }
        }]
    });
    let parameters = BTreeMap::from([
        ("BrokerPrincipalArn".to_owned(), broker.to_owned()),
        ("ExternalId".to_owned(), external_id.clone()),
        ("RoleName".to_owned(), SUGGESTED_ROLE_NAME.to_owned()),
    ]);
    let quick_create_url = template_url.map(|url| {
        let params: String = parameters
            .iter()
            .map(|(k, v)| format!("&param_{k}={}", urlencoding::encode(v)))
            .collect();
        format!(
            "https://console.aws.amazon.com/cloudformation/home#/stacks/quickcreate?templateURL={}&stackName={}{params}",
            urlencoding::encode(url),
            urlencoding::encode(&format!("lanyard-{customer}")),
        )
    });
    let steps = vec![
        format!(
            "In the customer's AWS account, create an IAM role (suggested name {SUGGESTED_ROLE_NAME}) \
             whose trust policy is trust_policy, with the permissions the broker may use"
        ),
        "Or deploy cloudformation_template with cloudformation_parameters (quick_create_url \
         opens it in the console when present)"
            .to_owned(),
        format!(
            "Register the role ARN: PUT /v1/customers/{customer}/roles/<name> {{\"role_arn\": \"arn:aws:iam::<account>:role/{SUGGESTED_ROLE_NAME}\"}}"
        ),
    ];
    Onboarding {
        customer: customer.clone(),
        external_id,
        accepted_external_ids: accepted,
        broker_principal_arn: broker.to_owned(),
        trust_policy,
        cloudformation_template: CUSTOMER_ROLE_TEMPLATE.to_owned(),
        cloudformation_parameters: parameters,
        quick_create_url,
        steps,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BROKER: &str = "arn:aws:iam::123456789012:role/Broker";

    #[test]
    fn the_trust_policy_names_the_broker_and_requires_the_external_id() {
        let acme = CustomerId::parse("acme-corp").unwrap();
        let doc = onboarding_document(
            &acme,
            ExternalIds {
                current: "Lanyard-acme-corp-1",
                pending: None,
            },
            BROKER,
            None,
        );
        let statement = &doc.trust_policy["Statement"][0];
        assert_eq!(statement["Principal"]["AWS"], BROKER);
        assert_eq!(
            statement["Condition"]["StringEquals"]["sts:ExternalId"],
            "Lanyard-acme-corp-1"
        );
        assert_eq!(doc.external_id, "Lanyard-acme-corp-1");
        assert!(doc.quick_create_url.is_none());
        assert_eq!(
            doc.cloudformation_parameters["ExternalId"],
            "Lanyard-acme-corp-1"
        );
    }

    #[test]
    fn during_rotation_both_ids_are_accepted_and_the_new_one_is_handed_out() {
        let acme = CustomerId::parse("acme-corp").unwrap();
        let doc = onboarding_document(
            &acme,
            ExternalIds {
                current: "old",
                pending: Some("new"),
            },
            BROKER,
            Some("https://s3.amazonaws.com/bucket/customer role.yaml"),
        );
        assert_eq!(doc.external_id, "new");
        assert_eq!(doc.accepted_external_ids, ["old", "new"]);
        assert_eq!(
            doc.trust_policy["Statement"][0]["Condition"]["StringEquals"]["sts:ExternalId"],
            serde_json::json!(["old", "new"])
        );
        let url = doc.quick_create_url.unwrap();
        assert!(url.contains(
            "templateURL=https%3A%2F%2Fs3.amazonaws.com%2Fbucket%2Fcustomer%20role.yaml"
        ));
        assert!(url.contains("&param_ExternalId=new"));
        assert!(url.contains("stackName=lanyard-acme-corp"));
    }
}
