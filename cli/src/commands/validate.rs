//! `lanyard validate`: which IAM actions the role behind a profile allows, as the broker
//! finds out with iam:SimulatePrincipalPolicy run as the role (its `required_actions`, or the
//! actions named), printed as a table or JSON; the exit status says whether all are allowed.

use std::process::ExitCode;

use anyhow::bail;
use lanyard_api::SessionKind;
use lanyard_api::roles::{ActionDecision, ValidateRole, Validation};
use serde_json::json;

use super::access::pick_role;
use super::queries::{table, wire_time};
use super::{Ctx, print, print_json};
use crate::config::Kind;
use crate::{ValidateArgs, client, credentials};

pub fn validate(ctx: &Ctx, args: &ValidateArgs) -> anyhow::Result<ExitCode> {
    let config = ctx.config()?;
    let profile = ctx.store.profile(&config, &args.profile)?;
    let customer = client::customer_id(&profile.customer)?;
    let role = profile.role.as_deref().map(client::role_name).transpose()?;
    let kind = match profile.kind {
        Kind::Support => SessionKind::Support,
        Kind::Customer => SessionKind::Customer,
    };
    // No --actions: no body at all, and the broker checks (and keeps) the required_actions.
    let body = (!args.actions.is_empty()).then(|| ValidateRole {
        actions: Some(args.actions.clone()),
    });
    let client = ctx.client_for(&config, &args.profile, profile)?;
    let (role, validation) = credentials::runtime()?.block_on(async {
        // A customer profile may leave the role out: the customer's one role for it.
        let role = match role {
            Some(role) => role.to_string(),
            None => pick_role(&client, &customer, kind).await?,
        };
        let validation: Validation = client
            .post(
                &format!("/v1/customers/{customer}/roles/{role}/validate"),
                body.as_ref(),
            )
            .await?;
        anyhow::Ok((role, validation))
    })?;
    let denied: Vec<&str> = validation
        .results
        .iter()
        .filter(|r| r.decision != ActionDecision::Allowed)
        .map(|r| r.action.as_str())
        .collect();
    let all_allowed = validation.error.is_none() && denied.is_empty();
    let status = if all_allowed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    };
    if ctx.json_output() {
        print_json(&json!({
            "profile": args.profile, "customer": customer, "role": role,
            "validation": validation, "all_allowed": all_allowed,
        }))?;
        return Ok(status);
    }
    if let Some(error) = &validation.error {
        bail!(
            "role {role} of {customer} could not be checked at {}: {error}",
            wire_time(validation.checked_at)
        );
    }
    let what = if args.actions.is_empty() {
        "its required actions"
    } else {
        "the actions asked"
    };
    let rows: Vec<Vec<String>> = validation
        .results
        .iter()
        .map(|r| vec![r.action.clone(), r.decision.as_str().to_owned()])
        .collect();
    let verdict = if denied.is_empty() {
        format!("All {} actions are allowed.\n", validation.results.len())
    } else {
        format!(
            "{} of {} actions are not allowed: {}.\n",
            denied.len(),
            validation.results.len(),
            denied.join(", ")
        )
    };
    print(&format!(
        "Role {role} of {customer}, checked {} as the role ({what}):\n{}\n{verdict}",
        wire_time(validation.checked_at),
        table(&["ACTION", "DECISION"], &rows),
    ))?;
    Ok(status)
}
