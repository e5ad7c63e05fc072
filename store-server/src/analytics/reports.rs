//! The reports: plain functions over the rows [`super::load_sales`] and its siblings read,
//! unit-tested on hand-built data (and the tab facts the tabs report reads).

// Support, confidence, lift and conversion intervals are statistics over counts, not money.
#![allow(clippy::float_arithmetic)]

use super::*;

pub(super) fn day_of(micros: i64) -> String {
    let day = micros.div_euclid(MICROS_PER_DAY);
    let date = OffsetDateTime::UNIX_EPOCH + Duration::days(day);
    date.date().to_string()
}

/// An amount in `currency` as the wire writes it: a real currency's with its minor units
/// ([`Money::amount_text`]), a virtual currency's as a plain count.
pub(super) fn amount_text(amount: Decimal, currency: &str) -> String {
    match MoneyCurrency::parse(currency) {
        Ok(currency) => Money { currency, amount }.amount_text(),
        Err(_) => amount.normalize().to_string(),
    }
}

/// Gross, fees, refunds and net by day, currency and item; and real money by day in the
/// reporting currency.
#[must_use]
pub fn revenue(sales: &[Sale], reporting: &crate::settings::Reporting) -> RevenueReport {
    #[derive(Default)]
    struct Sum {
        purchases: i64,
        quantity: i64,
        gross: Decimal,
        fees: Decimal,
        refunded: Decimal,
    }
    let mut sums: BTreeMap<(String, String, String), Sum> = BTreeMap::new();
    for sale in sales {
        let sum = sums.entry((day_of(sale.at_micros), sale.currency.clone(), sale.sku.clone())).or_default();
        if sale.is_item_sale() {
            sum.purchases += 1;
        }
        sum.quantity += sale.quantity;
        sum.gross += sale.gross;
        sum.fees += sale.fee;
        sum.refunded += sale.refunded;
    }
    let rows = sums
        .into_iter()
        .map(|((day, currency, sku), sum)| RevenueRow {
            day,
            sku,
            purchases: sum.purchases,
            quantity: sum.quantity,
            gross: amount_text(sum.gross, &currency),
            fees: amount_text(sum.fees, &currency),
            refunded: amount_text(sum.refunded, &currency),
            net: amount_text(sum.gross - sum.fees - sum.refunded, &currency),
            currency,
        })
        .collect();
    RevenueReport { rows, reporting: in_reporting_currency(sales, reporting) }
}

/// Real money by day in the reporting currency: each sale converted at its currency's rate,
/// summed exactly, and each day's totals rounded (half away from zero) to the reporting
/// currency's minor units. Currencies without a rate are named, not guessed.
fn in_reporting_currency(sales: &[Sale], reporting: &crate::settings::Reporting) -> ReportingRevenue {
    let mut days: BTreeMap<String, [Decimal; 3]> = BTreeMap::new();
    let mut unconverted = BTreeSet::new();
    for sale in sales {
        let Ok(currency) = MoneyCurrency::parse(&sale.currency) else { continue };
        let Some(rate) = reporting.rate(currency) else {
            unconverted.insert(sale.currency.clone());
            continue;
        };
        let sums = days.entry(day_of(sale.at_micros)).or_default();
        sums[0] += sale.gross * rate;
        sums[1] += sale.fee * rate;
        sums[2] += sale.refunded * rate;
    }
    let money = |amount: Decimal| {
        let amount = amount.round_dp_with_strategy(
            reporting.currency.minor_units(),
            rust_decimal::RoundingStrategy::MidpointAwayFromZero,
        );
        Money { currency: reporting.currency, amount }
    };
    ReportingRevenue {
        currency: reporting.currency.code().to_owned(),
        days: days
            .into_iter()
            .map(|(day, [gross, fees, refunded])| {
                let [gross, fees, refunded] = [money(gross), money(fees), money(refunded)];
                let net =
                    Money { currency: gross.currency, amount: gross.amount - fees.amount - refunded.amount };
                ReportingDay {
                    day,
                    gross: gross.amount_text(),
                    fees: fees.amount_text(),
                    refunded: refunded.amount_text(),
                    net: net.amount_text(),
                }
            })
            .collect(),
        unconverted: unconverted.into_iter().collect(),
    }
}

/// Parses a fixed UTC offset: `UTC`, `Z`, `+09:00`, `-05:30`.
///
/// # Errors
/// Returns a message when it is none of those.
pub fn parse_offset(text: &str) -> Result<UtcOffset, String> {
    if text.eq_ignore_ascii_case("utc") || text == "Z" {
        return Ok(UtcOffset::UTC);
    }
    let format = time::macros::format_description!("[offset_hour sign:mandatory]:[offset_minute]");
    UtcOffset::parse(text, &format).map_err(|_| format!("`{text}` is not a UTC offset such as +09:00 or UTC"))
}

/// Purchases and revenue by weekday and hour at `offset`; revenue only in `currency`.
#[must_use]
pub fn peak_times(sales: &[Sale], offset: UtcOffset, currency: Option<&str>) -> PeakTimesReport {
    let mut counts = [[0_i64; 24]; 7];
    let mut revenue = [[Decimal::ZERO; 24]; 7];
    for sale in sales.iter().filter(|sale| sale.is_item_sale()) {
        let Ok(at) = OffsetDateTime::from_unix_timestamp_nanos(i128::from(sale.at_micros) * 1_000) else {
            continue;
        };
        let local = at.to_offset(offset);
        let weekday = usize::from(local.weekday().number_days_from_monday());
        let hour = usize::from(local.hour());
        counts[weekday][hour] += 1;
        if currency == Some(sale.currency.as_str()) {
            revenue[weekday][hour] += sale.gross;
        }
    }
    let mut cells = Vec::with_capacity(7 * 24);
    for (weekday, (hours, amounts)) in counts.iter().zip(revenue.iter()).enumerate() {
        for (hour, (purchases, amount)) in hours.iter().zip(amounts.iter()).enumerate() {
            cells.push(PeakCell {
                weekday: u8::try_from(weekday + 1).unwrap_or(7),
                hour: u8::try_from(hour).unwrap_or(23),
                purchases: *purchases,
                revenue: amount_text(*amount, currency.unwrap_or_default()),
            });
        }
    }
    let (hours, minutes, _) = offset.as_hms();
    let sign = if offset.is_negative() { '-' } else { '+' };
    PeakTimesReport { tz: format!("{sign}{:02}:{:02}", hours.abs(), minutes.abs()), cells }
}

pub(super) fn ratio(numerator: i64, denominator: i64) -> f64 {
    if denominator == 0 { 0.0 } else { to_f64(numerator) / to_f64(denominator) }
}

pub(super) fn to_f64(count: i64) -> f64 {
    // Counts stay far below 2^53, where every integer is exact.
    i32::try_from(count).map_or_else(|_| f64::from(u32::MAX), f64::from)
}

pub(super) fn round4(value: f64) -> f64 {
    (value * 10_000.0).round() / 10_000.0
}

/// Pairs of items bought by the same player within `window_h` hours, with support,
/// confidence and lift; the `top` pairs by lift, then support.
#[must_use]
pub fn combinations(sales: &[Sale], window_h: i64, top: usize) -> CombinationsReport {
    let window = window_h.saturating_mul(MICROS_PER_HOUR);
    let mut by_player: BTreeMap<&str, Vec<(&str, i64)>> = BTreeMap::new();
    for sale in sales.iter().filter(|sale| sale.is_item_sale()) {
        by_player.entry(&sale.player_id).or_default().push((&sale.sku, sale.at_micros));
    }
    let mut buyers_of: BTreeMap<&str, i64> = BTreeMap::new();
    let mut together: BTreeMap<(&str, &str), i64> = BTreeMap::new();
    for bought in by_player.values_mut() {
        bought.sort_by_key(|(_, at)| *at);
        let skus: BTreeSet<&str> = bought.iter().map(|(sku, _)| *sku).collect();
        for sku in skus {
            *buyers_of.entry(sku).or_default() += 1;
        }
        // One sweep in time order, remembering when each item was last bought: an item pairs
        // with every other whose last purchase is within the window. Linear in purchases times
        // the items in the catalog, however many purchases one player makes in a window.
        let mut pairs: BTreeSet<(&str, &str)> = BTreeSet::new();
        let mut last_bought: BTreeMap<&str, i64> = BTreeMap::new();
        for &(sku, at) in bought.iter() {
            for (&other, &then) in &last_bought {
                if other != sku && at - then <= window {
                    pairs.insert(if other < sku { (other, sku) } else { (sku, other) });
                }
            }
            last_bought.insert(sku, at);
        }
        for pair in pairs {
            *together.entry(pair).or_default() += 1;
        }
    }
    let buyers = i64::try_from(by_player.len()).unwrap_or(i64::MAX);
    let mut pairs: Vec<PairRow> = together
        .into_iter()
        .map(|((a, b), players)| {
            let (with_a, with_b) = (buyers_of[a], buyers_of[b]);
            let support = ratio(players, buyers);
            let lift = if with_a == 0 || with_b == 0 {
                0.0
            } else {
                support / (ratio(with_a, buyers) * ratio(with_b, buyers))
            };
            PairRow {
                a: a.to_owned(),
                b: b.to_owned(),
                players,
                support: round4(support),
                confidence_a_to_b: round4(ratio(players, with_a)),
                confidence_b_to_a: round4(ratio(players, with_b)),
                lift: round4(lift),
            }
        })
        .collect();
    pairs.sort_by(|x, y| {
        y.lift
            .total_cmp(&x.lift)
            .then(y.support.total_cmp(&x.support))
            .then_with(|| (&x.a, &x.b).cmp(&(&y.a, &y.b)))
    });
    pairs.truncate(top.min(PAIRS_TOP_MAX));
    CombinationsReport { window_h, buyers, pairs }
}

/// The 95% Wilson score interval of `successes` out of `trials`.
#[must_use]
pub fn wilson_interval(successes: i64, trials: i64) -> (f64, f64) {
    if trials <= 0 {
        return (0.0, 0.0);
    }
    let n = to_f64(trials);
    let p = ratio(successes, trials);
    let z2 = Z_95 * Z_95;
    let centre = (p + z2 / (2.0 * n)) / (1.0 + z2 / n);
    let half = Z_95 * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt() / (1.0 + z2 / n);
    ((centre - half).max(0.0), (centre + half).min(1.0))
}

/// Viewers, buyers and conversion (with its 95% interval) of each offer by price point and by
/// price variant.
#[must_use]
pub fn price_sensitivity(views: &[View], sales: &[Sale]) -> Vec<ConversionRow> {
    // The first time each player bought each offer.
    let mut first_buy: BTreeMap<(&str, &str), i64> = BTreeMap::new();
    for sale in sales.iter().filter(|sale| sale.is_item_sale()) {
        first_buy.entry((&sale.player_id, &sale.offer_id)).or_insert(sale.at_micros);
    }
    // (offer, sku, by, value) → player → their first view that way.
    let mut first_view: BTreeMap<(&str, &str, &str, &str), BTreeMap<&str, i64>> = BTreeMap::new();
    for view in views {
        let mut ways = vec![("price_point", view.price_point.as_str())];
        if let Some(variant) = &view.variant {
            ways.push(("variant", variant.as_str()));
        }
        for (by, value) in ways {
            let viewers = first_view.entry((&view.offer_id, &view.sku, by, value)).or_default();
            let at = viewers.entry(&view.player_id).or_insert(view.at_micros);
            *at = (*at).min(view.at_micros);
        }
    }
    first_view
        .into_iter()
        .map(|((offer_id, sku, by, value), viewers)| {
            let buyers = viewers
                .iter()
                .filter(|(player, viewed)| {
                    first_buy.get(&(**player, offer_id)).is_some_and(|bought| bought >= viewed)
                })
                .count();
            let viewers = i64::try_from(viewers.len()).unwrap_or(i64::MAX);
            let buyers = i64::try_from(buyers).unwrap_or(i64::MAX);
            let (low, high) = wilson_interval(buyers, viewers);
            ConversionRow {
                offer_id: offer_id.to_owned(),
                sku: sku.to_owned(),
                by: by.to_owned(),
                value: value.to_owned(),
                viewers,
                buyers,
                conversion: round4(ratio(buyers, viewers)),
                ci_low: round4(low),
                ci_high: round4(high),
            }
        })
        .collect()
}

/// Buyers, purchases and revenue by period (`day` or `week`), country and currency.
#[must_use]
pub fn geography(sales: &[Sale], weekly: bool) -> GeographyReport {
    #[derive(Default)]
    struct Sum<'a> {
        buyers: BTreeSet<&'a str>,
        purchases: i64,
        revenue: Decimal,
    }
    let mut sums: BTreeMap<(String, String, String), Sum> = BTreeMap::new();
    for sale in sales.iter().filter(|sale| sale.is_item_sale()) {
        let mut day = sale.at_micros.div_euclid(MICROS_PER_DAY);
        if weekly {
            // 1970-01-01 was a Thursday: day 4 of a Monday-first week is day 0 of the epoch.
            day -= (day + 3).rem_euclid(7);
        }
        let period = day_of(day * MICROS_PER_DAY);
        let country = sale.country.clone().unwrap_or_else(|| "unknown".to_owned());
        let sum = sums.entry((period, country, sale.currency.clone())).or_default();
        sum.buyers.insert(&sale.player_id);
        sum.purchases += 1;
        sum.revenue += sale.gross;
    }
    let rows = sums
        .into_iter()
        .map(|((period, country, currency), sum)| GeographyRow {
            period,
            country,
            buyers: i64::try_from(sum.buyers.len()).unwrap_or(i64::MAX),
            purchases: sum.purchases,
            revenue: amount_text(sum.revenue, &currency),
            currency,
        })
        .collect();
    GeographyReport { granularity: if weekly { "week" } else { "day" }.to_owned(), rows }
}

/// One tab, as the tabs report reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TabFacts {
    /// ISO 4217.
    pub currency: String,
    /// `open`, `settling` or `settled`.
    pub status: String,
    /// Owed now (open tabs).
    pub amount_micros: i64,
    /// When it opened.
    pub opened_at: i64,
    /// What settling it charged.
    pub charged_micros: Option<i64>,
    /// Its items' amounts.
    pub item_micros: Vec<i64>,
}

/// Reads every tab open now or opened in `range`.
///
/// # Errors
/// Fails when the database does.
pub async fn load_tabs(conn: &mut AnyConnection, range: &Range) -> ApiResult<Vec<TabFacts>> {
    let tabs: Vec<(String, String, String, i64, i64, Option<i64>)> = sqlx::query_as(
        "select id, currency, status, amount_micros, opened_at, charged_micros from tab \
         where status <> 'settled' or (opened_at >= $1 and opened_at < $2) limit $3",
    )
    .bind(range.from_micros)
    .bind(range.to_micros)
    .bind(range.rows_max.saturating_add(1))
    .fetch_all(&mut *conn)
    .await?;
    let tabs = within_bound(tabs, range, "tabs")?;
    let mut out = Vec::with_capacity(tabs.len());
    for (id, currency, status, amount_micros, opened_at, charged_micros) in tabs {
        let item_micros: Vec<i64> =
            sqlx::query_scalar("select amount_micros from tab_item where tab_id = $1")
                .bind(&id)
                .fetch_all(&mut *conn)
                .await?;
        out.push(TabFacts { currency, status, amount_micros, opened_at, charged_micros, item_micros });
    }
    if let Some(currency) = &range.currency {
        out.retain(|tab| &tab.currency == currency);
    }
    Ok(out)
}

/// Open tabs and what they owe now; tabs opened in the range, how many were settled, and the
/// card fees their settlement saved against charging each item on its own.
#[must_use]
pub fn tabs(facts: &[TabFacts], range: &Range, fees: &FeeSchedule) -> TabsReport {
    #[derive(Default)]
    struct Sum {
        open_tabs: i64,
        outstanding: i64,
        opened: i64,
        settled: i64,
        fees_saved: Decimal,
    }
    let mut sums: BTreeMap<&str, Sum> = BTreeMap::new();
    for tab in facts {
        let Ok(currency) = MoneyCurrency::parse(&tab.currency) else { continue };
        let sum = sums.entry(&tab.currency).or_default();
        if tab.status != "settled" {
            sum.open_tabs += 1;
            sum.outstanding += tab.amount_micros;
        }
        if (range.from_micros..range.to_micros).contains(&tab.opened_at) {
            sum.opened += 1;
            if let (true, Some(charged)) = (tab.status == "settled", tab.charged_micros) {
                sum.settled += 1;
                let separately: Decimal = tab
                    .item_micros
                    .iter()
                    .map(|micros| fees.fee_uncapped(Money::from_micros(currency, *micros)).amount)
                    .sum();
                let together = fees.fee(Money::from_micros(currency, charged)).amount;
                sum.fees_saved += (separately - together).max(Decimal::ZERO);
            }
        }
    }
    let rows = sums
        .into_iter()
        .map(|(currency, sum)| TabsRow {
            currency: currency.to_owned(),
            open_tabs: sum.open_tabs,
            outstanding: amount_text(micros_to_decimal(sum.outstanding), currency),
            opened: sum.opened,
            settled: sum.settled,
            settlement_rate: round4(ratio(sum.settled, sum.opened)),
            fees_saved: amount_text(sum.fees_saved, currency),
        })
        .collect();
    TabsReport { rows }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: i64 = MICROS_PER_HOUR;
    /// Monday 2026-11-02 00:00 UTC.
    const MONDAY: i64 = 1_793_577_600 * MICROS_PER_SECOND;

    fn sale(player: &str, sku: &str, currency: &str, gross: i64, at_micros: i64) -> Sale {
        Sale {
            player_id: player.to_owned(),
            country: None,
            offer_id: format!("offer-{sku}"),
            sku: sku.to_owned(),
            currency: currency.to_owned(),
            quantity: 1,
            gross: Decimal::from(gross),
            fee: Decimal::ZERO,
            refunded: Decimal::ZERO,
            variant: None,
            at_micros,
        }
    }

    #[test]
    fn the_fixture_monday_is_a_monday() {
        let at = OffsetDateTime::from_unix_timestamp(MONDAY / MICROS_PER_SECOND).expect("a time");
        assert_eq!(at.weekday(), time::Weekday::Monday);
        assert_eq!((at.hour(), at.minute()), (0, 0));
    }

    /// Five buyers: p1 magnet+shield, p2 magnet+shield, p3 magnet then shield two days later,
    /// p4 skin only, p5 magnet+skin.
    fn basket() -> Vec<Sale> {
        vec![
            sale("p1", "magnet", "gold", 100, MONDAY + HOUR),
            sale("p1", "shield", "gold", 150, MONDAY + 2 * HOUR),
            sale("p2", "magnet", "gold", 100, MONDAY + 3 * HOUR),
            sale("p2", "shield", "gold", 150, MONDAY + 3 * HOUR + 60),
            sale("p3", "magnet", "gold", 100, MONDAY + 4 * HOUR),
            sale("p3", "shield", "gold", 150, MONDAY + 52 * HOUR),
            sale("p4", "skin", "gems", 50, MONDAY + 5 * HOUR),
            sale("p5", "magnet", "gold", 100, MONDAY + 6 * HOUR),
            sale("p5", "skin", "gems", 50, MONDAY + 7 * HOUR),
        ]
    }

    #[test]
    fn pairs_have_the_support_confidence_and_lift_worked_out_by_hand() {
        let report = combinations(&basket(), 24, 10);
        assert_eq!(report.buyers, 5);
        // magnet: p1 p2 p3 p5 (4); shield: p1 p2 p3 (3); skin: p4 p5 (2).
        // Within 24 h: magnet+shield for p1, p2 (p3's are 48 h apart); magnet+skin for p5.
        let magnet_shield =
            report.pairs.iter().find(|pair| pair.a == "magnet" && pair.b == "shield").expect("the pair");
        assert_eq!(magnet_shield.players, 2);
        assert_eq!(magnet_shield.support, 0.4); // 2 / 5
        assert_eq!(magnet_shield.confidence_a_to_b, 0.5); // 2 / 4
        assert_eq!(magnet_shield.confidence_b_to_a, 0.6667); // 2 / 3
        assert_eq!(magnet_shield.lift, 0.8333); // 0.4 / (0.8 × 0.6)
        let magnet_skin =
            report.pairs.iter().find(|pair| pair.a == "magnet" && pair.b == "skin").expect("the pair");
        assert_eq!((magnet_skin.players, magnet_skin.support, magnet_skin.lift), (1, 0.2, 0.625)); // 0.2 / (0.8 × 0.4)
        assert_eq!(report.pairs.len(), 2, "shield and skin were never bought together");
        assert_eq!(report.pairs[0].b, "shield", "ordered by lift");

        let wider = combinations(&basket(), 72, 10);
        let magnet_shield =
            wider.pairs.iter().find(|pair| pair.a == "magnet" && pair.b == "shield").expect("the pair");
        assert_eq!(magnet_shield.players, 3, "a 72 h window takes in p3");
        assert_eq!(combinations(&basket(), 72, 1).pairs.len(), 1, "top N");
    }

    /// The one-sweep pairing finds exactly the pairs a comparison of every two purchases does,
    /// on many players with many purchases each, in and out of the window.
    #[test]
    fn the_sweep_finds_the_pairs_every_two_purchases_would() {
        let skus = ["a", "b", "c", "d", "e"];
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = |bound: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % bound
        };
        let mut sales = Vec::new();
        for player in 0..40 {
            for _ in 0..30 {
                let sku = skus[usize::try_from(next(5)).expect("small")];
                let at = MONDAY + i64::try_from(next(96)).expect("small") * HOUR;
                sales.push(sale(&format!("p{player}"), sku, "gold", 1, at));
            }
        }
        for window_h in [0, 1, 6, 24] {
            let window = window_h * HOUR;
            let mut expected: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
            for x in &sales {
                for y in &sales {
                    if x.player_id == y.player_id
                        && x.sku < y.sku
                        && (x.at_micros - y.at_micros).abs() <= window
                    {
                        expected
                            .entry((x.sku.clone(), y.sku.clone()))
                            .or_default()
                            .insert(x.player_id.clone());
                    }
                }
            }
            let report = combinations(&sales, window_h, PAIRS_TOP_MAX);
            let found: BTreeMap<(String, String), i64> =
                report.pairs.iter().map(|pair| ((pair.a.clone(), pair.b.clone()), pair.players)).collect();
            let wanted: BTreeMap<(String, String), i64> = expected
                .into_iter()
                .map(|(pair, players)| (pair, i64::try_from(players.len()).expect("small")))
                .collect();
            assert_eq!(found, wanted, "window {window_h} h");
        }
    }

    #[test]
    fn heatmap_cells_count_purchases_and_revenue_in_the_given_offset() {
        let sales = basket();
        let utc = peak_times(&sales, UtcOffset::UTC, Some("gold"));
        assert_eq!(utc.cells.len(), 168);
        let cell = |report: &PeakTimesReport, weekday: u8, hour: u8| {
            report
                .cells
                .iter()
                .find(|cell| cell.weekday == weekday && cell.hour == hour)
                .cloned()
                .expect("a cell")
        };
        // Monday 03:00 UTC: p2's magnet and shield, 250 gold.
        assert_eq!(cell(&utc, 1, 3).purchases, 2);
        assert_eq!(cell(&utc, 1, 3).revenue, "250");
        // Monday 05:00 UTC: p4's skin, paid in gems: counted, no gold revenue.
        assert_eq!((cell(&utc, 1, 5).purchases, cell(&utc, 1, 5).revenue.as_str()), (1, "0"));
        // Wednesday 04:00 UTC: p3's shield.
        assert_eq!(cell(&utc, 3, 4).purchases, 1);
        assert_eq!(utc.cells.iter().map(|cell| cell.purchases).sum::<i64>(), 9);

        let tokyo = peak_times(&sales, parse_offset("+09:00").expect("an offset"), Some("gold"));
        assert_eq!(tokyo.tz, "+09:00");
        assert_eq!(cell(&tokyo, 1, 12).purchases, 2, "03:00 UTC is 12:00 in Tokyo");
        let new_york = peak_times(&sales, parse_offset("-05:00").expect("an offset"), None);
        assert_eq!(cell(&new_york, 7, 20).purchases, 1, "p1's 01:00 UTC Monday is Sunday 20:00 in New York");
        assert!(parse_offset("Mars/Olympus").is_err());
    }

    #[test]
    fn wilson_intervals_match_the_textbook_values() {
        // 8 of 10: the 95% Wilson interval is [0.4902, 0.9433].
        let (low, high) = wilson_interval(8, 10);
        assert_eq!((round4(low), round4(high)), (0.4902, 0.9433));
        // 0 of 20: [0, 0.1611].
        let (low, high) = wilson_interval(0, 20);
        assert_eq!((round4(low), round4(high)), (0.0, 0.1611));
        assert_eq!(wilson_interval(0, 0), (0.0, 0.0));
    }

    #[test]
    fn conversion_counts_viewers_who_bought_after_seeing_the_offer_that_way() {
        let view = |player: &str, variant: &str, point: &str, at: i64| View {
            player_id: player.to_owned(),
            offer_id: "offer-turbo".to_owned(),
            sku: "turbo".to_owned(),
            variant: Some(variant.to_owned()),
            price_point: point.to_owned(),
            at_micros: at,
        };
        let views = vec![
            view("p1", "a", "200 gold", MONDAY),
            view("p1", "a", "200 gold", MONDAY + HOUR),
            view("p2", "a", "200 gold", MONDAY),
            view("p3", "b", "250 gold", MONDAY),
            view("p4", "b", "250 gold", MONDAY + 2 * HOUR),
        ];
        let sales = vec![
            sale("p1", "turbo", "gold", 200, MONDAY + 30 * 60 * MICROS_PER_SECOND),
            sale("p3", "turbo", "gold", 250, MONDAY + HOUR),
            // p4 bought before ever seeing the offer in the store: not a conversion.
            sale("p4", "turbo", "gold", 250, MONDAY + HOUR),
        ];
        let rows = price_sensitivity(&views, &sales);
        let row = |by: &str, value: &str| {
            rows.iter().find(|row| row.by == by && row.value == value).cloned().expect("a row")
        };
        let a = row("variant", "a");
        assert_eq!((a.viewers, a.buyers, a.conversion), (2, 1, 0.5));
        let (low, high) = wilson_interval(1, 2);
        assert_eq!((a.ci_low, a.ci_high), (round4(low), round4(high)));
        let b = row("price_point", "250 gold");
        assert_eq!((b.viewers, b.buyers, b.conversion), (2, 1, 0.5));
        assert_eq!(rows.len(), 4, "two variants and two price points");
    }

    #[test]
    fn revenue_sums_by_day_currency_and_item_with_fees_and_refunds() {
        let mut sales = basket();
        let mut order = sale("p1", "gems.small", "USD", 0, MONDAY + HOUR);
        order.gross = Decimal::new(99, 2);
        order.fee = Decimal::new(33, 2);
        order.refunded = Decimal::new(10, 2);
        sales.push(order);
        let report = revenue(&sales, &crate::settings::Reporting::default());
        let row = |day: &str, currency: &str, sku: &str| {
            report
                .rows
                .iter()
                .find(|row| row.day == day && row.currency == currency && row.sku == sku)
                .cloned()
                .expect("a row")
        };
        let magnet = row("2026-11-02", "gold", "magnet");
        assert_eq!((magnet.purchases, magnet.gross.as_str(), magnet.net.as_str()), (4, "400", "400"));
        let shield_wednesday = row("2026-11-04", "gold", "shield");
        assert_eq!(shield_wednesday.purchases, 1);
        let gems = row("2026-11-02", "USD", "gems.small");
        assert_eq!(
            (gems.gross.as_str(), gems.fees.as_str(), gems.refunded.as_str(), gems.net.as_str()),
            ("0.99", "0.33", "0.10", "0.56")
        );
        assert_eq!(report.reporting.currency, "USD");
        assert_eq!(
            report.reporting.days.len(),
            1,
            "virtual spend is not real revenue: {:?}",
            report.reporting
        );
    }

    #[test]
    fn real_revenue_is_converted_into_the_reporting_currency_at_the_operators_rates() {
        let usd = MoneyCurrency::parse("USD").unwrap();
        let reporting = crate::settings::Reporting::parse(usd, "EUR=1.08").unwrap();
        let mut sales = basket();
        for (currency, gross, fee) in [("USD", 99, 33), ("EUR", 99, 32), ("JPY", 16_000, 3_500)] {
            let mut order = sale("p1", "gems.small", currency, 0, MONDAY + HOUR);
            order.gross = Decimal::new(gross, 2);
            order.fee = Decimal::new(fee, 2);
            sales.push(order);
        }
        let report = revenue(&sales, &reporting);
        let day = &report.reporting.days[0];
        // 0.99 + 0.99 × 1.08 = 2.0592 → 2.06; fees 0.33 + 0.3456 = 0.6756 → 0.68; yen has no rate.
        assert_eq!(
            (day.day.as_str(), day.gross.as_str(), day.fees.as_str(), day.net.as_str()),
            ("2026-11-02", "2.06", "0.68", "1.38")
        );
        assert_eq!(report.reporting.unconverted, ["JPY"]);
        for bad in ["EUR", "EUR=0", "EUR=-1", "XXX=1", "EUR=1e3"] {
            assert!(crate::settings::Reporting::parse(usd, bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn geography_groups_buyers_by_country_and_week() {
        let mut sales = basket();
        for sale in &mut sales {
            sale.country = Some(if sale.player_id == "p1" { "JP" } else { "DE" }.to_owned());
        }
        let weekly = geography(&sales, true);
        let de_gold =
            weekly.rows.iter().find(|row| row.country == "DE" && row.currency == "gold").expect("a row");
        assert_eq!(de_gold.period, "2026-11-02", "weeks start on Monday");
        assert_eq!((de_gold.buyers, de_gold.purchases, de_gold.revenue.as_str()), (3, 5, "600"));
        let daily = geography(&sales, false);
        assert!(
            daily.rows.iter().any(|row| row.period == "2026-11-04"),
            "p3's Wednesday shield has its own day"
        );
    }
}
