//! `POST /v1/inventory/{sku}/consume`: consumables used up.

use super::*;

/// `POST /v1/inventory/{sku}/consume`: use up consumables.
#[derive(Debug, Clone)]
pub struct ConsumeOp {
    /// The live catalog.
    pub catalog: Arc<CatalogCache>,
    /// The player.
    pub player_id: Uuid,
    /// The item.
    pub sku: Sku,
    /// How many.
    pub request: ConsumeRequest,
}

/// Checks that `quantity` of `sku` (of which the player holds `held`) can be used up.
fn check_consumable(catalog: &RenderedCatalog, sku: &Sku, held: i64, quantity: i64) -> ApiResult<()> {
    let kind = catalog.item(sku).map(|item| item.kind);
    if held == 0 && kind.is_none() {
        return Err(ApiError::not_found("sku", sku.as_str()));
    }
    if kind.is_some_and(|kind| kind != ItemKind::Consumable) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            ErrorCode::NotConsumable,
            format!("`{sku}` is not a consumable"),
        )
        .with_detail("sku", sku.as_str()));
    }
    if held < quantity {
        return Err(insufficient_quantity(sku, quantity, held));
    }
    Ok(())
}

fn consume_entry(player_id: Uuid, sku: &Sku, quantity: i64) -> NewEntry {
    NewEntry {
        kind: EntryKind::Consume,
        player_id: Some(player_id),
        actor: player_actor(player_id),
        reason: None,
        postings: Vec::new(),
        items: vec![ItemDelta { sku: sku.clone(), delta: -quantity, quantity_max: i64::MAX }],
        clawback: false,
    }
}

impl MoneyOp for ConsumeOp {
    type Output = ConsumeResult;
    const SUCCESS: StatusCode = StatusCode::OK;

    async fn apply(self, conn: &mut AnyConnection) -> ApiResult<ConsumeResult> {
        let Self { catalog, player_id, sku, request } = self;
        lock_player(conn, player_id).await?.refuse_if_blocked()?;
        let catalog = catalog.get(conn).await?;
        let held = item_quantity(conn, player_id, &sku).await?;
        let quantity = request.quantity.get();
        check_consumable(&catalog, &sku, held, quantity)?;
        let entry = append_entry(conn, &consume_entry(player_id, &sku, quantity), &BTreeMap::new()).await?;
        Ok(ConsumeResult { entry_id: entry.id, sku, consumed: quantity, remaining: held - quantity })
    }

    fn batch_player(&self) -> Option<Uuid> {
        Some(self.player_id)
    }

    fn decide(&self, ledger: &mut BatchLedger) -> ApiResult<Option<ConsumeResult>> {
        let player_id = self.player_id;
        let Some(catalog) = self.catalog.cached(ledger.catalog_stamp()) else { return Ok(None) };
        ledger.unblocked_player(player_id)?;
        let held = ledger.item_quantity(player_id, &self.sku);
        let quantity = self.request.quantity.get();
        check_consumable(&catalog, &self.sku, held, quantity)?;
        let Some(entry) = ledger.append(&consume_entry(player_id, &self.sku, quantity), &BTreeMap::new())?
        else {
            return Ok(None);
        };
        Ok(Some(ConsumeResult {
            entry_id: entry.id,
            sku: self.sku.clone(),
            consumed: quantity,
            remaining: held - quantity,
        }))
    }
}
