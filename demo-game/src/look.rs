//! What the player sees and presses: shapes for the runner, coins and hazards (the runner wears
//! its skin, glows with a magnet, carries a shield ring), the HUD with balances, lives and the
//! tab, the game-over panel, and the keyboard.

// Layout and animation arithmetic (points, seconds); no money.
#![allow(clippy::float_arithmetic)]

use bevy::ecs::system::SystemParam;
use bevy::prelude::*;
use bevy_egui::{EguiContexts, EguiPrimaryContextPass, egui};
use game_sdk::store_api::ledger::Quantity;
use game_sdk::ui::{Storefront, format_money};
use game_sdk::{Catalog, Inventory, StoreRequests, StoreStatus, Tab, Wallet};

use crate::play::{
    ARENA_HEIGHT, ARENA_WIDTH, COIN_RADIUS, Coin, HAZARD_SIDE, Hazard, Lives, PLAYER_SIZE, Phase, Player,
    PlayerInput, PowerUp, PowerUps, Restart, Score,
};
use crate::shop::{Equip, NOTICE_DURATION, Notice, SKINS, UsePowerUp, Wardrobe};

/// Colours of the game.
mod palette {
    use bevy::prelude::Color;

    pub const BACKGROUND: Color = Color::srgb(0.07, 0.08, 0.12);
    pub const ARENA: Color = Color::srgb(0.11, 0.13, 0.19);
    pub const FLOOR: Color = Color::srgb(0.30, 0.34, 0.45);
    pub const COIN: Color = Color::srgb(0.98, 0.80, 0.22);
    pub const HAZARD: Color = Color::srgb(0.93, 0.30, 0.32);
    pub const PLAIN: Color = Color::srgb(0.85, 0.86, 0.90);
    pub const RED: Color = Color::srgb(0.86, 0.20, 0.25);
    pub const BLUE: Color = Color::srgb(0.25, 0.52, 0.92);
    pub const SHIELD: Color = Color::srgba(0.47, 0.78, 1.0, 0.35);
    pub const MAGNET: Color = Color::srgba(0.98, 0.80, 0.22, 0.25);
    pub const TURBO: Color = Color::srgb(1.0, 0.62, 0.18);
}

/// How far right of the window's centre the arena is drawn, leaving room for the shop.
pub const ARENA_SHIFT_X: f32 = 260.0;
/// The window's size: the shop (about 540 points) beside the arena (800 points).
pub const WINDOW_SIZE: (u32, u32) = (1400, 780);

/// The runner's look for a skin.
#[must_use]
pub fn skin_color(skin: Option<&str>) -> Color {
    match skin {
        Some("skin.red") => palette::RED,
        Some("skin.blue") => palette::BLUE,
        _ => palette::PLAIN,
    }
}

/// What a power-up looks like while it works: a ring for the shield, a glow for the magnet.
#[derive(Component, Clone, Copy, PartialEq, Eq)]
struct Aura(PowerUp);

/// Draws the game and takes the keyboard.
#[derive(Debug, Default)]
pub struct LookPlugin;

impl Plugin for LookPlugin {
    fn build(&self, app: &mut App) {
        app.insert_resource(ClearColor(palette::BACKGROUND))
            .add_systems(Startup, set_the_stage)
            .add_systems(
                Update,
                (
                    read_keyboard.before(crate::play::PlaySystems),
                    (dress_player, dress_coins, dress_hazards, show_power_ups)
                        .after(crate::play::PlaySystems),
                ),
            )
            .add_systems(EguiPrimaryContextPass, show_hud);
    }
}

fn set_the_stage(
    mut commands: Commands,
    mut meshes: ResMut<Assets<Mesh>>,
    mut materials: ResMut<Assets<ColorMaterial>>,
) {
    // The arena sits right of centre, so the shop window (on the left) never covers it.
    commands.spawn((Camera2d, Transform::from_xyz(-ARENA_SHIFT_X, 0.0, 0.0)));
    commands.spawn((
        Sprite::from_color(palette::ARENA, Vec2::new(ARENA_WIDTH, ARENA_HEIGHT)),
        Transform::from_xyz(0.0, 0.0, -1.0),
    ));
    commands.spawn((
        Sprite::from_color(palette::FLOOR, Vec2::new(ARENA_WIDTH, 4.0)),
        Transform::from_xyz(0.0, crate::play::PLAYER_Y - PLAYER_SIZE.y / 2.0 - 4.0, -0.5),
    ));
    commands.spawn((
        Aura(PowerUp::Shield),
        Mesh2d(meshes.add(Circle::new(PLAYER_SIZE.x * 0.75))),
        MeshMaterial2d(materials.add(ColorMaterial::from(palette::SHIELD))),
        Transform::from_xyz(0.0, crate::play::PLAYER_Y, 0.9),
        Visibility::Hidden,
    ));
    commands.spawn((
        Aura(PowerUp::Magnet),
        Mesh2d(meshes.add(Rectangle::new(PLAYER_SIZE.x * 2.2, PLAYER_SIZE.y * 1.8))),
        MeshMaterial2d(materials.add(ColorMaterial::from(palette::MAGNET))),
        Transform::from_xyz(0.0, crate::play::PLAYER_Y, 0.8),
        Visibility::Hidden,
    ));
    commands.spawn((
        Aura(PowerUp::Turbo),
        Mesh2d(meshes.add(Rectangle::new(PLAYER_SIZE.x * 1.3, 6.0))),
        MeshMaterial2d(materials.add(ColorMaterial::from(palette::TURBO))),
        Transform::from_xyz(0.0, crate::play::PLAYER_Y - PLAYER_SIZE.y / 2.0 - 6.0, 0.95),
        Visibility::Hidden,
    ));
}

fn read_keyboard(
    keys: Option<Res<ButtonInput<KeyCode>>>,
    mut input: ResMut<PlayerInput>,
    mut power_ups: MessageWriter<UsePowerUp>,
    mut storefront: ResMut<Storefront>,
    autoplay: Option<Res<crate::autoplay::Autoplay>>,
) {
    let Some(keys) = keys else { return };
    if autoplay.is_some() {
        return;
    }
    let left = keys.any_pressed([KeyCode::ArrowLeft, KeyCode::KeyA]);
    let right = keys.any_pressed([KeyCode::ArrowRight, KeyCode::KeyD]);
    input.axis = match (left, right) {
        (true, false) => -1.0,
        (false, true) => 1.0,
        _ => 0.0,
    };
    if keys.just_pressed(KeyCode::KeyM) {
        power_ups.write(UsePowerUp(PowerUp::Magnet));
    }
    if keys.just_pressed(KeyCode::KeyS) {
        power_ups.write(UsePowerUp(PowerUp::Shield));
    }
    if keys.just_pressed(KeyCode::KeyT) {
        power_ups.write(UsePowerUp(PowerUp::Turbo));
    }
    if keys.just_pressed(KeyCode::KeyB) {
        storefront.open = !storefront.open;
    }
}

fn dress_player(
    mut commands: Commands,
    wardrobe: Res<Wardrobe>,
    added: Query<Entity, Added<Player>>,
    mut sprites: Query<&mut Sprite, With<Player>>,
) {
    let color = skin_color(wardrobe.equipped.as_deref());
    for entity in &added {
        commands.entity(entity).insert(Sprite::from_color(color, PLAYER_SIZE));
    }
    if wardrobe.is_changed() {
        for mut sprite in &mut sprites {
            sprite.color = color;
        }
    }
}

fn dress_coins(
    mut commands: Commands,
    added: Query<Entity, Added<Coin>>,
    mut meshes: ResMut<Assets<Mesh>>,
    mut materials: ResMut<Assets<ColorMaterial>>,
    mut look: Local<Option<(Handle<Mesh>, Handle<ColorMaterial>)>>,
) {
    let (mesh, material) = look
        .get_or_insert_with(|| {
            (meshes.add(Circle::new(COIN_RADIUS)), materials.add(ColorMaterial::from(palette::COIN)))
        })
        .clone();
    for entity in &added {
        commands.entity(entity).insert((Mesh2d(mesh.clone()), MeshMaterial2d(material.clone())));
    }
}

fn dress_hazards(mut commands: Commands, added: Query<Entity, Added<Hazard>>) {
    for entity in &added {
        commands.entity(entity).insert(Sprite::from_color(palette::HAZARD, Vec2::splat(HAZARD_SIDE)));
    }
}

fn show_power_ups(
    power: Res<PowerUps>,
    players: Query<&Transform, With<Player>>,
    mut auras: Query<(&Aura, &mut Transform, &mut Visibility), Without<Player>>,
) {
    let Ok(player) = players.single() else { return };
    for (Aura(kind), mut transform, mut visibility) in &mut auras {
        transform.translation.x = player.translation.x;
        let seconds = match kind {
            PowerUp::Shield => power.shield_s,
            PowerUp::Magnet => power.magnet_s,
            PowerUp::Turbo => power.turbo_s,
        };
        *visibility = if seconds > 0.0 { Visibility::Visible } else { Visibility::Hidden };
    }
}

/// What the HUD shows.
#[derive(SystemParam)]
struct HudView<'w> {
    wallet: Res<'w, Wallet>,
    inventory: Res<'w, Inventory>,
    tab: Res<'w, Tab>,
    catalog: Res<'w, Catalog>,
    status: Res<'w, State<StoreStatus>>,
    lives: Res<'w, Lives>,
    score: Res<'w, Score>,
    power: Res<'w, PowerUps>,
    phase: Res<'w, State<Phase>>,
    notice: Res<'w, Notice>,
    wardrobe: Res<'w, Wardrobe>,
    time: Res<'w, Time>,
}

/// What the HUD's buttons do.
#[derive(SystemParam)]
struct HudActions<'w> {
    use_power_up: MessageWriter<'w, UsePowerUp>,
    equip: MessageWriter<'w, Equip>,
    restart: MessageWriter<'w, Restart>,
    storefront: ResMut<'w, Storefront>,
    store: StoreRequests<'w>,
}

fn show_hud(mut contexts: EguiContexts, view: HudView, mut act: HudActions) -> Result {
    let HudView {
        wallet,
        inventory,
        tab,
        catalog,
        status,
        lives,
        score,
        power,
        phase,
        notice,
        wardrobe,
        time,
    } = view;
    let ctx = contexts.ctx_mut()?;
    egui::Area::new(egui::Id::new("hud")).anchor(egui::Align2::CENTER_BOTTOM, egui::vec2(0.0, -8.0)).show(
        ctx,
        |ui| {
            egui::Frame::window(ui.style()).show(ui, |ui| {
                ui.horizontal(|ui| {
                    ui.label(
                        egui::RichText::new(format!("Gold {}", wallet.balance("gold")))
                            .color(egui::Color32::from_rgb(250, 205, 60))
                            .strong(),
                    );
                    ui.label(
                        egui::RichText::new(format!("Gems {}", wallet.balance("gems")))
                            .color(egui::Color32::from_rgb(120, 200, 255))
                            .strong(),
                    );
                    ui.separator();
                    ui.label(
                        egui::RichText::new(format!("Lives {}", lives.0))
                            .color(egui::Color32::from_rgb(240, 100, 120))
                            .strong(),
                    );
                    ui.label(format!("Coins caught {}", score.coins));
                    ui.separator();
                    match tab.open() {
                        Some(open) => ui.label(format!(
                            "Tab {} of {}",
                            format_money(&open.amount),
                            format_money(&open.threshold)
                        )),
                        None => ui.weak("Tab empty"),
                    };
                    ui.separator();
                    for (kind, label, seconds) in [
                        (PowerUp::Magnet, "Magnet (M)", power.magnet_s),
                        (PowerUp::Turbo, "Turbo (T)", power.turbo_s),
                        (PowerUp::Shield, "Shield (S)", power.shield_s),
                    ] {
                        let held = inventory.quantity(kind.sku());
                        let text = if seconds > 0.0 {
                            format!("{label} {seconds:.0}s")
                        } else {
                            format!("{label} ×{held}")
                        };
                        if ui.add_enabled(held > 0 && seconds <= 0.0, egui::Button::new(text)).clicked() {
                            act.use_power_up.write(UsePowerUp(kind));
                        }
                    }
                    ui.separator();
                    for skin in SKINS {
                        if inventory.quantity(skin) > 0 {
                            let name =
                                catalog.item(skin).map_or(skin.to_owned(), |item| item.name.to_string());
                            let worn = wardrobe.equipped.as_deref() == Some(skin);
                            if ui.selectable_label(worn, name).clicked() {
                                act.equip.write(Equip(skin.to_owned()));
                            }
                        }
                    }
                    if ui.button(if act.storefront.open { "Close shop (B)" } else { "Shop (B)" }).clicked() {
                        act.storefront.open = !act.storefront.open;
                    }
                    if *status.get() != StoreStatus::Ready {
                        ui.colored_label(
                            egui::Color32::from_rgb(230, 190, 80),
                            "Store offline: reconnecting…",
                        );
                    }
                });
                if let Some((text, bad, at)) = &notice.current
                    && time.elapsed().saturating_sub(*at) < NOTICE_DURATION
                {
                    let color = if *bad {
                        egui::Color32::from_rgb(240, 120, 110)
                    } else {
                        egui::Color32::from_rgb(120, 220, 140)
                    };
                    ui.colored_label(color, text);
                }
            });
        },
    );
    if *phase.get() == Phase::GameOver {
        egui::Window::new("Out of lives")
            .collapsible(false)
            .resizable(false)
            .anchor(egui::Align2::CENTER_CENTER, egui::vec2(0.0, 0.0))
            .show(ctx, |ui| {
                ui.label(format!("You caught {} coins.", score.coins));
                ui.label("Keep going with an extra life, or start again.");
                if let Some(offer) = catalog.offer_for("extra_life") {
                    ui.horizontal(|ui| {
                        for (index, label) in
                            [(0_u32, "Extra life: $0.05 on your tab"), (1, "Extra life: 300 gold")]
                        {
                            if ui.button(label).clicked() {
                                let _ = act.store.purchase(offer.id, Quantity::one(), Some(index));
                            }
                        }
                    });
                }
                if ui.button("Start again").clicked() {
                    act.restart.write(Restart);
                }
            });
    }
    Ok(())
}
