//! Local records, so nothing in flight is lost and nothing is done twice: each money-moving
//! request is written to disk with its idempotency key *before* it is sent, and removed only
//! after the game has been told how it ended. A game that crashes or quits in between finds the
//! record on its next start and sends it again with the same key; the server answers with the
//! first answer instead of doing the work twice.
//!
//! Also holds the device id a player logs in with, made once per installation.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use store_api::auth::DeviceId;
use store_api::catalog::Sku;
use store_api::ledger::{ConsumeRequest, PurchaseRequest, RewardClaimRequest};
use store_api::orders::{CreateOrderRequest, PlatformProof, SettleTabRequest};

use crate::client::{IdempotencyKey, StoreError, StoreResult};

/// Records kept at most: a bound on what a resume sends at once. The plugin's in-flight limit
/// keeps the real number far below it.
pub const PENDING_RECORDS_MAX: usize = 1_024;

/// A money-moving request, as written before it is sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PendingRequest {
    /// `POST /v1/purchases`.
    Purchase(PurchaseRequest),
    /// `POST /v1/orders`.
    Order(CreateOrderRequest),
    /// `POST /v1/tab/settle`.
    SettleTab(SettleTabRequest),
    /// `POST /v1/rewards/{rule}`.
    Reward {
        /// The rule's code.
        rule: String,
        /// The claim.
        request: RewardClaimRequest,
    },
    /// `POST /v1/inventory/{sku}/consume`.
    Consume {
        /// The item.
        sku: Sku,
        /// How many.
        request: ConsumeRequest,
    },
    /// `POST /v1/platform-purchases/{apple,google}`: the platform's proof of purchase, kept until
    /// the server answers (the platform already charged the player).
    RedeemPlatform(PlatformProof),
}

impl PendingRequest {
    /// Whether sending it twice is safe only under its idempotency key. A platform purchase is
    /// redeemed once per platform transaction whatever the key, so it is never too old to send.
    #[must_use]
    pub fn needs_its_key(&self) -> bool {
        !matches!(self, Self::RedeemPlatform(_))
    }
}

/// How long a request may stay in flight before it is dropped instead of resumed: less than
/// the week the server keeps idempotency keys, so a resumed request always meets its key (and
/// the first answer) instead of running a second time.
pub const PENDING_RECORD_AGE_MAX: std::time::Duration = std::time::Duration::from_secs(6 * 24 * 60 * 60);

/// One request in flight.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingRecord {
    /// The key the request is sent with, every time.
    pub key: IdempotencyKey,
    /// The request.
    pub request: PendingRequest,
    /// Which player it belongs to, so one installation's records are never sent for another.
    pub player_id: uuid::Uuid,
    /// When the request was first made, Unix seconds (absent in records of earlier versions,
    /// which are resumed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at_s: Option<u64>,
}

impl PendingRecord {
    /// A new record, made now.
    #[must_use]
    pub fn new(request: PendingRequest, player_id: uuid::Uuid) -> Self {
        Self { key: IdempotencyKey::new(), request, player_id, created_at_s: Some(unix_now_s()) }
    }

    /// Whether the server may have forgotten this record's key, so resuming it could do its
    /// work twice.
    #[must_use]
    pub fn is_too_old(&self, now_s: u64) -> bool {
        self.request.needs_its_key()
            && self
                .created_at_s
                .is_some_and(|created| now_s.saturating_sub(created) > PENDING_RECORD_AGE_MAX.as_secs())
    }
}

/// Seconds since the Unix epoch.
#[must_use]
pub fn unix_now_s() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |since| since.as_secs())
}

/// The directory that holds the records and the device id.
#[derive(Debug, Clone)]
pub struct LocalStore {
    dir: PathBuf,
}

impl LocalStore {
    /// Opens (creating if needed) the store in `dir`.
    ///
    /// # Errors
    /// `Storage` when the directory cannot be made.
    pub fn open(dir: &Path) -> StoreResult<Self> {
        fs::create_dir_all(dir.join("pending")).map_err(|error| storage(dir, &error))?;
        Ok(Self { dir: dir.to_owned() })
    }

    /// Where the store lives.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes a record durably (a temporary file, flushed to disk, renamed into place, and the
    /// directory flushed) so a crash leaves either the whole record or none.
    ///
    /// # Errors
    /// `Storage` when the disk refuses.
    pub fn save(&self, record: &PendingRecord) -> StoreResult<()> {
        let bytes =
            serde_json::to_vec_pretty(record).map_err(|error| StoreError::Storage(error.to_string()))?;
        write_durably(&self.record_path(&record.key), &bytes)
    }

    /// Forgets a record once the game has its outcome.
    ///
    /// # Errors
    /// `Storage` when the file exists but cannot be removed.
    pub fn remove(&self, key: &IdempotencyKey) -> StoreResult<()> {
        let path = self.record_path(key);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(error) => Err(storage(&path, &error)),
        }
    }

    /// The records left by an earlier run, oldest first (keys are time-ordered UUIDs when the
    /// SDK made them). A record that cannot be read is skipped with a warning, not fatal.
    ///
    /// # Errors
    /// `Storage` when the directory cannot be listed.
    pub fn pending(&self) -> StoreResult<Vec<PendingRecord>> {
        let dir = self.dir.join("pending");
        let mut records = Vec::new();
        for entry in fs::read_dir(&dir).map_err(|error| storage(&dir, &error))? {
            let path = entry.map_err(|error| storage(&dir, &error))?.path();
            if path.extension().and_then(|ext| ext.to_str()) != Some("json") {
                continue;
            }
            match fs::read(&path).map_err(|error| error.to_string()).and_then(|bytes| {
                serde_json::from_slice::<PendingRecord>(&bytes).map_err(|error| error.to_string())
            }) {
                Ok(record) => records.push(record),
                Err(error) => {
                    tracing::warn!(path = %path.display(), %error, "skipping an unreadable pending record")
                }
            }
            if records.len() >= PENDING_RECORDS_MAX {
                break;
            }
        }
        records.sort_by(|a, b| a.key.as_str().cmp(b.key.as_str()));
        Ok(records)
    }

    /// This installation's device id: read from disk, or made and saved on first use.
    ///
    /// # Errors
    /// `Storage` when it can be neither read nor written.
    pub fn device_id(&self) -> StoreResult<DeviceId> {
        let path = self.dir.join("device_id");
        if let Ok(text) = fs::read_to_string(&path)
            && let Ok(id) = DeviceId::parse(text.trim())
        {
            return Ok(id);
        }
        let id = DeviceId::parse(&format!("device-{}", uuid::Uuid::now_v7()))
            .map_err(|error| StoreError::Storage(error.clone()))?;
        write_durably(&path, id.as_str().as_bytes())?;
        Ok(id)
    }

    fn record_path(&self, key: &IdempotencyKey) -> PathBuf {
        // Keys the SDK makes are UUIDs; a caller's own key is hex-encoded so any printable key
        // makes a safe file name.
        let name: String = key.as_str().bytes().map(|byte| format!("{byte:02x}")).collect();
        self.dir.join("pending").join(format!("{name}.json"))
    }
}

fn write_durably(path: &Path, bytes: &[u8]) -> StoreResult<()> {
    let temporary = path.with_extension("tmp");
    let mut file = fs::File::create(&temporary).map_err(|error| storage(&temporary, &error))?;
    file.write_all(bytes).map_err(|error| storage(&temporary, &error))?;
    file.sync_all().map_err(|error| storage(&temporary, &error))?;
    fs::rename(&temporary, path).map_err(|error| storage(path, &error))?;
    if let Some(parent) = path.parent() {
        // Flushing the directory makes the rename itself durable.
        fs::File::open(parent).and_then(|dir| dir.sync_all()).map_err(|error| storage(parent, &error))?;
    }
    Ok(())
}

fn storage(path: &Path, error: &std::io::Error) -> StoreError {
    StoreError::Storage(format!("{}: {error}", path.display()))
}

#[cfg(test)]
mod tests {
    use store_api::catalog::OfferId;
    use store_api::ledger::Quantity;

    use super::*;

    fn purchase_record(player_id: uuid::Uuid) -> PendingRecord {
        PendingRecord {
            created_at_s: Some(unix_now_s()),
            key: IdempotencyKey::new(),
            request: PendingRequest::Purchase(PurchaseRequest {
                offer_id: OfferId::parse("019a6b1e-0001-7000-8000-000000000001").expect("an offer id"),
                quantity: Quantity::one(),
                price_index: None,
                immediate_delivery_consent: false,
            }),
            player_id,
        }
    }

    #[test]
    fn a_saved_record_survives_reopening_until_it_is_removed() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let player = uuid::Uuid::now_v7();
        let first = purchase_record(player);
        let second = purchase_record(player);
        let store = LocalStore::open(dir.path()).expect("opened");
        store.save(&first).expect("saved");
        store.save(&second).expect("saved");

        let reopened = LocalStore::open(dir.path()).expect("reopened");
        assert_eq!(reopened.pending().expect("listed"), vec![first.clone(), second.clone()], "oldest first");

        reopened.remove(&first.key).expect("removed");
        reopened.remove(&first.key).expect("removing twice is fine");
        assert_eq!(reopened.pending().expect("listed"), vec![second]);
    }

    #[test]
    fn an_unreadable_record_is_skipped_not_fatal() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let store = LocalStore::open(dir.path()).expect("opened");
        fs::write(dir.path().join("pending").join("broken.json"), b"{half").expect("written");
        assert!(store.pending().expect("listed").is_empty());
    }

    #[test]
    fn the_device_id_is_made_once_and_kept() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let first = LocalStore::open(dir.path()).expect("opened").device_id().expect("made");
        let again = LocalStore::open(dir.path()).expect("opened").device_id().expect("read");
        assert_eq!(first, again);
    }
}
