//! The audit export as CSV: RFC 4180 records with a header row, guarded against formulas.

use chrono::SecondsFormat;

use crate::db::audit_query::EventRow;

/// The CSV columns: the JSON fields, in the same order.
pub(super) const CSV_HEADER: [&str; 18] = [
    "id",
    "occurred_at",
    "request_id",
    "actor",
    "actor_role",
    "action",
    "customer",
    "role",
    "session_id",
    "case_id",
    "profile",
    "source_ip",
    "user_agent",
    "outcome",
    "error_code",
    "duration_ms",
    "cache_hit",
    "detail",
];

pub(super) fn csv_row(row: &EventRow) -> String {
    let text = |v: &Option<String>| v.clone().unwrap_or_default();
    let cells = [
        row.id.to_string(),
        row.occurred_at.to_rfc3339_opts(SecondsFormat::AutoSi, true),
        text(&row.request_id),
        row.actor.clone(),
        text(&row.actor_role),
        row.action.clone(),
        text(&row.customer_id),
        text(&row.role_name),
        row.session_id.map(|s| s.to_string()).unwrap_or_default(),
        text(&row.case_id),
        text(&row.profile),
        text(&row.source_ip),
        text(&row.user_agent),
        row.outcome.as_str().to_owned(),
        text(&row.error_code),
        row.duration_ms.map(|d| d.to_string()).unwrap_or_default(),
        row.cache_hit.map(|b| b.to_string()).unwrap_or_default(),
        row.detail
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
    ];
    csv_record(cells.iter().map(String::as_str))
}

/// One RFC 4180 record (<https://www.rfc-editor.org/rfc/rfc4180#section-2>) ending in CRLF.
/// A cell that a spreadsheet would run as a formula (starting with `=`, `+`, `-`, `@`, tab or
/// carriage return) gets a leading `'`, as OWASP advises
/// (<https://owasp.org/www-community/attacks/CSV_Injection>): actors, user agents and case ids
/// come from clients.
pub(super) fn csv_record<'a>(cells: impl Iterator<Item = &'a str>) -> String {
    let mut out = String::new();
    for (i, cell) in cells.enumerate() {
        if i > 0 {
            out.push(',');
        }
        let guarded = if cell.starts_with(['=', '+', '-', '@', '\t', '\r']) {
            format!("'{cell}")
        } else {
            cell.to_owned()
        };
        if guarded.contains([',', '"', '\r', '\n']) {
            out.push('"');
            out.push_str(&guarded.replace('"', "\"\""));
            out.push('"');
        } else {
            out.push_str(&guarded);
        }
    }
    out.push_str("\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_cells_are_quoted_and_guarded_against_formulas() {
        let record = csv_record(
            [
                "plain",
                "a,b",
                "say \"hi\"",
                "line\nbreak",
                "=SUM(A1)",
                "-2+3",
                "+1",
                "@cmd",
                "\tx",
                "",
                "a=b",
            ]
            .into_iter(),
        );
        assert_eq!(
            record,
            "plain,\"a,b\",\"say \"\"hi\"\"\",\"line\nbreak\",'=SUM(A1),'-2+3,'+1,'@cmd,'\tx,,a=b\r\n"
        );
    }
}
