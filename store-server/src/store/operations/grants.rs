//! Currency and items given: reward claims under an operator's rules and caps, operator grants,
//! and every currency's initial grant to a new player.

use super::*;

/// `POST /v1/rewards/{rule}`: earn currency under an operator's rule and its caps.
#[derive(Debug, Clone)]
pub struct RewardOp {
    /// The live catalog.
    pub catalog: Arc<CatalogCache>,
    /// The player.
    pub player_id: Uuid,
    /// The rule.
    pub rule: RuleCode,
    /// The claim.
    pub request: RewardClaimRequest,
}

/// The amount a claim earns under `rule`: what it names, or the rule's amount.
fn claim_amount(rule: &RewardRule, request: &RewardClaimRequest) -> ApiResult<i64> {
    let amount = request.amount.unwrap_or(rule.amount);
    if !(1..=rule.amount).contains(&amount) {
        return Err(ApiError::invalid(
            "amount",
            format!("amount must be from 1 to the rule's {}", rule.amount),
        ));
    }
    Ok(amount)
}

/// The rule's capped windows at `now`: (name, cap, start, length).
fn capped_windows(
    rule: &RewardRule,
    now: OffsetDateTime,
) -> Vec<(&'static str, i64, OffsetDateTime, Duration)> {
    let minute = now.replace_second(0).and_then(|at| at.replace_nanosecond(0)).unwrap_or(now);
    let hour = minute.replace_minute(0).unwrap_or(minute);
    let day = now.replace_time(Time::MIDNIGHT);
    [
        ("minute", rule.cap_per_minute, minute, Duration::MINUTE),
        ("hour", rule.cap_per_hour, hour, Duration::HOUR),
        ("day", rule.cap_per_day, day, Duration::DAY),
    ]
    .into_iter()
    .filter_map(|(window, cap, start, length)| cap.map(|cap| (window, cap, start, length)))
    .collect()
}

/// Refuses a claim that would pass one of the rule's caps, given what was earned in each
/// capped window (in [`capped_windows`]' order).
fn check_caps(rule: &RewardRule, amount: i64, now: OffsetDateTime, earned: &[i64]) -> ApiResult<()> {
    for ((window, cap, start, length), earned) in capped_windows(rule, now).into_iter().zip(earned) {
        if earned + amount > cap {
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                ErrorCode::RewardCapReached,
                format!("`{}` pays at most {cap} {} per {window}; {earned} earned", rule.code, rule.currency),
            )
            .with_detail("window", window)
            .with_detail("cap", cap)
            .with_detail("earned", *earned)
            .with_detail("resets_at", rfc3339(start + length)));
        }
    }
    Ok(())
}

fn reward_entry(player_id: Uuid, code: &RuleCode, movement: &Movement) -> NewEntry {
    NewEntry {
        kind: EntryKind::Reward,
        player_id: Some(player_id),
        actor: player_actor(player_id),
        reason: Some(format!("reward rule `{code}`")),
        postings: movement.postings.clone(),
        items: Vec::new(),
        clawback: false,
    }
}

impl MoneyOp for RewardOp {
    type Output = RewardClaimResult;
    const SUCCESS: StatusCode = StatusCode::CREATED;

    fn receipts(output: &mut RewardClaimResult) -> Vec<&mut SignedReceipt> {
        vec![&mut output.receipt]
    }

    async fn apply(self, conn: &mut AnyConnection) -> ApiResult<RewardClaimResult> {
        let Self { catalog, player_id, rule: code, request } = self;
        lock_player(conn, player_id).await?.refuse_if_blocked()?;
        let rule = crate::store::rewards::find_rule(conn, &code)
            .await?
            .ok_or_else(|| ApiError::not_found("reward_rule", code.as_str()))?;
        let amount = claim_amount(&rule, &request)?;
        let now = crate::db::now();
        let mut earned = Vec::new();
        for (_, _, start, _) in capped_windows(&rule, now) {
            let sum: Option<i64> = sqlx::query_scalar(
                "select cast(sum(c.amount) as bigint) from entry e join reward_claim c on c.entry_id = e.id \
                     where e.player_id = $1 and e.id >= $4 and c.rule = $2 and c.created_at >= $3",
            )
            .bind(player_id.to_string())
            .bind(code.as_str())
            .bind(to_micros(start))
            .bind(crate::ledger::entry_id_floor(to_micros(start)))
            .fetch_one(&mut *conn)
            .await?;
            earned.push(sum.unwrap_or(0));
        }
        check_caps(&rule, amount, now, &earned)?;
        let catalog = catalog.get(conn).await?;
        let mut movement = Movement::default();
        movement.grant_currency(player_id, &rule.currency, amount);
        movement.check(conn, player_id, &catalog).await?;
        let entry =
            append_entry(conn, &reward_entry(player_id, &code, &movement), catalog.balance_maxima()).await?;
        sqlx::query("insert into reward_claim (id, player_id, rule, amount, entry_id, created_at) values ($1, $2, $3, $4, $5, $6)")
            .bind(Uuid::now_v7().to_string())
            .bind(player_id.to_string())
            .bind(code.as_str())
            .bind(amount)
            .bind(entry.id.to_string())
            .bind(now_micros())
            .execute(&mut *conn)
            .await?;
        let facts = ReceiptFacts::given(EntryKind::Reward, movement.granted);
        let receipt = issue_receipt(conn, player_id, entry.id, facts).await?;
        Ok(RewardClaimResult {
            rule: code,
            earned: CurrencyAmount { currency: rule.currency, amount },
            wallet: read_wallet(conn, player_id).await?,
            receipt,
        })
    }

    fn batch_player(&self) -> Option<Uuid> {
        Some(self.player_id)
    }

    fn batch_reward_rule(&self) -> Option<&str> {
        Some(self.rule.as_str())
    }

    fn decide(&self, ledger: &mut BatchLedger) -> ApiResult<Option<RewardClaimResult>> {
        let (player_id, code) = (self.player_id, &self.rule);
        let Some(catalog) = self.catalog.cached(ledger.catalog_stamp()) else { return Ok(None) };
        ledger.unblocked_player(player_id)?;
        let row = ledger
            .reward_rule(code.as_str())
            .cloned()
            .ok_or_else(|| ApiError::not_found("reward_rule", code.as_str()))?;
        let rule = crate::store::rewards::rule_from_row(row)?;
        let amount = claim_amount(&rule, &self.request)?;
        let now = from_micros(ledger.now());
        let earned: Vec<i64> = capped_windows(&rule, now)
            .into_iter()
            .map(|(_, _, start, _)| ledger.reward_earned(player_id, code.as_str(), to_micros(start)))
            .collect();
        check_caps(&rule, amount, now, &earned)?;
        let mut movement = Movement::default();
        movement.grant_currency(player_id, &rule.currency, amount);
        movement.check_against(
            &catalog,
            |currency| ledger.wallet_balance(player_id, currency).unwrap_or(0),
            |sku| ledger.item_quantity(player_id, sku),
        )?;
        let Some(entry) =
            ledger.append(&reward_entry(player_id, code, &movement), catalog.balance_maxima())?
        else {
            return Ok(None);
        };
        ledger.push_reward_claim(player_id, code.as_str(), amount, entry.id);
        let facts = ReceiptFacts::given(EntryKind::Reward, movement.granted);
        let receipt = ledger.issue_receipt(player_id, entry.id, facts)?;
        Ok(Some(RewardClaimResult {
            rule: code.clone(),
            earned: CurrencyAmount { currency: rule.currency, amount },
            wallet: ledger.wallet(player_id),
            receipt,
        }))
    }
}

/// `POST /admin/v1/players/{id}/grants`: an operator gives currency and/or items, with a reason.
#[derive(Debug, Clone)]
pub struct GrantOp {
    /// The live catalog.
    pub catalog: Arc<CatalogCache>,
    /// The player.
    pub player_id: Uuid,
    /// The operator, as recorded in the entry and the audit log.
    pub actor: String,
    /// What to give.
    pub request: GrantRequest,
}

/// What an operator's grant gives, checked against the catalog.
fn grant_movement(catalog: &RenderedCatalog, player_id: Uuid, request: &GrantRequest) -> ApiResult<Movement> {
    let mut movement = Movement::default();
    if let (Some(currency), Some(amount)) = (&request.currency, request.amount) {
        if catalog.currency(currency).is_none() {
            return Err(ApiError::validation("currency", format!("currency `{currency}` does not exist")));
        }
        movement.grant_currency(player_id, currency, amount);
    }
    for (index, grant) in request.items.iter().enumerate() {
        let item = catalog.item(&grant.sku).ok_or_else(|| {
            ApiError::validation(
                &format!("items[{index}].sku"),
                format!("item `{}` is not in the live catalog", grant.sku),
            )
        })?;
        movement.grant_item(item, grant.quantity);
    }
    Ok(movement)
}

fn grant_entry(player_id: Uuid, actor: &str, request: &GrantRequest, movement: &Movement) -> NewEntry {
    NewEntry {
        kind: EntryKind::OperatorGrant,
        player_id: Some(player_id),
        actor: actor.to_owned(),
        reason: Some(request.reason.as_str().to_owned()),
        postings: movement.postings.clone(),
        items: movement.items.clone(),
        clawback: false,
    }
}

impl MoneyOp for GrantOp {
    type Output = GrantResult;
    const SUCCESS: StatusCode = StatusCode::CREATED;

    fn receipts(output: &mut GrantResult) -> Vec<&mut SignedReceipt> {
        vec![&mut output.receipt]
    }

    async fn apply(self, conn: &mut AnyConnection) -> ApiResult<GrantResult> {
        let Self { catalog, player_id, actor, request } = self;
        // Operators may grant to a blocked player (to make good, for example).
        let _unchecked = lock_player(conn, player_id).await?;
        let catalog = catalog.get(conn).await?;
        let movement = grant_movement(&catalog, player_id, &request)?;
        movement.check(conn, player_id, &catalog).await?;
        let entry = append_entry(
            conn,
            &grant_entry(player_id, &actor, &request, &movement),
            catalog.balance_maxima(),
        )
        .await?;
        let granted_json = serde_json::to_string(&movement.granted).map_err(anyhow::Error::from)?;
        crate::store::catalog::append_audit(
            conn,
            &actor,
            "player.grant",
            &player_id.to_string(),
            None,
            Some(&granted_json),
        )
        .await?;
        let facts = ReceiptFacts::given(EntryKind::OperatorGrant, movement.granted.clone());
        let receipt = issue_receipt(conn, player_id, entry.id, facts).await?;
        Ok(GrantResult {
            entry_id: entry.id,
            granted: movement.granted,
            wallet: read_wallet(conn, player_id).await?,
            inventory: Inventory { items: read_inventory(conn, player_id).await? },
            receipt,
        })
    }

    fn batch_player(&self) -> Option<Uuid> {
        Some(self.player_id)
    }

    fn decide(&self, ledger: &mut BatchLedger) -> ApiResult<Option<GrantResult>> {
        let player_id = self.player_id;
        let Some(catalog) = self.catalog.cached(ledger.catalog_stamp()) else { return Ok(None) };
        // Operators may grant to a blocked player (to make good, for example).
        ledger.existing_player(player_id)?;
        let movement = grant_movement(&catalog, player_id, &self.request)?;
        movement.check_against(
            &catalog,
            |currency| ledger.wallet_balance(player_id, currency).unwrap_or(0),
            |sku| ledger.item_quantity(player_id, sku),
        )?;
        let entry = grant_entry(player_id, &self.actor, &self.request, &movement);
        let Some(entry) = ledger.append(&entry, catalog.balance_maxima())? else { return Ok(None) };
        let granted_json = serde_json::to_string(&movement.granted).map_err(anyhow::Error::from)?;
        ledger.push_audit(&self.actor, "player.grant", &player_id.to_string(), Some(&granted_json));
        let facts = ReceiptFacts::given(EntryKind::OperatorGrant, movement.granted.clone());
        let receipt = ledger.issue_receipt(player_id, entry.id, facts)?;
        Ok(Some(GrantResult {
            entry_id: entry.id,
            granted: movement.granted,
            wallet: ledger.wallet(player_id),
            inventory: Inventory { items: ledger.inventory(player_id)? },
            receipt,
        }))
    }
}

/// Grants a new player every currency's initial grant, in one entry.
///
/// # Errors
/// Fails when the database does.
pub async fn grant_initial_balances(
    conn: &mut AnyConnection,
    catalog: &CatalogCache,
    player_id: Uuid,
) -> ApiResult<()> {
    let catalog = catalog.get(conn).await?;
    if let Some(entry) = initial_grant_entry(&catalog, player_id) {
        append_entry(conn, &entry, catalog.balance_maxima()).await?;
    }
    Ok(())
}

/// The entry granting a new player every currency's initial grant, if any currency has one.
#[must_use]
pub fn initial_grant_entry(catalog: &RenderedCatalog, player_id: Uuid) -> Option<NewEntry> {
    let mut currencies: Vec<_> = catalog.currencies().filter(|currency| currency.initial_grant > 0).collect();
    if currencies.is_empty() {
        return None;
    }
    currencies.sort_by(|a, b| a.code.cmp(&b.code));
    let mut movement = Movement::default();
    for currency in currencies {
        movement.grant_currency(player_id, &currency.code, currency.initial_grant);
    }
    Some(NewEntry {
        kind: EntryKind::InitialGrant,
        player_id: Some(player_id),
        actor: "system".to_owned(),
        reason: None,
        postings: movement.postings,
        items: Vec::new(),
        clawback: false,
    })
}
