//! The game itself, without pixels or a store: the runner moves, coins and hazards fall, coins
//! are caught, hazards cost lives unless a shield takes the hit, a magnet pulls coins in.
//! Everything here runs headless (`MinimalPlugins`), which is how it is tested; the visuals and
//! the store are other plugins that read and feed these resources and messages.

// Positions, speeds and timers are floats by nature; no money passes through this module.
#![allow(clippy::float_arithmetic)]

use std::time::Duration;

use bevy::prelude::*;

/// The playing field, centred on the origin.
pub const ARENA_WIDTH: f32 = 800.0;
/// The playing field's height.
pub const ARENA_HEIGHT: f32 = 560.0;
/// The runner's size.
pub const PLAYER_SIZE: Vec2 = Vec2::new(56.0, 30.0);
/// Where the runner stands.
pub const PLAYER_Y: f32 = -ARENA_HEIGHT / 2.0 + 36.0;
/// How fast the runner moves, in points per second.
pub const PLAYER_SPEED: f32 = 460.0;
/// A coin's radius.
pub const COIN_RADIUS: f32 = 12.0;
/// A hazard's side.
pub const HAZARD_SIDE: f32 = 26.0;
/// How fast things fall.
pub const FALL_SPEED: f32 = 210.0;
/// Lives at the start of a run.
pub const LIVES_START: u32 = 3;
/// How long a magnet works.
pub const MAGNET_DURATION_S: f32 = 10.0;
/// How fast a magnet pulls coins sideways.
pub const MAGNET_PULL_SPEED: f32 = 380.0;
/// How long a shield lasts if nothing hits it.
pub const SHIELD_DURATION_S: f32 = 20.0;
/// How long a turbo lasts.
pub const TURBO_DURATION_S: f32 = 20.0;
/// How much faster the runner is with a turbo.
pub const TURBO_SPEED_FACTOR: f32 = 1.6;

/// The game's phases.
#[derive(States, Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Phase {
    /// Things fall; the runner catches and dodges.
    #[default]
    Playing,
    /// Out of lives: an extra life (from the shop) or a restart brings play back.
    GameOver,
}

/// Where the runner wants to go this frame: -1 (left) to 1 (right). The keyboard, the
/// autoplayer or a test sets it.
#[derive(Resource, Debug, Default, Clone, Copy)]
pub struct PlayerInput {
    /// The direction.
    pub axis: f32,
}

/// Lives left.
#[derive(Resource, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lives(pub u32);

impl Default for Lives {
    fn default() -> Self {
        Self(LIVES_START)
    }
}

/// This run's score.
#[derive(Resource, Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Score {
    /// Coins caught.
    pub coins: u32,
}

/// Power-ups at work, as seconds left.
#[derive(Resource, Debug, Default, Clone, Copy, PartialEq)]
pub struct PowerUps {
    /// Seconds of magnet left.
    pub magnet_s: f32,
    /// Seconds of shield left (it also ends when it takes a hit).
    pub shield_s: f32,
    /// Seconds of turbo left.
    pub turbo_s: f32,
}

/// What falls and how often. Tests turn it off and place things by hand.
#[derive(Resource, Debug, Clone)]
pub struct Spawner {
    /// Whether anything falls on its own.
    pub enabled: bool,
    coin: Timer,
    hazard: Timer,
    seed: u64,
}

impl Default for Spawner {
    fn default() -> Self {
        Self::new(Duration::from_millis(650), Duration::from_millis(1_500))
    }
}

impl Spawner {
    /// A spawner dropping a coin every `coin_every` and a hazard every `hazard_every`.
    #[must_use]
    pub fn new(coin_every: Duration, hazard_every: Duration) -> Self {
        Self {
            enabled: true,
            coin: Timer::new(coin_every, TimerMode::Repeating),
            hazard: Timer::new(hazard_every, TimerMode::Repeating),
            seed: 0x9E37_79B9_7F4A_7C15,
        }
    }

    /// Nothing falls unless placed.
    #[must_use]
    pub fn disabled() -> Self {
        Self { enabled: false, ..Self::default() }
    }

    /// A position along the top, from a small xorshift generator (no need for more).
    fn next_x(&mut self) -> f32 {
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        let unit = f32::from(u16::try_from(self.seed >> 48).unwrap_or(u16::MAX)) / f32::from(u16::MAX);
        (unit - 0.5) * (ARENA_WIDTH - 2.0 * HAZARD_SIDE)
    }
}

/// The runner.
#[derive(Component, Debug, Default)]
pub struct Player;

/// A falling coin.
#[derive(Component, Debug, Default)]
pub struct Coin;

/// A falling hazard.
#[derive(Component, Debug, Default)]
pub struct Hazard;

/// Falls at a speed, in points per second.
#[derive(Component, Debug, Clone, Copy)]
pub struct Falling {
    /// Points per second.
    pub speed: f32,
}

/// A coin was caught: the store credits it through the `coin` reward rule.
#[derive(Message, Debug, Clone, Copy, PartialEq, Eq)]
pub struct CoinCaught;

/// A hazard reached the runner.
#[derive(Message, Debug, Clone, Copy, PartialEq, Eq)]
pub struct HazardHit {
    /// Whether a shield took the hit (no life lost).
    pub absorbed: bool,
}

/// A power-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PowerUp {
    /// Pulls coins to the runner.
    Magnet,
    /// Takes one hit.
    Shield,
    /// Runs faster.
    Turbo,
}

impl PowerUp {
    /// The catalog item that is this power-up.
    #[must_use]
    pub fn sku(self) -> &'static str {
        match self {
            Self::Magnet => "magnet",
            Self::Shield => "shield",
            Self::Turbo => "turbo",
        }
    }
}

/// A power-up starts working (the store confirmed the item was used up).
#[derive(Message, Debug, Clone, Copy, PartialEq, Eq)]
pub struct PowerUpStarted(pub PowerUp);

/// One more life (an extra life was bought and used).
#[derive(Message, Debug, Clone, Copy, PartialEq, Eq)]
pub struct LifeGained;

/// Start a new run: full lives, score zero, the field cleared.
#[derive(Message, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Restart;

/// The game's rule systems, in `Update`; the store and the visuals run after them.
#[derive(SystemSet, Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PlaySystems;

/// The game's rules.
#[derive(Debug, Default)]
pub struct PlayPlugin;

impl Plugin for PlayPlugin {
    fn build(&self, app: &mut App) {
        if !app.is_plugin_added::<bevy::state::app::StatesPlugin>() {
            app.add_plugins(bevy::state::app::StatesPlugin);
        }
        app.init_state::<Phase>()
            .init_resource::<PlayerInput>()
            .init_resource::<Lives>()
            .init_resource::<Score>()
            .init_resource::<PowerUps>()
            .init_resource::<Spawner>()
            .add_message::<CoinCaught>()
            .add_message::<HazardHit>()
            .add_message::<PowerUpStarted>()
            .add_message::<LifeGained>()
            .add_message::<Restart>()
            .add_systems(Startup, spawn_player)
            .add_systems(
                Update,
                (
                    (
                        move_player,
                        spawn_falling,
                        fall,
                        pull_coins,
                        catch_coins,
                        hit_hazards,
                        wear_off_power_ups,
                    )
                        .chain()
                        .run_if(in_state(Phase::Playing)),
                    (start_power_ups, gain_lives, restart).chain(),
                )
                    .chain()
                    .in_set(PlaySystems),
            );
    }
}

fn spawn_player(mut commands: Commands) {
    commands.spawn((Player, Transform::from_xyz(0.0, PLAYER_Y, 1.0)));
}

fn move_player(
    input: Res<PlayerInput>,
    power: Res<PowerUps>,
    time: Res<Time>,
    mut players: Query<&mut Transform, With<Player>>,
) {
    let limit = (ARENA_WIDTH - PLAYER_SIZE.x) / 2.0;
    let speed = if power.turbo_s > 0.0 { PLAYER_SPEED * TURBO_SPEED_FACTOR } else { PLAYER_SPEED };
    for mut transform in &mut players {
        let step = input.axis.clamp(-1.0, 1.0) * speed * time.delta_secs();
        transform.translation.x = (transform.translation.x + step).clamp(-limit, limit);
    }
}

fn spawn_falling(mut commands: Commands, time: Res<Time>, mut spawner: ResMut<Spawner>) {
    if !spawner.enabled {
        return;
    }
    let top = ARENA_HEIGHT / 2.0 + HAZARD_SIDE;
    spawner.coin.tick(time.delta());
    for _ in 0..spawner.coin.times_finished_this_tick() {
        let x = spawner.next_x();
        commands.spawn((Coin, Falling { speed: FALL_SPEED }, Transform::from_xyz(x, top, 0.5)));
    }
    spawner.hazard.tick(time.delta());
    for _ in 0..spawner.hazard.times_finished_this_tick() {
        let x = spawner.next_x();
        commands.spawn((Hazard, Falling { speed: FALL_SPEED * 1.15 }, Transform::from_xyz(x, top, 0.5)));
    }
}

fn fall(mut commands: Commands, time: Res<Time>, mut falling: Query<(Entity, &Falling, &mut Transform)>) {
    let floor = -ARENA_HEIGHT / 2.0 - HAZARD_SIDE;
    for (entity, falling, mut transform) in &mut falling {
        transform.translation.y -= falling.speed * time.delta_secs();
        if transform.translation.y < floor {
            commands.entity(entity).despawn();
        }
    }
}

fn pull_coins(
    power: Res<PowerUps>,
    time: Res<Time>,
    players: Query<&Transform, With<Player>>,
    mut coins: Query<&mut Transform, (With<Coin>, Without<Player>)>,
) {
    let Ok(player) = players.single() else { return };
    if power.magnet_s <= 0.0 {
        return;
    }
    let step = MAGNET_PULL_SPEED * time.delta_secs();
    for mut coin in &mut coins {
        let gap = player.translation.x - coin.translation.x;
        coin.translation.x += gap.clamp(-step, step);
    }
}

fn overlaps(player: Vec3, other: Vec3, half_other: f32) -> bool {
    (player.x - other.x).abs() <= PLAYER_SIZE.x / 2.0 + half_other
        && (player.y - other.y).abs() <= PLAYER_SIZE.y / 2.0 + half_other
}

fn catch_coins(
    mut commands: Commands,
    mut score: ResMut<Score>,
    mut caught: MessageWriter<CoinCaught>,
    players: Query<&Transform, With<Player>>,
    coins: Query<(Entity, &Transform), With<Coin>>,
) {
    let Ok(player) = players.single() else { return };
    for (entity, coin) in &coins {
        if overlaps(player.translation, coin.translation, COIN_RADIUS) {
            commands.entity(entity).despawn();
            score.coins += 1;
            caught.write(CoinCaught);
        }
    }
}

fn hit_hazards(
    mut commands: Commands,
    mut lives: ResMut<Lives>,
    mut power: ResMut<PowerUps>,
    mut phase: ResMut<NextState<Phase>>,
    mut hits: MessageWriter<HazardHit>,
    players: Query<&Transform, With<Player>>,
    hazards: Query<(Entity, &Transform), With<Hazard>>,
) {
    let Ok(player) = players.single() else { return };
    for (entity, hazard) in &hazards {
        if !overlaps(player.translation, hazard.translation, HAZARD_SIDE / 2.0) {
            continue;
        }
        commands.entity(entity).despawn();
        if power.shield_s > 0.0 {
            power.shield_s = 0.0;
            hits.write(HazardHit { absorbed: true });
            continue;
        }
        lives.0 = lives.0.saturating_sub(1);
        hits.write(HazardHit { absorbed: false });
        if lives.0 == 0 {
            phase.set(Phase::GameOver);
        }
    }
}

fn wear_off_power_ups(time: Res<Time>, mut power: ResMut<PowerUps>) {
    let elapsed = time.delta_secs();
    power.magnet_s = (power.magnet_s - elapsed).max(0.0);
    power.shield_s = (power.shield_s - elapsed).max(0.0);
    power.turbo_s = (power.turbo_s - elapsed).max(0.0);
}

fn start_power_ups(mut started: MessageReader<PowerUpStarted>, mut power: ResMut<PowerUps>) {
    for PowerUpStarted(kind) in started.read() {
        match kind {
            PowerUp::Magnet => power.magnet_s = MAGNET_DURATION_S,
            PowerUp::Shield => power.shield_s = SHIELD_DURATION_S,
            PowerUp::Turbo => power.turbo_s = TURBO_DURATION_S,
        }
    }
}

fn gain_lives(
    mut gained: MessageReader<LifeGained>,
    mut lives: ResMut<Lives>,
    phase: Res<State<Phase>>,
    mut next: ResMut<NextState<Phase>>,
) {
    for LifeGained in gained.read() {
        lives.0 += 1;
        if *phase.get() == Phase::GameOver {
            next.set(Phase::Playing);
        }
    }
}

fn restart(
    mut commands: Commands,
    mut restarts: MessageReader<Restart>,
    mut lives: ResMut<Lives>,
    mut score: ResMut<Score>,
    mut power: ResMut<PowerUps>,
    mut next: ResMut<NextState<Phase>>,
    falling: Query<Entity, With<Falling>>,
) {
    if restarts.read().count() == 0 {
        return;
    }
    *lives = Lives::default();
    *score = Score::default();
    *power = PowerUps::default();
    for entity in &falling {
        commands.entity(entity).despawn();
    }
    next.set(Phase::Playing);
}

#[cfg(test)]
mod tests {
    use bevy::time::TimeUpdateStrategy;

    use super::*;

    /// A headless game with nothing falling on its own and 20 ms frames.
    fn game() -> App {
        let mut app = App::new();
        app.add_plugins(MinimalPlugins)
            .add_plugins(PlayPlugin)
            .insert_resource(Spawner::disabled())
            .insert_resource(TimeUpdateStrategy::ManualDuration(Duration::from_millis(20)));
        app.update();
        app
    }

    fn frames(app: &mut App, count: usize) {
        for _ in 0..count {
            app.update();
        }
    }

    fn drop_on_runner<T: Component + Default>(app: &mut App, height_above: f32) {
        let x = runner_x(app);
        app.world_mut().spawn((
            T::default(),
            Falling { speed: FALL_SPEED },
            Transform::from_xyz(x, PLAYER_Y + height_above, 0.5),
        ));
    }

    fn runner_x(app: &mut App) -> f32 {
        let mut players = app.world_mut().query_filtered::<&Transform, With<Player>>();
        players.single(app.world()).expect("one runner").translation.x
    }

    fn messages<M: Message + Clone>(app: &App) -> Vec<M> {
        let messages = app.world().resource::<Messages<M>>();
        messages.iter_current_update_messages().cloned().collect()
    }

    fn phase(app: &App) -> Phase {
        *app.world().resource::<State<Phase>>().get()
    }

    #[test]
    fn the_runner_moves_with_the_input_and_stops_at_the_walls() {
        let mut app = game();
        app.world_mut().resource_mut::<PlayerInput>().axis = 1.0;
        frames(&mut app, 10);
        let moved = runner_x(&mut app);
        assert!((moved - PLAYER_SPEED * 0.2).abs() < 1.0, "10 frames of 20 ms at full speed: {moved}");
        frames(&mut app, 500);
        assert!(
            (runner_x(&mut app) - (ARENA_WIDTH - PLAYER_SIZE.x) / 2.0).abs() < 0.01,
            "stopped at the wall"
        );
    }

    #[test]
    fn a_coin_that_reaches_the_runner_scores_and_asks_the_store_for_gold() {
        let mut app = game();
        drop_on_runner::<Coin>(&mut app, 60.0);
        let mut caught = 0;
        for _ in 0..30 {
            app.update();
            caught += messages::<CoinCaught>(&app).len();
        }
        assert_eq!(caught, 1, "one CoinCaught for the store to claim");
        assert_eq!(app.world().resource::<Score>().coins, 1);
        let mut coins = app.world_mut().query_filtered::<(), With<Coin>>();
        assert_eq!(coins.iter(app.world()).count(), 0, "the coin is gone");
    }

    #[test]
    fn a_coin_out_of_reach_falls_past_unless_a_magnet_pulls_it_in() {
        let mut app = game();
        let far = ARENA_WIDTH / 2.0 - 20.0;
        app.world_mut().spawn((
            Coin,
            Falling { speed: FALL_SPEED },
            Transform::from_xyz(far, PLAYER_Y + 200.0, 0.5),
        ));
        frames(&mut app, 150);
        assert_eq!(app.world().resource::<Score>().coins, 0, "missed without a magnet");

        app.world_mut().write_message(PowerUpStarted(PowerUp::Magnet));
        app.update();
        assert!((app.world().resource::<PowerUps>().magnet_s - MAGNET_DURATION_S).abs() < 0.1);
        app.world_mut().spawn((
            Coin,
            Falling { speed: FALL_SPEED },
            Transform::from_xyz(far, PLAYER_Y + 200.0, 0.5),
        ));
        frames(&mut app, 150);
        assert_eq!(app.world().resource::<Score>().coins, 1, "the magnet pulled it in");
    }

    #[test]
    fn hazards_cost_lives_and_the_last_one_ends_the_run() {
        let mut app = game();
        for expected in (0..LIVES_START).rev() {
            drop_on_runner::<Hazard>(&mut app, 40.0);
            frames(&mut app, 20);
            assert_eq!(app.world().resource::<Lives>().0, expected);
        }
        assert_eq!(phase(&app), Phase::GameOver);
        // Nothing moves while the run is over.
        app.world_mut().resource_mut::<PlayerInput>().axis = 1.0;
        let before = runner_x(&mut app);
        frames(&mut app, 10);
        assert_eq!(runner_x(&mut app), before);
    }

    #[test]
    fn a_shield_absorbs_one_hit_and_then_is_gone() {
        let mut app = game();
        app.world_mut().write_message(PowerUpStarted(PowerUp::Shield));
        app.update();
        drop_on_runner::<Hazard>(&mut app, 40.0);
        let mut hits = Vec::new();
        for _ in 0..20 {
            app.update();
            hits.extend(messages::<HazardHit>(&app));
        }
        assert_eq!(hits, vec![HazardHit { absorbed: true }]);
        assert_eq!(app.world().resource::<Lives>().0, LIVES_START, "no life lost");
        assert!(app.world().resource::<PowerUps>().shield_s <= 0.0, "the shield is used up");
        drop_on_runner::<Hazard>(&mut app, 40.0);
        frames(&mut app, 20);
        assert_eq!(app.world().resource::<Lives>().0, LIVES_START - 1, "the next hit counts");
    }

    #[test]
    fn a_turbo_makes_the_runner_faster_while_it_lasts() {
        let mut app = game();
        app.world_mut().write_message(PowerUpStarted(PowerUp::Turbo));
        app.update();
        let start = runner_x(&mut app);
        app.world_mut().resource_mut::<PlayerInput>().axis = 1.0;
        frames(&mut app, 10);
        let moved = runner_x(&mut app) - start;
        assert!((moved - PLAYER_SPEED * TURBO_SPEED_FACTOR * 0.2).abs() < 1.0, "faster: {moved}");
    }

    #[test]
    fn power_ups_wear_off() {
        let mut app = game();
        app.world_mut().write_message(PowerUpStarted(PowerUp::Magnet));
        frames(&mut app, 1);
        // Ten seconds of 20 ms frames, and a few more.
        frames(&mut app, 505);
        assert!(app.world().resource::<PowerUps>().magnet_s <= 0.0);
    }

    #[test]
    fn an_extra_life_brings_a_finished_run_back_and_a_restart_resets_it() {
        let mut app = game();
        app.insert_resource(Lives(1));
        drop_on_runner::<Hazard>(&mut app, 40.0);
        frames(&mut app, 20);
        assert_eq!(phase(&app), Phase::GameOver);

        app.world_mut().write_message(LifeGained);
        frames(&mut app, 2);
        assert_eq!(phase(&app), Phase::Playing);
        assert_eq!(app.world().resource::<Lives>().0, 1);

        app.insert_resource(Score { coins: 7 });
        app.world_mut().write_message(Restart);
        frames(&mut app, 2);
        assert_eq!(app.world().resource::<Lives>().0, LIVES_START);
        assert_eq!(app.world().resource::<Score>().coins, 0);
    }

    #[test]
    fn the_spawner_drops_coins_and_hazards_inside_the_arena() {
        let mut app = game();
        app.insert_resource(Spawner::new(Duration::from_millis(100), Duration::from_millis(300)));
        frames(&mut app, 30);
        let mut coins = app.world_mut().query_filtered::<&Transform, With<Coin>>();
        let xs: Vec<f32> = coins.iter(app.world()).map(|transform| transform.translation.x).collect();
        assert!(xs.len() >= 4, "about one coin per 100 ms: {}", xs.len());
        assert!(xs.iter().all(|x| x.abs() <= ARENA_WIDTH / 2.0), "{xs:?}");
        let mut hazards = app.world_mut().query_filtered::<(), With<Hazard>>();
        assert!(hazards.iter(app.world()).count() >= 1);
    }
}
