//! What the benchmarks share: the server in its own process, fresh databases, logged-in
//! players, and latency figures. Only ever talks to 127.0.0.1.

// Rates, percentiles and ratios are measurements, not money.
#![allow(clippy::float_arithmetic, clippy::cast_precision_loss, clippy::cast_possible_truncation, dead_code)]

use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use serde_json::{Value, json};

/// The server binary cargo built for the benchmarks.
pub const SERVER_BIN: &str = env!("CARGO_BIN_EXE_store-server");

#[derive(Debug, Default, Clone)]
pub struct Outcome {
    pub done: usize,
    pub errors: usize,
    pub elapsed: Duration,
    pub latencies: Vec<Duration>,
}

impl Outcome {
    pub fn rate(&self) -> f64 {
        self.done as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    pub fn percentile(&mut self, share: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        self.latencies.sort_unstable();
        let index = ((self.latencies.len() - 1) as f64 * share).round() as usize;
        self.latencies[index]
    }

    pub fn merge(&mut self, other: Self) {
        self.done += other.done;
        self.errors += other.errors;
        self.latencies.extend(other.latencies);
    }
}

pub fn ms(duration: Duration) -> String {
    format!("{:.2} ms", duration.as_secs_f64() * 1e3)
}

/// A memory figure of a process from `/proc/<pid>/status` (`VmHWM`, the peak; `VmRSS`, now), in
/// MiB.
pub fn memory_mib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with(field))
                .and_then(|line| line.split_whitespace().nth(1).and_then(|kib| kib.parse::<u64>().ok()))
        })
        .map_or(0, |kib| kib / 1024)
}

/// CPU seconds a process has used so far (user + system, from `/proc/<pid>/stat`).
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces): utime and stime are the 12th and
    // 13th, in clock ticks (100 per second on Linux).
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or_default().split_whitespace().collect();
    let ticks = |index: usize| fields.get(index).and_then(|value| value.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// Bytes a process has caused to be written to storage (`write_bytes` of `/proc/<pid>/io`).
fn storage_bytes(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/io"))
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix("write_bytes:"))
        .and_then(|bytes| bytes.trim().parse::<f64>().ok())
        .unwrap_or(0.0)
}

/// What a load cost, read before and after it: the servers' CPU, the bytes written (SQLite: what
/// the server processes wrote to storage, its WAL and the checkpoints that copy it back;
/// PostgreSQL: the WAL, from its position), and the rows in every table.
#[derive(Debug, Clone, Copy)]
pub struct Meter {
    cpu_seconds: f64,
    bytes: f64,
    rows: f64,
}

/// A load's cost per operation.
#[derive(Debug, Clone, Copy)]
pub struct Cost {
    pub cpu_us: f64,
    /// Rows inserted (updates of balances and item counts are not counted).
    pub rows: f64,
    pub bytes: f64,
}

impl std::fmt::Display for Cost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:.0} us, {:.1} rows, {:.1} kB", self.cpu_us, self.rows, self.bytes / 1024.0)
    }
}

impl Meter {
    /// Reads the meter of `pids` serving `database_url`.
    pub async fn read(database_url: &str, pids: &[u32]) -> Self {
        let db = store_server::db::Db::connect(database_url, 1, Duration::from_secs(30))
            .await
            .expect("the database");
        let postgres = db.backend() == store_server::db::Backend::Postgres;
        let tables: Vec<String> = sqlx::query_scalar(if postgres {
            "select tablename::text from pg_tables where schemaname = current_schema() and tablename not like '\\_sqlx%'"
        } else {
            "select name from sqlite_master where type = 'table' and name not like 'sqlite\\_%' escape '\\' \
             and name not like '\\_sqlx%' escape '\\'"
        })
        .fetch_all(db.pool())
        .await
        .expect("the tables");
        let mut rows = 0;
        for table in tables {
            let count: i64 =
                sqlx::query_scalar(sqlx::AssertSqlSafe(format!("select count(*) from \"{table}\"")))
                    .fetch_one(db.pool())
                    .await
                    .expect("a count");
            rows += count;
        }
        let bytes = if postgres {
            let wal: i64 =
                sqlx::query_scalar("select cast(pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0') as bigint)")
                    .fetch_one(db.pool())
                    .await
                    .expect("the WAL position");
            wal as f64
        } else {
            pids.iter().map(|pid| storage_bytes(*pid)).sum()
        };
        db.close().await;
        Self { cpu_seconds: pids.iter().map(|pid| cpu_seconds(*pid)).sum(), bytes, rows: rows as f64 }
    }

    /// The cost per operation of `done` operations since `self`.
    pub fn per(&self, after: &Self, done: usize) -> Cost {
        let done = done.max(1) as f64;
        Cost {
            cpu_us: (after.cpu_seconds - self.cpu_seconds) * 1e6 / done,
            rows: (after.rows - self.rows) / done,
            bytes: (after.bytes - self.bytes) / done,
        }
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("a free port").local_addr().expect("an address").port()
}

/// A fresh database for one backend: a SQLite file in a temporary directory, or a new database on
/// the PostgreSQL server.
pub async fn fresh_database(postgres: Option<&str>, label: &str) -> (String, Option<tempfile::TempDir>) {
    match postgres {
        None => {
            let dir = tempfile::tempdir().expect("a temp dir");
            (format!("sqlite://{}", dir.path().join(format!("{label}.db")).display()), Some(dir))
        }
        Some(url) => {
            let admin =
                store_server::db::Db::connect(url, 1, Duration::from_secs(30)).await.expect("PostgreSQL");
            let name = format!("coinslot_bench_{label}_{}", std::process::id());
            let statement = format!("create database {name}");
            sqlx::query(sqlx::AssertSqlSafe(statement)).execute(admin.pool()).await.expect("create database");
            admin.close().await;
            let base = url.rsplit_once('/').map_or(url, |(base, _)| base);
            (format!("{base}/{name}"), None)
        }
    }
}

/// `store-server serve` in its own process.
pub struct Server {
    pub base: String,
    pub key: String,
    child: Child,
}

impl Server {
    /// Starts `store-server serve` on `database_url` with extra `COINSLOT_*` settings. A fresh
    /// database prints its first operator key, which is kept; an existing one has none.
    pub async fn start(database_url: &str, settings: &[(&str, &str)], fresh: bool) -> Self {
        let port = free_port();
        let mut child = Command::new(SERVER_BIN)
            .arg("serve")
            .env("COINSLOT_DATABASE_URL", database_url)
            .env("COINSLOT_LISTEN", format!("127.0.0.1:{port}"))
            .env("COINSLOT_ASSETS", concat!(env!("CARGO_MANIFEST_DIR"), "/../assets"))
            .env("COINSLOT_DB_CONNECTIONS_MAX", "32")
            // The load comes from a few players and one key, far faster than any person.
            .env("COINSLOT_PLAYER_RATE_LIMIT", "off")
            .env("COINSLOT_KEY_RATE_LIMIT", "off")
            .envs(settings.iter().copied())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("store-server starts");
        // The first start prints its operator key once; the rest of the output is drained.
        let (found, key) = std::sync::mpsc::channel();
        for output in [
            Box::new(child.stdout.take().expect("stdout")) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().expect("stderr")),
        ] {
            let found = found.clone();
            std::thread::spawn(move || {
                for line in std::io::BufReader::new(output).lines().map_while(Result::ok) {
                    if let Some(key) = line.split_whitespace().find(|word| word.starts_with("csk_")) {
                        let _ = found.send(key.to_owned());
                    }
                }
            });
        }
        let key = if fresh {
            tokio::task::spawn_blocking(move || key.recv_timeout(Duration::from_secs(120)))
                .await
                .expect("a reader")
                .expect("the server printed its first operator key")
        } else {
            String::new()
        };
        let base = format!("http://127.0.0.1:{port}");
        let started = Instant::now();
        while reqwest::get(format!("{base}/readyz")).await.map(|r| r.status().is_success()).ok() != Some(true)
        {
            assert!(started.elapsed() < Duration::from_secs(60), "the server was not ready in 60 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Self { base, key, child }
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops the server gracefully; returns its peak memory in MiB.
    pub async fn stop(mut self) -> u64 {
        let peak = memory_mib(self.child.id(), "VmHWM:");
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let started = Instant::now();
        while self.child.try_wait().ok().flatten().is_none() {
            if started.elapsed() > Duration::from_secs(30) {
                let _ = self.child.kill();
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = self.child.wait();
        peak
    }
}

/// Logs a device in; returns the session (`player_id`, `session_token`).
pub async fn login(http: &reqwest::Client, base: &str, device_id: &str) -> Value {
    http.post(format!("{base}/v1/auth/device"))
        .json(&json!({ "device_id": device_id }))
        .send()
        .await
        .expect("login")
        .json()
        .await
        .expect("a session")
}

/// Logs in `count` players and gives each enough gold; returns their ids and tokens.
pub async fn players(
    http: &reqwest::Client,
    server: &Server,
    prefix: &str,
    count: usize,
) -> Vec<(String, String)> {
    let mut players = Vec::with_capacity(count);
    for index in 0..count {
        let session = login(http, &server.base, &format!("{prefix}-{index}")).await;
        let player = session["player_id"].as_str().expect("an id").to_owned();
        let granted = http
            .post(format!("{}/admin/v1/players/{player}/grants", server.base))
            .bearer_auth(&server.key)
            .header("idempotency-key", format!("seed-{prefix}-{index}"))
            .json(&json!({ "currency": "gold", "amount": 100_000_000, "reason": "benchmark" }))
            .send()
            .await
            .expect("grant");
        assert!(granted.status().is_success(), "grant: {}", granted.status());
        players.push((player, session["session_token"].as_str().expect("a token").to_owned()));
    }
    players
}

/// An open-loop load: `count` requests arrive on a fixed schedule at `rate` per second (for at
/// most `limit`), at most `clients` in flight; each latency counts from the request's due time
/// (before it waits for a free client), so queueing behind a slow request is not hidden. `send(index)` makes request `index`
/// and tells whether it succeeded.
pub async fn open_loop(
    clients: usize,
    rate: f64,
    count: usize,
    limit: Duration,
    send: impl Fn(usize) -> BoxFuture<'static, bool>,
) -> Outcome {
    let interval = Duration::from_secs_f64(1.0 / rate.max(1.0));
    let in_flight = Arc::new(Semaphore::new(clients.max(1)));
    let started = tokio::time::Instant::now();
    let mut tasks = JoinSet::new();
    for index in 0..count {
        let scheduled = started + interval.mul_f64(index as f64);
        if scheduled.duration_since(started) > limit {
            break;
        }
        tokio::time::sleep_until(scheduled).await;
        // Timers fire up to a millisecond late: the clock starts when this one fired, before
        // waiting for a free client, so queueing behind slow requests still counts.
        let due = tokio::time::Instant::now();
        let permit = Arc::clone(&in_flight).acquire_owned().await.expect("the semaphore is open");
        let request = send(index);
        tasks.spawn(async move {
            let _permit = permit;
            let succeeded = request.await;
            (succeeded, due.elapsed())
        });
    }
    let mut total = Outcome::default();
    while let Some(joined) = tasks.join_next().await {
        let (succeeded, latency) = joined.expect("a request");
        if succeeded {
            total.done += 1;
            total.latencies.push(latency);
        } else {
            total.errors += 1;
        }
    }
    total.elapsed = started.elapsed();
    total
}

/// A closed loop: `clients` clients each send their share of `count` requests one after another
/// (client `c` sends `c`, `c + clients`, ...) for at most `limit`: the peak rate.
pub async fn closed_loop(
    clients: usize,
    count: usize,
    limit: Duration,
    send: impl Fn(usize) -> BoxFuture<'static, bool> + Send + Sync + 'static,
) -> Outcome {
    let send = Arc::new(send);
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for client in 0..clients.max(1) {
        let send = Arc::clone(&send);
        tasks.spawn(async move {
            let mut outcome = Outcome::default();
            for index in (client..count).step_by(clients.max(1)) {
                if started.elapsed() > limit {
                    break;
                }
                let sent = Instant::now();
                if send(index).await {
                    outcome.done += 1;
                    outcome.latencies.push(sent.elapsed());
                } else {
                    outcome.errors += 1;
                }
            }
            outcome
        });
    }
    let mut total = Outcome::default();
    while let Some(joined) = tasks.join_next().await {
        total.merge(joined.expect("a client"));
    }
    total.elapsed = started.elapsed();
    total
}
