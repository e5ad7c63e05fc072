//! Coin Catcher, Coinslot's demo game: catch falling gold coins (credited through a reward
//! rule), dodge hazards, and spend in the shop: skins and power-ups for gold, gem packs and a
//! starter bundle by card through the sandbox checkout, and an extra life for $0.05 on a tab.
//!
//! - [`play`]: the rules, headless (tested with `MinimalPlugins`).
//! - [`shop`]: the game meeting the store (`game-sdk`).
//! - [`look`]: shapes, the HUD, the keyboard.
//! - [`autoplay`]: `--autoplay`, the whole loop by itself.
//! - [`embedded`]: a store server inside the game when none answers.

pub mod autoplay;
pub mod embedded;
pub mod look;
pub mod play;
pub mod shop;

use std::path::{Path, PathBuf};

/// The repository's `assets/` folder (art, icons, the default catalog) as an absolute path, or
/// `assets/` beside the executable when the game was moved out of the repository.
#[must_use]
pub fn default_assets() -> PathBuf {
    let in_repository = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("assets");
    if let Ok(found) = in_repository.canonicalize() {
        return found;
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("assets")))
        .unwrap_or_else(|| PathBuf::from("assets"))
}

/// Where the game keeps its data (the embedded server's database, the store's records):
/// `$XDG_DATA_HOME/coinslot-demo`, `~/.local/share/coinslot-demo`, or a temporary folder.
#[must_use]
pub fn default_data_dir() -> PathBuf {
    if let Some(data) = std::env::var_os("XDG_DATA_HOME").filter(|dir| !dir.is_empty()) {
        return PathBuf::from(data).join("coinslot-demo");
    }
    if let Some(home) = std::env::var_os("HOME").filter(|dir| !dir.is_empty()) {
        return PathBuf::from(home).join(".local").join("share").join("coinslot-demo");
    }
    std::env::temp_dir().join("coinslot-demo")
}
