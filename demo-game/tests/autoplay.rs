//! The demo game in a real window (under Xvfb in CI): `--autoplay` plays the whole loop against
//! a server it starts inside itself, screenshots every step, and exits 0; against a server
//! without the `coin` reward rule it exits non-zero naming the step that failed.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The longest an autoplay run may take before the test kills it.
const RUN_LIMIT: Duration = Duration::from_secs(300);

/// A loopback address nothing listens on, so the game starts its embedded server.
fn nobody() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let port = listener.local_addr().expect("an address").port();
    drop(listener);
    format!("http://127.0.0.1:{port}")
}

fn autoplay(server: &str, data: &Path, shots: &Path) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_demo-game"))
        .args(["--autoplay", "--server", server, "--data-dir"])
        .arg(data)
        .arg("--screenshot")
        .arg(shots)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the demo game starts");
    let deadline = Instant::now() + RUN_LIMIT;
    while child.try_wait().expect("the game's status").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    child.wait_with_output().expect("the game's output")
}

#[test]
fn autoplay_plays_the_whole_loop_in_a_real_window_and_every_step_shows_something_new() {
    if !tests::display_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("a temp dir");
    let shots = dir.path().join("shots");
    let output = autoplay(&nobody(), &dir.path().join("data"), &shots);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "autoplay failed: {}\n{stdout}\n{stderr}", output.status);
    assert!(stdout.contains("every step succeeded (6 steps)"), "{stdout}");
    assert!(stderr.contains("started one inside the game"), "it started its own server: {stderr}");

    let mut pictures: Vec<_> = std::fs::read_dir(&shots)
        .expect("screenshots")
        .map(|entry| entry.expect("an entry").path())
        .collect();
    pictures.sort();
    let names: Vec<_> =
        pictures.iter().filter_map(|path| path.file_name()?.to_str().map(str::to_owned)).collect();
    assert_eq!(
        names,
        [
            "01-log-in.png",
            "02-earn-gold.png",
            "03-buy-and-use-a-power-up.png",
            "04-buy-a-gem-pack-with-the-test-card.png",
            "05-buy-and-equip-a-skin-with-gems.png",
            "06-add-an-extra-life-to-the-tab.png",
        ]
    );
    for picture in &pictures {
        let variance = tests::luminance_variance(picture);
        assert!(variance > 100, "{} is blank (variance {variance})", picture.display());
    }
    for pair in pictures.windows(2) {
        let (before, after) =
            (std::fs::read(&pair[0]).expect("read"), std::fs::read(&pair[1]).expect("read"));
        assert_ne!(before, after, "{} and {} show the same", pair[0].display(), pair[1].display());
    }
    let keep = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("demo-shots");
    let _ = std::fs::remove_dir_all(&keep);
    std::fs::create_dir_all(&keep).expect("a folder for the screenshots");
    for picture in &pictures {
        std::fs::copy(picture, keep.join(picture.file_name().expect("a name"))).expect("copied");
    }
}

#[test]
fn autoplay_names_the_step_that_failed_and_exits_non_zero() {
    if !tests::display_available() {
        return;
    }
    // A real server, but without the `coin` reward rule the game earns through.
    let (runtime, server) = tests::server_beside_a_window();
    let dir = tempfile::tempdir().expect("a temp dir");
    let output = autoplay(server.base_url(), &dir.path().join("data"), &dir.path().join("shots"));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "it must not claim success: {stderr}");
    assert!(stderr.contains("autoplay failed at step `earn gold`"), "{stderr}");
    assert!(stderr.contains("`coin` reward rule"), "{stderr}");
    runtime.block_on(server.stop());
}
