//! The storefront window (feature `egui`): balances, items with icons and prices in each
//! currency, buy buttons, an in-game checkout form for the sandbox provider, the tab and its
//! settlement, what is pending, and errors in words a player understands.
//!
//! A game adds it in one line, after [`crate::StorePlugin`]:
//! `app.add_plugins(StoreUiPlugin::default())`. The window shows while
//! [`Storefront::open`] is true.

// Layout arithmetic (sizes in points) is the only float arithmetic here; money is formatted
// from `Decimal` and never touches a float.
#![allow(clippy::float_arithmetic)]

use std::collections::BTreeMap;

use bevy::prelude::*;
use bevy_egui::{EguiContexts, EguiPlugin, EguiPrimaryContextPass, EguiTextureHandle, egui};
use store_api::Money;
use store_api::catalog::{ItemKind, Offer, Price, Settlement};
use store_api::ledger::Quantity;
use store_api::orders::OrderStatus;
use store_api::sandbox::{PayStatus, cards};
use uuid::Uuid;

use crate::{
    Catalog, Inventory, ItemConsumed, OrderUpdated, PaymentAttempted, PendingOrders, PurchaseCompleted,
    RequestId, RewardClaimed, StoreError, StoreRequests, StoreStatus, Tab, Wallet,
};

/// Adds the storefront window. Adds bevy_egui's `EguiPlugin` too unless the game already has.
#[derive(Debug, Clone)]
pub struct StoreUiPlugin {
    /// Whether the window shows from the start.
    pub open_on_start: bool,
    /// Real-money offers are bought in the Steam overlay ([`StoreRequests::start_steam_order`];
    /// the player logged in with Steam) instead of the hosted checkout.
    pub pay_with_steam: bool,
}

impl Default for StoreUiPlugin {
    fn default() -> Self {
        Self { open_on_start: true, pay_with_steam: false }
    }
}

impl Plugin for StoreUiPlugin {
    fn build(&self, app: &mut App) {
        if !app.is_plugin_added::<EguiPlugin>() {
            app.add_plugins(EguiPlugin::default());
        }
        app.insert_resource(Storefront {
            open: self.open_on_start,
            pay_with_steam: self.pay_with_steam,
            ..Storefront::default()
        })
        .add_systems(Update, note_store_outcomes)
        .add_systems(EguiPrimaryContextPass, show_storefront);
    }
}

/// The storefront's own state: whether it shows, the checkout in progress, and what to tell
/// the player.
#[derive(Resource, Debug, Clone, Default)]
pub struct Storefront {
    /// Whether the window shows.
    pub open: bool,
    /// Whether real money is paid in the Steam overlay.
    pub pay_with_steam: bool,
    /// The order being paid in the checkout form.
    pub checkout: Option<Uuid>,
    /// The card number typed in the checkout form.
    pub card_number: String,
    /// The last thing to tell the player, and whether it is bad news.
    pub notice: Option<(String, bool)>,
    /// Requests sent and not yet answered, with what they are for ("Buying Coin magnet").
    pub pending: BTreeMap<RequestId, String>,
    /// The catalog version whose offers were last reported as seen while open, so each opening
    /// (and each new catalog) is reported once.
    reported_views: Option<i64>,
}

impl Storefront {
    fn tell(&mut self, text: impl Into<String>, bad: bool) {
        self.notice = Some((text.into(), bad));
    }
}

/// Item icons (`Item::icon`, a path under the game's asset folder) loaded once and registered
/// with egui. An icon that is missing or still loading is drawn as a lettered badge instead.
#[derive(Resource, Debug, Default)]
struct IconCache {
    icons: BTreeMap<String, (Handle<Image>, egui::TextureId)>,
}

impl IconCache {
    /// The egui textures of the catalog's icons that have finished loading, by sku.
    fn ready(
        &mut self,
        catalog: &Catalog,
        assets: Option<&AssetServer>,
        contexts: &mut EguiContexts,
    ) -> BTreeMap<String, egui::TextureId> {
        let Some(assets) = assets else { return BTreeMap::new() };
        let items = catalog.catalog.as_ref().map(|catalog| catalog.items.as_slice()).unwrap_or_default();
        let mut ready = BTreeMap::new();
        for item in items {
            let Some(path) = &item.icon else { continue };
            let (handle, texture) = self.icons.entry(path.clone()).or_insert_with(|| {
                let handle: Handle<Image> = assets.load(path.clone());
                let texture = contexts.add_image(EguiTextureHandle::Weak(handle.id()));
                (handle, texture)
            });
            if assets.is_loaded_with_dependencies(handle.id()) {
                ready.insert(item.sku.to_string(), *texture);
            }
        }
        ready
    }
}

impl Storefront {
    /// What an order's news means for the player: the checkout form for a new hosted-checkout
    /// order, a pointer to the Steam overlay for a new Steam order, and the outcome.
    fn note_order(&mut self, update: &OrderUpdated, name: &dyn Fn(&str) -> String) {
        if let Some(request) = update.request {
            self.pending.remove(&request);
        }
        let order = &update.order;
        let steam = order.provider == "steam";
        match order.status {
            OrderStatus::RequiresPayment if update.request.is_some() && steam => {
                self.tell("Complete the purchase in the Steam overlay.", false);
            }
            OrderStatus::RequiresPayment if update.request.is_some() => {
                self.checkout = Some(order.id);
                if self.card_number.is_empty() {
                    self.card_number = spaced_card(cards::SUCCEEDS);
                }
            }
            OrderStatus::Fulfilled => {
                let what = order.sku.as_ref().map_or_else(|| "your tab".to_owned(), |sku| name(sku.as_str()));
                self.tell(format!("Payment received: {what} is yours."), false);
                self.checkout = self.checkout.filter(|id| *id != order.id);
            }
            OrderStatus::Failed | OrderStatus::Expired | OrderStatus::Canceled => {
                // A declined card was already explained by its `PaymentAttempted`.
                let explained = self.notice.as_ref().is_some_and(|(_, bad)| *bad);
                if order.status == OrderStatus::Failed && steam {
                    self.tell("The purchase was not completed in Steam. You were not charged.", true);
                } else if order.status == OrderStatus::Failed && self.checkout == Some(order.id) && !explained
                {
                    self.tell("The payment did not go through. You were not charged.", true);
                }
                self.checkout = self.checkout.filter(|id| *id != order.id);
            }
            _ => {}
        }
    }
}

/// Turns the store's messages into notices for the player.
#[expect(clippy::too_many_arguments, reason = "a Bevy system names each message it reads")]
fn note_store_outcomes(
    mut storefront: ResMut<Storefront>,
    catalog: Res<Catalog>,
    mut completed: MessageReader<PurchaseCompleted>,
    mut orders: MessageReader<OrderUpdated>,
    mut payments: MessageReader<PaymentAttempted>,
    mut rewards: MessageReader<RewardClaimed>,
    mut consumed: MessageReader<ItemConsumed>,
    mut errors: MessageReader<StoreError>,
) {
    let name = |sku: &str| catalog.item(sku).map_or_else(|| sku.to_owned(), |item| item.name.to_string());
    for purchase in completed.read() {
        if let Some(request) = purchase.request {
            storefront.pending.remove(&request);
        }
        let what = name(purchase.purchase.sku.as_str());
        match &purchase.purchase.charged_to_tab {
            Some(money) => {
                storefront.tell(format!("Bought {what}: {} added to your tab.", format_money(money)), false)
            }
            None => storefront.tell(format!("Bought {what}."), false),
        }
    }
    for update in orders.read() {
        storefront.note_order(update, &name);
    }
    for payment in payments.read() {
        storefront.pending.remove(&payment.request);
        match payment.status {
            PayStatus::Succeeded => storefront.tell("Card accepted. Confirming your purchase…", false),
            PayStatus::CardDeclined => storefront.tell("Your card was declined. Try another card.", true),
            PayStatus::InsufficientFunds => storefront.tell("Your card has insufficient funds.", true),
            PayStatus::Other => storefront.tell("The payment did not go through.", true),
        }
    }
    for reward in rewards.read() {
        if let Some(request) = reward.request {
            storefront.pending.remove(&request);
        }
    }
    for item in consumed.read() {
        if let Some(request) = item.request {
            storefront.pending.remove(&request);
        }
    }
    for error in errors.read() {
        if let Some(request) = error.request {
            storefront.pending.remove(&request);
        }
        storefront.tell(error.error.player_message(), true);
    }
}

/// Draws the storefront window.
#[expect(clippy::too_many_arguments, reason = "a Bevy system names each resource it reads")]
fn show_storefront(
    mut contexts: EguiContexts,
    mut storefront: ResMut<Storefront>,
    status: Res<State<StoreStatus>>,
    catalog: Res<Catalog>,
    wallet: Res<Wallet>,
    inventory: Res<Inventory>,
    orders: Res<PendingOrders>,
    tab: Res<Tab>,
    store: StoreRequests,
    assets: Option<Res<AssetServer>>,
    mut icons: Local<IconCache>,
) -> Result {
    if !storefront.open {
        storefront.reported_views = None;
        return Ok(());
    }
    report_views(&mut storefront, &catalog, *status.get(), &store);
    let textures = icons.ready(&catalog, assets.as_deref(), &mut contexts);
    let ctx = contexts.ctx_mut()?;
    let mut open = storefront.open;
    egui::Window::new("Store")
        .id(egui::Id::new("coinslot-storefront"))
        .open(&mut open)
        .default_width(520.0)
        .default_height(640.0)
        .default_pos(egui::pos2(24.0, 24.0))
        .resizable(true)
        .show(ctx, |ui| {
            status_line(ui, *status.get());
            ui.separator();
            balances(ui, &catalog, &wallet);
            tab_section(ui, &tab, &store, &mut storefront);
            ui.separator();
            if let Some(order_id) = storefront.checkout {
                checkout_form(ui, order_id, &orders, &catalog, &store, &mut storefront);
                ui.separator();
            }
            notices(ui, &storefront);
            let ready = *status.get() == StoreStatus::Ready;
            offers(ui, &catalog, &inventory, &textures, ready, &store, &mut storefront);
        });
    storefront.open = open;
    Ok(())
}

/// Tells the store, once per opening and catalog version, which offers the window shows.
fn report_views(storefront: &mut Storefront, catalog: &Catalog, status: StoreStatus, store: &StoreRequests) {
    let Some(live) = &catalog.catalog else { return };
    if status != StoreStatus::Ready
        || storefront.reported_views == Some(live.version)
        || live.offers.is_empty()
    {
        return;
    }
    let offers =
        live.offers.iter().take(store_api::analytics::STORE_VIEW_OFFERS_MAX).map(|offer| offer.id).collect();
    if store.store_viewed(offers).is_ok() {
        storefront.reported_views = Some(live.version);
    }
}

fn status_line(ui: &mut egui::Ui, status: StoreStatus) {
    let (text, color) = match status {
        StoreStatus::Ready => ("Connected", egui::Color32::from_rgb(90, 200, 120)),
        StoreStatus::Connecting => ("Connecting to the store…", egui::Color32::from_rgb(230, 190, 80)),
        StoreStatus::Offline => (
            "Offline: the store cannot be reached; we will keep trying.",
            egui::Color32::from_rgb(230, 100, 90),
        ),
    };
    ui.colored_label(color, text);
}

fn balances(ui: &mut egui::Ui, catalog: &Catalog, wallet: &Wallet) {
    ui.horizontal_wrapped(|ui| {
        let currencies =
            catalog.catalog.as_ref().map(|catalog| catalog.currencies.as_slice()).unwrap_or_default();
        for currency in currencies {
            let amount = wallet.balance(currency.code.as_str());
            currency_badge(ui, currency.code.as_str());
            ui.label(egui::RichText::new(format!("{amount} {}", currency.name)).strong());
            ui.add_space(12.0);
        }
    });
}

fn tab_section(ui: &mut egui::Ui, tab: &Tab, store: &StoreRequests, storefront: &mut Storefront) {
    let Some(open) = tab.open() else {
        ui.weak("Tab: nothing owed. Small items can go on a tab and be paid together later.");
        return;
    };
    ui.horizontal_wrapped(|ui| {
        ui.label(egui::RichText::new(format!("Tab: {}", format_money(&open.amount))).strong());
        ui.weak(format!(
            "{} item(s), settles at {} or by {}",
            open.item_count,
            format_money(&open.threshold),
            open.settle_by.date()
        ));
        if open.settlement_required {
            ui.colored_label(egui::Color32::from_rgb(230, 190, 80), "Settle to keep buying on the tab.");
        }
        let settling = open.settle_order_id.is_some();
        let button = egui::Button::new(format!("Settle {}", format_money(&open.settle_amount)));
        if ui.add_enabled(!settling, button).clicked() {
            match store.settle_tab(Some(open.amount.currency)) {
                Ok(request) => {
                    storefront.pending.insert(request, "Settling your tab".to_owned());
                }
                Err(busy) => storefront.tell(busy_words(busy), true),
            }
        }
    });
}

fn checkout_form(
    ui: &mut egui::Ui,
    order_id: Uuid,
    orders: &PendingOrders,
    catalog: &Catalog,
    store: &StoreRequests,
    storefront: &mut Storefront,
) {
    let Some(order) = orders.orders.get(&order_id) else {
        storefront.checkout = None;
        return;
    };
    let what = order
        .sku
        .as_ref()
        .and_then(|sku| catalog.item(sku.as_str()))
        .map_or_else(|| "your tab".to_owned(), |item| item.name.to_string());
    egui::Frame::group(ui.style()).show(ui, |ui| {
        ui.heading(format!("Pay {} for {what}", format_money(&order.amount)));
        ui.weak("Sandbox checkout: use a test card. 4242 4242 4242 4242 succeeds; 4000 0000 0000 0002 is declined.");
        ui.horizontal(|ui| {
            ui.label("Card number");
            ui.add(egui::TextEdit::singleline(&mut storefront.card_number).desired_width(200.0).hint_text("4242 4242 4242 4242"));
        });
        ui.horizontal(|ui| {
            let paying = storefront.pending.values().any(|what| what.starts_with("Paying"));
            let waiting = order.status != OrderStatus::RequiresPayment;
            if ui.add_enabled(!paying && !waiting, egui::Button::new("Pay")).clicked() {
                let card: String = storefront.card_number.chars().filter(char::is_ascii_digit).collect();
                if card.len() == 16 {
                    match store.pay_sandbox(order_id, &card) {
                        Ok(request) => {
                            storefront.pending.insert(request, format!("Paying for {what}"));
                        }
                        Err(busy) => storefront.tell(busy_words(busy), true),
                    }
                } else {
                    storefront.tell("A card number has 16 digits.", true);
                }
            }
            if ui.button("Cancel").clicked() {
                storefront.checkout = None;
            }
            if waiting {
                ui.spinner();
                ui.label("Confirming the payment…");
            }
        });
    });
}

fn notices(ui: &mut egui::Ui, storefront: &Storefront) {
    for what in storefront.pending.values() {
        ui.horizontal(|ui| {
            ui.spinner();
            ui.label(format!("{what}…"));
        });
    }
    if let Some((text, bad)) = &storefront.notice {
        let color = if *bad {
            egui::Color32::from_rgb(240, 110, 100)
        } else {
            egui::Color32::from_rgb(110, 210, 130)
        };
        ui.colored_label(color, text);
    }
}

fn offers(
    ui: &mut egui::Ui,
    catalog: &Catalog,
    inventory: &Inventory,
    textures: &BTreeMap<String, egui::TextureId>,
    ready: bool,
    store: &StoreRequests,
    storefront: &mut Storefront,
) {
    if catalog.catalog.is_none() {
        ui.horizontal(|ui| {
            ui.spinner();
            ui.label("Loading the store…");
        });
        return;
    }
    if catalog.offers().is_empty() {
        ui.label("Nothing is for sale right now. Check back soon.");
        return;
    }
    egui::ScrollArea::vertical().max_height(520.0).show(ui, |ui| {
        for offer in catalog.offers() {
            let Some(item) = catalog.item(offer.sku.as_str()) else { continue };
            ui.horizontal(|ui| {
                match textures.get(item.sku.as_str()) {
                    Some(texture) => {
                        ui.add(egui::Image::new(egui::load::SizedTexture::new(*texture, [44.0, 44.0])));
                    }
                    None => item_icon(ui, item.kind, item.name.as_str()),
                }
                ui.vertical(|ui| {
                    ui.horizontal(|ui| {
                        ui.label(egui::RichText::new(item.name.as_str()).strong());
                        let owned = inventory.quantity(item.sku.as_str());
                        if owned > 0 {
                            ui.weak(if item.kind == ItemKind::Durable {
                                "owned".to_owned()
                            } else {
                                format!("× {owned}")
                            });
                        }
                    });
                    if !item.description.is_empty() {
                        ui.weak(&item.description);
                    }
                    ui.horizontal_wrapped(|ui| {
                        for (index, price) in offer.prices.iter().enumerate() {
                            let label = price_label(price, catalog);
                            let owned =
                                item.kind == ItemKind::Durable && inventory.quantity(item.sku.as_str()) > 0;
                            if ui.add_enabled(ready && !owned, egui::Button::new(label)).clicked() {
                                buy(offer, index, price, item.name.as_str(), store, storefront);
                            }
                        }
                    });
                });
            });
            ui.add_space(6.0);
        }
    });
}

fn buy(
    offer: &Offer,
    index: usize,
    price: &Price,
    name: &str,
    store: &StoreRequests,
    storefront: &mut Storefront,
) {
    let price_index = u32::try_from(index).ok();
    let card = matches!(price, Price::Real { settlement: Settlement::Immediate, .. });
    let sent = if card && storefront.pay_with_steam {
        store.start_steam_order(offer.id, Quantity::one(), price_index)
    } else if card {
        store.start_order(offer.id, Quantity::one(), price_index)
    } else {
        store.purchase(offer.id, Quantity::one(), price_index)
    };
    match sent {
        Ok(request) => {
            let doing = match (card, storefront.pay_with_steam) {
                (true, true) => format!("Opening the Steam overlay for {name}"),
                (true, false) => format!("Opening checkout for {name}"),
                (false, _) => format!("Buying {name}"),
            };
            storefront.pending.insert(request, doing);
        }
        Err(busy) => storefront.tell(busy_words(busy), true),
    }
}

fn busy_words(_: crate::StoreBusy) -> &'static str {
    "The store is busy. Please try again in a moment."
}

fn price_label(price: &Price, catalog: &Catalog) -> String {
    match price {
        Price::Virtual { currency, amount, equivalent } => {
            let name = catalog
                .catalog
                .as_ref()
                .and_then(|catalog| catalog.currencies.iter().find(|known| &known.code == currency))
                .map_or_else(|| currency.to_string(), |known| known.name.to_string());
            // What the currency costs in real money, next to it (consumer-protection guidance).
            match equivalent {
                Some(money) => format!("{amount} {name} (≈ {})", format_money(money)),
                None => format!("{amount} {name}"),
            }
        }
        Price::Real { money, settlement: Settlement::Immediate } => format_money(money),
        Price::Real { money, settlement: Settlement::Tab } => format!("{} on tab", format_money(money)),
    }
}

/// Money as players read it: `$0.99`, `€0.89`, `¥160`, `CHF 1.00`. Amounts finer than the
/// currency's minor unit (tab prices such as $0.002) keep their digits.
#[must_use]
pub fn format_money(money: &Money) -> String {
    let code = money.currency.code();
    let digits = money.amount_text();
    match code {
        "USD" => format!("${digits}"),
        "EUR" => format!("€{digits}"),
        "GBP" => format!("£{digits}"),
        "JPY" => format!("¥{digits}"),
        other => format!("{other} {digits}"),
    }
}

fn spaced_card(digits: &str) -> String {
    digits
        .as_bytes()
        .chunks(4)
        .filter_map(|chunk| std::str::from_utf8(chunk).ok())
        .collect::<Vec<_>>()
        .join(" ")
}

/// A coin for gold, a gem for gems, a square for any other currency, drawn rather than typed
/// so no font is needed.
fn currency_badge(ui: &mut egui::Ui, code: &str) {
    let (rect, _) = ui.allocate_exact_size(egui::vec2(16.0, 16.0), egui::Sense::hover());
    let painter = ui.painter();
    let center = rect.center();
    match code {
        "gold" => {
            painter.circle_filled(center, 7.0, egui::Color32::from_rgb(240, 196, 60));
            painter.circle_stroke(center, 4.5, egui::Stroke::new(1.5, egui::Color32::from_rgb(200, 150, 30)));
        }
        "gems" => {
            let points = vec![
                center + egui::vec2(0.0, -7.5),
                center + egui::vec2(6.5, 0.0),
                center + egui::vec2(0.0, 7.5),
                center + egui::vec2(-6.5, 0.0),
            ];
            painter.add(egui::Shape::convex_polygon(
                points,
                egui::Color32::from_rgb(110, 200, 255),
                egui::Stroke::NONE,
            ));
        }
        _ => {
            painter.rect_filled(
                rect.shrink(2.0),
                egui::CornerRadius::same(2),
                egui::Color32::from_rgb(200, 200, 200),
            );
        }
    }
}

/// A small badge for an item: a colour for its kind and the first letter of its name.
fn item_icon(ui: &mut egui::Ui, kind: ItemKind, name: &str) {
    let color = match kind {
        ItemKind::Durable => egui::Color32::from_rgb(170, 110, 230),
        ItemKind::Consumable => egui::Color32::from_rgb(80, 180, 140),
        ItemKind::CurrencyPack => egui::Color32::from_rgb(70, 150, 230),
        ItemKind::Bundle => egui::Color32::from_rgb(230, 140, 60),
    };
    let (rect, _) = ui.allocate_exact_size(egui::vec2(44.0, 44.0), egui::Sense::hover());
    let painter = ui.painter();
    painter.rect_filled(rect, egui::CornerRadius::same(10), color);
    let letter: String = name.chars().next().map(|c| c.to_uppercase().collect()).unwrap_or_default();
    painter.text(
        rect.center(),
        egui::Align2::CENTER_CENTER,
        letter,
        egui::FontId::proportional(22.0),
        egui::Color32::WHITE,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn money(text: &str, currency: &str) -> Money {
        Money {
            currency: store_api::MoneyCurrency::parse(currency).expect("a currency"),
            amount: store_api::money::parse_amount(text).expect("an amount"),
        }
    }

    #[test]
    fn money_reads_as_players_expect() {
        assert_eq!(format_money(&money("0.99", "USD")), "$0.99");
        assert_eq!(format_money(&money("0.5", "USD")), "$0.50");
        assert_eq!(format_money(&money("0.002", "USD")), "$0.002");
        assert_eq!(format_money(&money("160", "JPY")), "¥160");
        assert_eq!(format_money(&money("0.89", "EUR")), "€0.89");
        assert_eq!(format_money(&money("1", "CHF")), "CHF 1.00");
    }

    #[test]
    fn a_virtual_price_shows_its_real_money_equivalent() {
        let gems = store_api::currency::CurrencyCode::parse("gems").expect("a code");
        let with =
            Price::Virtual { currency: gems.clone(), amount: 120, equivalent: Some(money("1.19", "USD")) };
        assert_eq!(price_label(&with, &Catalog::default()), "120 gems (≈ $1.19)");
        let without = Price::Virtual { currency: gems, amount: 120, equivalent: None };
        assert_eq!(price_label(&without, &Catalog::default()), "120 gems");
    }

    #[test]
    fn card_numbers_are_shown_in_groups_of_four() {
        assert_eq!(spaced_card("4242424242424242"), "4242 4242 4242 4242");
    }

    fn order_update(provider: &str, status: OrderStatus, request: Option<RequestId>) -> OrderUpdated {
        let order: store_api::orders::Order = serde_json::from_value(serde_json::json!({
            "id": "01890a5d-ac96-774b-bcce-b302099a8057", "status": status, "quantity": 1, "price_index": 0,
            "amount": {"currency": "USD", "amount": "0.99"}, "refunded": {"currency": "USD", "amount": "0"},
            "checkout_url": "", "provider": provider, "sku": "gems.small",
            "expires_at": "2026-12-03T00:00:00Z", "created_at": "2026-12-03T00:00:00Z", "updated_at": "2026-12-03T00:00:00Z",
        }))
        .expect("an order");
        OrderUpdated { request, order }
    }

    #[test]
    fn a_steam_order_points_to_the_overlay_and_a_card_order_opens_the_checkout() {
        let name = |sku: &str| sku.to_owned();
        let request = Some(RequestId(7));
        let mut steam = Storefront { pay_with_steam: true, ..Storefront::default() };
        steam.pending.insert(RequestId(7), "Opening the Steam overlay".to_owned());
        steam.note_order(&order_update("steam", OrderStatus::RequiresPayment, request), &name);
        assert_eq!(steam.checkout, None, "no card form for Steam");
        assert_eq!(steam.notice, Some(("Complete the purchase in the Steam overlay.".to_owned(), false)));
        assert!(steam.pending.is_empty());
        steam.note_order(&order_update("steam", OrderStatus::Failed, None), &name);
        assert_eq!(
            steam.notice,
            Some(("The purchase was not completed in Steam. You were not charged.".to_owned(), true))
        );
        steam.note_order(&order_update("steam", OrderStatus::Fulfilled, None), &name);
        assert_eq!(steam.notice, Some(("Payment received: gems.small is yours.".to_owned(), false)));

        let mut card = Storefront::default();
        let update = order_update("sandbox", OrderStatus::RequiresPayment, request);
        card.note_order(&update, &name);
        assert_eq!(card.checkout, Some(update.order.id));
        assert_eq!(card.card_number, "4242 4242 4242 4242");
    }
}
