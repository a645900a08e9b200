//! Tenants, their quotas, and the API keys that authenticate them.

use chrono::{DateTime, Utc};
use eci_core::{KeyId, MilliCpu, Quota, Tenant, TenantId};
use sha2::{Digest, Sha256};
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::sql::{int, millis, new_id, opt_time, time, uint};
use crate::{Error, Result, Store};

/// An API key as listed to admins; the secret itself is never stored, only its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    /// The key's public id, shown in listings.
    pub id: KeyId,
    /// `None` for an admin key that belongs to no tenant.
    pub tenant_id: Option<TenantId>,
    /// Admin keys may call `/v1/admin/...`.
    pub admin: bool,
    /// What the key is for, as its creator named it.
    pub name: String,
    /// When the key was made.
    pub created_at: DateTime<Utc>,
    /// When the key was revoked; a revoked key authenticates nothing.
    pub revoked_at: Option<DateTime<Utc>>,
}

/// Who a request comes from, once its key checked out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The key the request came with.
    pub key_id: KeyId,
    /// The key is an admin key.
    pub admin: bool,
    /// The tenant the key acts for; `None` for an admin key of no tenant.
    pub tenant: Option<Tenant>,
}

/// Keys are long random secrets, so one unsalted SHA-256 is enough and keeps lookups one index probe.
pub fn hash_key(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

const TENANT_COLUMNS: &str =
    "id, name, max_cpu, max_instances, rate_per_second, used_cpu, used_instances, created_at";

fn tenant_from_row(row: &AnyRow) -> Result<Tenant> {
    let opt = |col: &str| -> Result<Option<u64>> {
        row.try_get::<Option<i64>, _>(col)?.map(|n| uint("quota", n)).transpose()
    };
    Ok(Tenant {
        id: TenantId(row.try_get("id")?),
        name: row.try_get("name")?,
        quota: Quota {
            max_cpu: opt("max_cpu")?.map(MilliCpu),
            max_instances: opt("max_instances")?,
            requests_per_second: opt("rate_per_second")?.map(|n| u32::try_from(n).unwrap_or(u32::MAX)),
        },
        used_cpu: MilliCpu(uint("usage", row.try_get("used_cpu")?)?),
        used_instances: uint("usage", row.try_get("used_instances")?)?,
        created_at: time(row.try_get("created_at")?)?,
    })
}

fn key_from_row(row: &AnyRow) -> Result<ApiKey> {
    Ok(ApiKey {
        id: KeyId(row.try_get("id")?),
        tenant_id: row.try_get::<Option<String>, _>("tenant_id")?.map(TenantId),
        admin: row.try_get::<i64, _>("is_admin")? == 1,
        name: row.try_get("name")?,
        created_at: time(row.try_get("created_at")?)?,
        revoked_at: opt_time(row.try_get("revoked_at")?)?,
    })
}

impl Store {
    /// Adds a tenant with its quota; names are unique.
    pub async fn create_tenant(&self, name: &str, quota: Quota, now: DateTime<Utc>) -> Result<Tenant> {
        let id = TenantId(new_id(TenantId::PREFIX));
        sqlx::query(
            "INSERT INTO tenants (id, name, max_cpu, max_instances, rate_per_second, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&id.0)
        .bind(name)
        .bind(quota.max_cpu.map(|c| int(c.0)))
        .bind(quota.max_instances.map(int))
        .bind(quota.requests_per_second.map(i64::from))
        .bind(millis(now))
        .execute(&self.pool)
        .await
        .map_err(|e| match Error::from(e) {
            Error::Conflict { constraint, .. } => Error::Conflict { what: "tenant name", constraint },
            other => other,
        })?;
        self.get_tenant(&id).await
    }

    /// One tenant, with what its live instances use.
    pub async fn get_tenant(&self, id: &TenantId) -> Result<Tenant> {
        let row = sqlx::query(&format!("SELECT {TENANT_COLUMNS} FROM tenants WHERE id = $1"))
            .bind(&id.0)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| Error::NotFound { what: "tenant", id: id.0.clone() })?;
        tenant_from_row(&row)
    }

    /// The tenant of this name, if there is one.
    pub async fn find_tenant_by_name(&self, name: &str) -> Result<Option<Tenant>> {
        let row = sqlx::query(&format!("SELECT {TENANT_COLUMNS} FROM tenants WHERE name = $1"))
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(tenant_from_row).transpose()
    }

    /// Every tenant, in id order.
    pub async fn list_tenants(&self) -> Result<Vec<Tenant>> {
        let rows = sqlx::query(&format!("SELECT {TENANT_COLUMNS} FROM tenants ORDER BY id"))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(tenant_from_row).collect()
    }

    /// Replaces a tenant's quota. Lowering it below current use refuses new work, ends nothing.
    pub async fn set_quota(&self, id: &TenantId, quota: Quota) -> Result<Tenant> {
        let done = sqlx::query(
            "UPDATE tenants SET max_cpu = $1, max_instances = $2, rate_per_second = $3 WHERE id = $4",
        )
        .bind(quota.max_cpu.map(|c| int(c.0)))
        .bind(quota.max_instances.map(int))
        .bind(quota.requests_per_second.map(i64::from))
        .bind(&id.0)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Err(Error::NotFound { what: "tenant", id: id.0.clone() });
        }
        self.get_tenant(id).await
    }

    /// Stores a new key by the hash of its secret.
    pub async fn create_key(
        &self,
        tenant: Option<&TenantId>,
        admin: bool,
        name: &str,
        secret: &str,
        now: DateTime<Utc>,
    ) -> Result<ApiKey> {
        if let Some(t) = tenant {
            self.get_tenant(t).await?;
        }
        let id = KeyId(new_id(KeyId::PREFIX));
        sqlx::query(
            "INSERT INTO api_keys (id, tenant_id, is_admin, key_hash, name, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&id.0)
        .bind(tenant.map(|t| t.0.clone()))
        .bind(i64::from(admin))
        .bind(hash_key(secret))
        .bind(name)
        .bind(millis(now))
        .execute(&self.pool)
        .await?;
        Ok(ApiKey {
            id,
            tenant_id: tenant.cloned(),
            admin,
            name: name.to_string(),
            created_at: now,
            revoked_at: None,
        })
    }

    /// The keys of one tenant, or every key when `tenant` is `None`, revoked ones included.
    pub async fn list_keys(&self, tenant: Option<&TenantId>) -> Result<Vec<ApiKey>> {
        let rows = match tenant {
            Some(t) => {
                sqlx::query("SELECT id, tenant_id, is_admin, name, created_at, revoked_at FROM api_keys WHERE tenant_id = $1 ORDER BY id")
                    .bind(&t.0)
                    .fetch_all(&self.pool)
                    .await?
            }
            None => {
                sqlx::query("SELECT id, tenant_id, is_admin, name, created_at, revoked_at FROM api_keys ORDER BY id")
                    .fetch_all(&self.pool)
                    .await?
            }
        };
        rows.iter().map(key_from_row).collect()
    }

    /// Revokes a key at once; requests with it are refused from then on.
    pub async fn revoke_key(&self, id: &KeyId, now: DateTime<Utc>) -> Result<()> {
        let done = sqlx::query("UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
            .bind(millis(now))
            .bind(&id.0)
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(Error::NotFound { what: "active API key", id: id.0.clone() });
        }
        Ok(())
    }

    /// Who holds this secret, if it is a live key.
    pub async fn authenticate(&self, secret: &str) -> Result<Option<Principal>> {
        let row = sqlx::query(
            "SELECT id, tenant_id, is_admin FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL",
        )
        .bind(hash_key(secret))
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let tenant = match row.try_get::<Option<String>, _>("tenant_id")? {
            Some(t) => Some(self.get_tenant(&TenantId(t)).await?),
            None => None,
        };
        Ok(Some(Principal {
            key_id: KeyId(row.try_get("id")?),
            admin: row.try_get::<i64, _>("is_admin")? == 1,
            tenant,
        }))
    }
}
