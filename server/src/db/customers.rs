//! `customer` and `external_id`.

use chrono::{DateTime, Utc};
use lanyard_api::customers::Customer;
use sqlx::{PgConnection, PgExecutor};

use crate::domain::{CustomerId, CustomerStatus};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct CustomerRow {
    pub id: CustomerId,
    pub display_name: String,
    pub status: CustomerStatus,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub disabled_at: Option<DateTime<Utc>>,
    /// The external ID in use.
    pub external_id: String,
    /// A rotated external ID that becomes current once a role verifies with it.
    pub pending_external_id: Option<String>,
    pub requires_approval: bool,
}

const SELECT: &str = "
    SELECT c.id, c.display_name, c.status, c.created_at, c.updated_at, c.disabled_at,
           cur.value AS external_id, pen.value AS pending_external_id, c.requires_approval
      FROM customer c
      JOIN external_id cur ON cur.customer_id = c.id AND cur.state = 'current'
      LEFT JOIN external_id pen ON pen.customer_id = c.id AND pen.state = 'pending'";

/// Inserts a customer and its first external ID. A duplicate id is a unique violation.
#[tracing::instrument(skip_all, fields(customer = id))]
pub async fn insert(
    conn: &mut PgConnection,
    id: &str,
    display_name: &str,
    external_id: &str,
    requires_approval: bool,
) -> Result<CustomerRow, sqlx::Error> {
    sqlx::query("INSERT INTO customer (id, display_name, requires_approval) VALUES ($1, $2, $3)")
        .bind(id)
        .bind(display_name)
        .bind(requires_approval)
        .execute(&mut *conn)
        .await?;
    sqlx::query("INSERT INTO external_id (value, customer_id, state) VALUES ($1, $2, 'current')")
        .bind(external_id)
        .bind(id)
        .execute(&mut *conn)
        .await?;
    get(conn, id).await?.ok_or(sqlx::Error::RowNotFound)
}

#[tracing::instrument(skip_all, fields(customer = id))]
pub async fn get<'e>(
    exec: impl PgExecutor<'e>,
    id: &str,
) -> Result<Option<CustomerRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!("{SELECT} WHERE c.id = $1")))
        .bind(id)
        .fetch_optional(exec)
        .await
}

/// Sets whether every support session of the customer needs approval. `false` when there is
/// no such customer.
pub async fn set_requires_approval(
    conn: &mut PgConnection,
    id: &str,
    required: bool,
) -> Result<bool, sqlx::Error> {
    let done =
        sqlx::query("UPDATE customer SET requires_approval = $2, updated_at = now() WHERE id = $1")
            .bind(id)
            .bind(required)
            .execute(conn)
            .await?;
    Ok(done.rows_affected() == 1)
}

/// Locks the customer row for the rest of the transaction (serialises rotation and
/// verification of one customer).
pub async fn lock(conn: &mut PgConnection, id: &str) -> Result<Option<CustomerRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{SELECT} WHERE c.id = $1 FOR UPDATE OF c"
    )))
    .bind(id)
    .fetch_optional(conn)
    .await
}

/// Customers in id order, optionally only those in `only`.
#[tracing::instrument(skip_all)]
pub async fn list<'e>(
    exec: impl PgExecutor<'e>,
    only: Option<&[String]>,
    status: Option<CustomerStatus>,
) -> Result<Vec<CustomerRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{SELECT} WHERE ($1::text[] IS NULL OR c.id = ANY($1)) AND ($2::text IS NULL OR c.status = $2)
          ORDER BY c.id"
    )))
    .bind(only)
    .bind(status)
    .fetch_all(exec)
    .await
}

/// Sets the status; `disabled` records when. Returns false if the customer does not exist.
#[tracing::instrument(skip_all, fields(customer = id, status = status.as_str()))]
pub async fn set_status(
    conn: &mut PgConnection,
    id: &str,
    status: CustomerStatus,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE customer
            SET status = $2, updated_at = now(),
                disabled_at = CASE WHEN $2 = 'disabled' THEN coalesce(disabled_at, now()) END
          WHERE id = $1",
    )
    .bind(id)
    .bind(status)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Replaces any pending external ID with `value`.
#[tracing::instrument(skip_all, fields(customer = id))]
pub async fn add_pending_external_id(
    conn: &mut PgConnection,
    id: &str,
    value: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE external_id SET state = 'retired', retired_at = now()
          WHERE customer_id = $1 AND state = 'pending'",
    )
    .bind(id)
    .execute(&mut *conn)
    .await?;
    sqlx::query("INSERT INTO external_id (value, customer_id, state) VALUES ($1, $2, 'pending')")
        .bind(value)
        .bind(id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Makes the pending external ID current and retires the old one.
#[tracing::instrument(skip_all, fields(customer = id))]
pub async fn promote_pending_external_id(
    conn: &mut PgConnection,
    id: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE external_id SET state = 'retired', retired_at = now()
          WHERE customer_id = $1 AND state = 'current'",
    )
    .bind(id)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "UPDATE external_id SET state = 'current' WHERE customer_id = $1 AND state = 'pending'",
    )
    .bind(id)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

impl From<CustomerRow> for Customer {
    fn from(row: CustomerRow) -> Self {
        Customer {
            id: row.id,
            display_name: row.display_name,
            external_id: row.external_id,
            pending_external_id: row.pending_external_id,
            status: row.status,
            created_at: row.created_at,
            updated_at: row.updated_at,
            disabled_at: row.disabled_at,
            requires_approval: row.requires_approval,
        }
    }
}
