//! First start: the installation's secrets, the seeded catalog and the first operator key.
//!
//! Everything here runs in one write transaction guarded by the `initialized` marker, so two
//! instances starting at once on one empty database seed it exactly once.

use std::path::Path;

use anyhow::Context as _;
use rand::RngCore;
use store_api::auth::Scope;
use store_api::catalog::CatalogFile;

use crate::db::Db;
use crate::extract::parse_json;
use crate::ledger::receipts::ensure_receipt_key;
use crate::players::auth::{SessionSigner, create_api_key};
use crate::store::catalog::{CatalogRules, import_catalog, publish};

/// The default catalog inside the assets folder.
pub const CATALOG_FILE: &str = "catalog/catalog.json";

/// What starting up found or made.
#[derive(Debug)]
pub struct Installation {
    /// Signs player session tokens.
    pub signer: SessionSigner,
    /// The operator key created because the database had none; shown once.
    pub first_operator_key: Option<String>,
    /// The sandbox provider's API key (per installation).
    pub sandbox_api_key: String,
    /// The sandbox provider's webhook signing secret (per installation).
    pub sandbox_webhook_secret: Vec<u8>,
}

/// Reads a catalog file (the format `catalog export` writes).
///
/// # Errors
/// Fails when the file cannot be read or is not a valid catalog, naming the field at fault.
pub fn read_catalog_file(path: &Path) -> anyhow::Result<CatalogFile> {
    let bytes =
        std::fs::read(path).with_context(|| format!("cannot read catalog file {}", path.display()))?;
    parse_json(&bytes)
        .map_err(|error| anyhow::anyhow!("catalog file {} is not valid: {error}", path.display()))
}

/// What a database never initialized is filled with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seed {
    /// The default catalog from the assets folder, published as version 1 (a first `serve`).
    DefaultCatalog,
    /// Nothing: the caller brings its own catalog (`catalog import` into a new database).
    Nothing,
}

/// Makes sure the installation's secrets exist; on a database never initialized, seeds it as
/// `seed` says; and when no operator key exists, creates one with every scope.
///
/// # Errors
/// Fails when the database does or the seed catalog is invalid.
pub async fn prepare(
    db: &Db,
    assets_dir: &Path,
    seed: Seed,
    rules: &CatalogRules,
) -> anyhow::Result<Installation> {
    let mut tx = db.begin_write().await?;
    let mut secret = [0_u8; 32];
    rand::rng().fill_bytes(&mut secret);
    let mut sandbox_api_key = [0_u8; 24];
    rand::rng().fill_bytes(&mut sandbox_api_key);
    let mut sandbox_webhook_secret = [0_u8; 32];
    rand::rng().fill_bytes(&mut sandbox_webhook_secret);
    for (key, value) in [
        ("catalog_lock", String::new()),
        ("catalog_stamp", uuid::Uuid::now_v7().to_string()),
        ("session_key_1", hex::encode(secret)),
        ("sandbox_api_key", format!("sk_sandbox_{}", hex::encode(sandbox_api_key))),
        ("sandbox_webhook_secret", format!("whsec_{}", hex::encode(sandbox_webhook_secret))),
    ] {
        sqlx::query("insert into meta (key, value) values ($1, $2) on conflict (key) do nothing")
            .bind(key)
            .bind(value)
            .execute(&mut *tx)
            .await?;
    }
    let newly_initialized =
        sqlx::query("insert into meta (key, value) values ('initialized', $1) on conflict (key) do nothing")
            .bind(time::OffsetDateTime::now_utc().unix_timestamp().to_string())
            .execute(&mut *tx)
            .await?
            .rows_affected()
            == 1;
    if newly_initialized && seed == Seed::DefaultCatalog {
        let path = assets_dir.join(CATALOG_FILE);
        if path.exists() {
            let file = read_catalog_file(&path)?;
            import_catalog(&mut tx, &file, rules)
                .await
                .map_err(|error| anyhow::anyhow!("seeding {}: {error}", path.display()))?;
            publish(&mut tx, None, rules)
                .await
                .map_err(|error| anyhow::anyhow!("publishing the seed catalog: {error}"))?;
            tracing::info!(path = %path.display(), "seeded the catalog as version 1");
        } else {
            tracing::warn!(path = %path.display(), "no seed catalog found; starting with an empty catalog");
        }
    }
    ensure_receipt_key(&mut tx).await?;
    let key_count: i64 = sqlx::query_scalar("select count(*) from api_key").fetch_one(&mut *tx).await?;
    let first_operator_key = if key_count == 0 {
        let (key, _) = create_api_key(&mut tx, "first operator key", &Scope::ALL).await?;
        Some(key)
    } else {
        None
    };
    let secret_hex: String =
        sqlx::query_scalar("select value from meta where key = 'session_key_1'").fetch_one(&mut *tx).await?;
    let sandbox_api_key: String = sqlx::query_scalar("select value from meta where key = 'sandbox_api_key'")
        .fetch_one(&mut *tx)
        .await?;
    let sandbox_webhook_secret: String =
        sqlx::query_scalar("select value from meta where key = 'sandbox_webhook_secret'")
            .fetch_one(&mut *tx)
            .await?;
    tx.commit().await?;
    let secret = hex::decode(secret_hex).context("the stored session key is not hex")?;
    Ok(Installation {
        signer: SessionSigner::new(secret),
        first_operator_key,
        sandbox_api_key,
        sandbox_webhook_secret: sandbox_webhook_secret.into_bytes(),
    })
}
