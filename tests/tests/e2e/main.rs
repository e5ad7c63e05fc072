//! End-to-end tests: the real store server over real HTTP, each case on SQLite and on
//! PostgreSQL. One test binary, one module per area.

/// Declares each case once and runs it on both backends: `mod name { on_sqlite, on_postgres }`.
macro_rules! on_both_backends {
    ($(async fn $name:ident($server:ident: TestServer) $body:block)*) => {$(
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            async fn case($server: tests::TestServer) $body

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn on_sqlite() {
                let server = tests::TestServer::start(tests::Backend::Sqlite).await.expect("SQLite always runs");
                case(server).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn on_postgres() {
                if let Some(server) = tests::TestServer::start(tests::Backend::Postgres).await {
                    case(server).await;
                }
            }
        }
    )*};
}

/// Runs `case(backend)` (a case that starts its own server, with its own settings) on SQLite and
/// PostgreSQL: `on_each_backend!(case_name);` declares `case_name::{on_sqlite, on_postgres}`.
macro_rules! on_each_backend {
    ($($case:ident),* $(,)?) => {$(
        mod $case {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn on_sqlite() {
                super::$case(tests::Backend::Sqlite).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn on_postgres() {
                super::$case(tests::Backend::Postgres).await;
            }
        }
    )*};
}

/// Runs `case(backend, batching)` on SQLite and PostgreSQL, with group commit on and off:
/// `in_every_mode!(case_name);` declares `case_name::{on_sqlite, on_postgres,
/// on_sqlite_without_batching, on_postgres_without_batching}`.
macro_rules! in_every_mode {
    ($case:ident) => {
        mod $case {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn on_sqlite() {
                super::$case(tests::Backend::Sqlite, true).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn on_postgres() {
                super::$case(tests::Backend::Postgres, true).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn on_sqlite_without_batching() {
                super::$case(tests::Backend::Sqlite, false).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn on_postgres_without_batching() {
                super::$case(tests::Backend::Postgres, false).await;
            }
        }
    };
}

mod analytics;
mod apple;
mod audit_log;
mod auth;
mod authorization;
mod browser;
mod catalog;
mod cli;
mod concurrency;
mod consent;
mod crash_loop;
mod creators;
mod currencies;
mod dashboard;
mod demo_data;
mod earning;
mod equivalents;
mod fuzz;
mod google;
mod group_commit;
mod idempotency;
mod layout_migration;
mod model;
mod multi_instance;
mod ops;
mod orders;
mod pagination;
mod players_admin;
mod pricing;
mod privacy;
mod purchases;
mod rate_limits;
mod readme;
mod receipts;
mod reconciliation;
mod scale;
mod sdk;
mod set_path;
mod steam;
mod steam_purchases;
mod storefront;
mod stripe;
mod tabs;
mod tls;
mod velocity;
mod webhook_chaos;
