//! The application: shared state, the router with its middleware, and the [`Application`]
//! handle that binds, migrates, seeds and serves. Tests start it on port 0.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use store_api::ErrorCode;
use tokio::net::TcpListener;
use tower::ServiceBuilder;
use tower_http::LatencyUnit;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::{DefaultMakeSpan, DefaultOnResponse, TraceLayer};
use tracing::Level;

use crate::db::Db;
use crate::error::{ApiError, error_response};
use crate::ledger::idempotency::delete_expired_keys;
use crate::ops::install::{Seed, prepare};
use crate::payments::Payments;
use crate::payments::provider::{PaymentProvider, SandboxProvider};
use crate::payments::sandbox::{Sandbox, SandboxConfig};
use crate::players::auth::SessionSigner;
use crate::settings::{IDEMPOTENCY_RETENTION_MIN, SandboxMode, Settings};
use crate::store::catalog::{CatalogCache, CatalogRules};

/// State every handler shares; cheap to clone.
#[derive(Debug, Clone)]
pub struct AppState(Arc<Shared>);

#[derive(Debug)]
struct Shared {
    /// The database, the writer, the catalog, the providers and the settings: the handle the
    /// domains take, each the parts it needs.
    payments: Payments,
    public_url: String,
    signer: SessionSigner,
    player_limits: crate::players::rate_limit::RateLimiter,
    key_limits: crate::players::rate_limit::RateLimiter,
    metrics: PrometheusHandle,
    openapi_json: axum::body::Bytes,
    sandbox: Option<Sandbox>,
    steam: Option<crate::players::steam::Steam>,
    event_streams: crate::http::events::OpenStreams,
}

impl AppState {
    /// The database.
    #[must_use]
    pub fn db(&self) -> &Db {
        self.0.payments.db()
    }

    /// The settings the server started with.
    #[must_use]
    pub fn settings(&self) -> &Settings {
        self.0.payments.settings()
    }

    /// What the payment code takes: the writer, the catalog, the providers, the settings.
    #[must_use]
    pub fn payments(&self) -> &Payments {
        &self.0.payments
    }

    /// Signs and checks session tokens.
    #[must_use]
    pub fn signer(&self) -> &SessionSigner {
        &self.0.signer
    }

    /// The per-player request limits.
    #[must_use]
    pub fn player_limits(&self) -> &crate::players::rate_limit::RateLimiter {
        &self.0.player_limits
    }

    /// The per-key request limits.
    #[must_use]
    pub fn key_limits(&self) -> &crate::players::rate_limit::RateLimiter {
        &self.0.key_limits
    }

    /// The queue to the group-commit writer.
    #[must_use]
    pub fn batcher(&self) -> &crate::ledger::group_commit::Batcher {
        self.0.payments.writer()
    }

    /// The rendered live catalog's cache.
    pub fn catalog_cache(&self) -> &Arc<CatalogCache> {
        self.0.payments.catalog_cache()
    }

    /// The players' event streams open on this instance.
    #[must_use]
    pub fn event_streams(&self) -> &crate::http::events::OpenStreams {
        &self.0.event_streams
    }

    /// The Prometheus recorder's handle.
    #[must_use]
    pub fn metrics(&self) -> &PrometheusHandle {
        &self.0.metrics
    }

    /// The URL the server is reached at.
    #[must_use]
    pub fn public_url(&self) -> &str {
        &self.0.public_url
    }

    /// Steam's Web API, when Steam is configured.
    #[must_use]
    pub fn steam(&self) -> Option<&crate::players::steam::Steam> {
        self.0.steam.as_ref()
    }

    /// The payment provider named `name`.
    #[must_use]
    pub fn provider(&self, name: &str) -> Option<&dyn PaymentProvider> {
        self.0.payments.provider(name)
    }

    /// Every configured provider.
    pub fn providers(&self) -> impl Iterator<Item = &dyn PaymentProvider> {
        self.0.payments.providers()
    }

    /// The provider new orders are paid through.
    #[must_use]
    pub fn default_provider(&self) -> Option<&dyn PaymentProvider> {
        self.0.payments.default_provider()
    }

    /// The OpenAPI document, rendered once at start.
    #[must_use]
    pub fn openapi_json(&self) -> axum::body::Bytes {
        self.0.openapi_json.clone()
    }
}

/// The process-wide Prometheus recorder (metrics recorders are global; tests start many
/// applications in one process).
fn prometheus() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| match PrometheusBuilder::new().install_recorder() {
            Ok(handle) => handle,
            Err(error) => {
                tracing::warn!(%error, "another metrics recorder is installed; /metrics will be empty");
                PrometheusBuilder::new().build_recorder().handle()
            }
        })
        .clone()
}

/// The OpenAPI document of every route the router serves, the sandbox provider's included.
#[must_use]
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut openapi = crate::http::routes().into_openapi();
    openapi.merge(crate::payments::sandbox::routes().into_openapi());
    openapi
}

/// Builds the router: every route, the fallbacks, and the middleware, outermost first.
pub fn router(state: AppState) -> Router {
    let body_limit = state.settings().request_body_bytes_max;
    let request_timeout = state.settings().request_timeout;
    let (store, _) = crate::http::routes().split_for_parts();
    let mut router = store.with_state(state.clone());
    if let Some(sandbox) = &state.0.sandbox {
        let (sandbox_routes, _) = crate::payments::sandbox::routes().split_for_parts();
        router = router.merge(sandbox_routes.with_state(sandbox.clone()));
    }
    router.fallback(route_not_found).method_not_allowed_fallback(method_not_allowed).layer(
        ServiceBuilder::new()
            .layer(CatchPanicLayer::custom(|_| {
                ApiError::Internal(anyhow::anyhow!("a handler panicked")).into_response()
            }))
            .layer(middleware::from_fn(record_metrics))
            .layer(
                // A line per request at debug (`RUST_LOG=tower_http=debug`): at info it cost up
                // to 12% of the purchase rate; `/metrics` carries counts and latencies, and
                // failures are still logged at error.
                TraceLayer::new_for_http()
                    .make_span_with(DefaultMakeSpan::new().level(Level::DEBUG))
                    .on_response(
                        DefaultOnResponse::new().level(Level::DEBUG).latency_unit(LatencyUnit::Micros),
                    ),
            )
            .layer(middleware::from_fn(type_every_error))
            .layer(middleware::from_fn(refuse_nul_in_url))
            .layer(TimeoutLayer::with_status_code(StatusCode::SERVICE_UNAVAILABLE, request_timeout))
            .layer(DefaultBodyLimit::max(body_limit)),
    )
}

/// A NUL character (`%00`) in the path or query can be stored by no text column (PostgreSQL
/// refuses it): refused before any route sees it.
async fn refuse_nul_in_url(request: Request, next: Next) -> Response {
    let uri = request.uri();
    if uri.path().contains("%00") || uri.query().is_some_and(|query| query.contains("%00")) {
        return ApiError::invalid("url", "the URL may not contain the NUL character (%00)").into_response();
    }
    next.run(request).await
}

async fn route_not_found(request: Request) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        ErrorCode::RouteNotFound,
        format!("no route {}", request.uri().path()),
    )
}

async fn method_not_allowed(request: Request) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        ErrorCode::MethodNotAllowed,
        format!("{} is not allowed on {}", request.method(), request.uri().path()),
    )
}

/// Counts requests and their latency by route, method and status.
async fn record_metrics(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |path| path.as_str().to_owned());
    let method = request.method().to_string();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    let labels = [("route", route), ("method", method), ("status", status)];
    metrics::counter!("coinslot_http_requests_total", &labels).increment(1);
    metrics::histogram!("coinslot_http_request_duration_seconds", &labels).record(started.elapsed());
    response
}

/// The safety net behind "every failure is a typed JSON error": any error response that a
/// layer or extractor produced as plain text becomes `{"error":{…}}` with a code for its status.
/// (HTML pages, such as the sandbox checkout's, keep their own error pages.)
async fn type_every_error(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/json") || value.starts_with("text/html"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let code = match status {
        StatusCode::PAYLOAD_TOO_LARGE => ErrorCode::PayloadTooLarge,
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ErrorCode::UnsupportedMediaType,
        StatusCode::NOT_FOUND => ErrorCode::RouteNotFound,
        StatusCode::METHOD_NOT_ALLOWED => ErrorCode::MethodNotAllowed,
        StatusCode::SERVICE_UNAVAILABLE | StatusCode::REQUEST_TIMEOUT => ErrorCode::Unavailable,
        status if status.is_server_error() => ErrorCode::Internal,
        _ => ErrorCode::InvalidRequest,
    };
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 4096).await.unwrap_or_default();
    let message = match String::from_utf8_lossy(&text).trim() {
        "" => status.canonical_reason().unwrap_or("request failed").to_owned(),
        text => text.to_owned(),
    };
    let mut typed = error_response(status, code, message, serde_json::Map::new());
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            typed.headers_mut().insert(name.clone(), value.clone());
        }
    }
    typed
}

/// A built server: bound, migrated and seeded, not yet serving.
#[derive(Debug)]
pub struct Application {
    listener: TcpListener,
    /// Set when serving HTTPS.
    tls: Option<Arc<rustls::ServerConfig>>,
    state: AppState,
    first_operator_key: Option<String>,
}

impl Application {
    /// Connects to the database, migrates it, seeds it on first start, and binds the listener.
    ///
    /// # Errors
    /// Fails when the database cannot be reached or migrated, the seed catalog is invalid, or
    /// the address cannot be bound.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        settings.check_test_mode()?;
        if settings.in_test_mode() {
            tracing::warn!("{}", crate::settings::TEST_MODE_NOTICE);
        }
        let db =
            Db::connect(&settings.database_url, settings.db_connections_max, settings.db_timeout).await?;
        db.migrate().await?;
        crate::players::auth::hash_stored_device_ids(&db).await?;
        let installation =
            prepare(&db, &settings.assets_dir, Seed::DefaultCatalog, &CatalogRules::from_settings(&settings))
                .await?;
        let tls = match &settings.tls {
            Some(files) => Some(crate::ops::tls::server_config(&files.cert, &files.key)?),
            None => None,
        };
        let listener = TcpListener::bind(settings.listen).await?;
        let bound = listener.local_addr()?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        let public_url = settings.public_url.clone().unwrap_or_else(|| format!("{scheme}://{bound}"));
        let openapi_json = openapi().to_json()?.into();
        let mut providers: Vec<Arc<dyn PaymentProvider>> = Vec::new();
        // The first provider is where new orders are paid: Stripe when it is configured.
        if let Some(stripe) = &settings.stripe {
            providers.push(Arc::new(crate::payments::stripe::StripeProvider::new(
                stripe.clone(),
                &public_url,
                settings.webhook_tolerance,
            )));
        }
        let sandbox = match &settings.sandbox {
            SandboxMode::Mounted => {
                let sandbox_url = format!("{public_url}/sandbox");
                providers.push(Arc::new(SandboxProvider::new(
                    sandbox_url.clone(),
                    installation.sandbox_api_key.clone(),
                    installation.sandbox_webhook_secret.clone(),
                    settings.webhook_tolerance,
                )));
                Some(Sandbox::new(SandboxConfig {
                    db: db.clone(),
                    api_key: installation.sandbox_api_key,
                    webhook_secret: installation.sandbox_webhook_secret,
                    webhook_url: format!("{public_url}/v1/webhooks/sandbox"),
                    public_url: sandbox_url,
                    fees: settings.sandbox_fees.clone(),
                    dispute_delay: settings.sandbox_dispute_delay,
                    delivery_attempts_max: crate::payments::sandbox::DELIVERY_ATTEMPTS_MAX,
                }))
            }
            SandboxMode::External { url, api_key, webhook_secret } => {
                providers.push(Arc::new(SandboxProvider::new(
                    url.trim_end_matches('/').to_owned(),
                    api_key.clone(),
                    webhook_secret.clone(),
                    settings.webhook_tolerance,
                )));
                None
            }
            SandboxMode::Off => None,
        };
        // Steam pays only orders that name it (players logged in with Steam), so it is never
        // where orders go by default, wherever it stands.
        if let Some(steam) = &settings.steam {
            providers.push(Arc::new(crate::payments::steam::SteamProvider::new(steam.clone())));
        }
        if let Some(apple) = &settings.apple {
            providers.push(Arc::new(crate::payments::platform::apple::AppStoreProvider::new(apple.clone())));
        }
        if let Some(google_play) = &settings.google_play {
            providers.push(Arc::new(crate::payments::platform::google::GooglePlayProvider::new(
                google_play.clone(),
            )));
        }
        let player_limits =
            crate::players::rate_limit::RateLimiter::new(settings.player_rate_limit, "player");
        let key_limits = crate::players::rate_limit::RateLimiter::new(settings.key_rate_limit, "API key");
        let writer = crate::ledger::group_commit::Batcher::new(
            db,
            crate::ledger::group_commit::WriterConfig {
                enabled: settings.group_commit,
                size_max: settings.batch_size_max,
                wait: settings.batch_wait,
                writers: settings.writers,
                instance: public_url.clone(),
            },
        );
        let steam = settings.steam.clone().map(crate::players::steam::Steam::new);
        let payments =
            Payments::new(writer, Arc::new(CatalogCache::default()), providers, Arc::new(settings));
        let state = AppState(Arc::new(Shared {
            payments,
            public_url,
            signer: installation.signer,
            player_limits,
            key_limits,
            metrics: prometheus(),
            openapi_json,
            sandbox,
            steam,
            event_streams: crate::http::events::OpenStreams::default(),
        }));
        Ok(Self { listener, tls, state, first_operator_key: installation.first_operator_key })
    }

    /// The bound port (useful with port 0).
    #[must_use]
    pub fn port(&self) -> u16 {
        self.local_addr().port()
    }

    /// The bound address.
    #[must_use]
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().unwrap_or(self.state.settings().listen)
    }

    /// The URL the server is reached at.
    #[must_use]
    pub fn public_url(&self) -> String {
        self.state.public_url().to_owned()
    }

    /// The operator key created on this start because the database had none (shown once).
    #[must_use]
    pub fn first_operator_key(&self) -> Option<&str> {
        self.first_operator_key.as_deref()
    }

    /// Serves until `shutdown` resolves, then stops taking connections, lets requests in
    /// flight finish for at most the shutdown timeout, and closes the database.
    ///
    /// # Errors
    /// Fails when the server cannot accept connections.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let Self { listener, tls, state, .. } = self;
        let limit: Duration = state.settings().shutdown_timeout;
        let db = state.db().clone();
        let mut workers = vec![
            tokio::spawn(clean_idempotency_keys(
                db.clone(),
                state.settings().idempotency_retention.max(IDEMPOTENCY_RETENTION_MIN),
                state.settings().idempotency_cleanup_interval,
            )),
            tokio::spawn(run_order_workers(state.clone())),
            tokio::spawn(run_checkpoints(db.clone())),
        ];
        if state.settings().group_commit
            && let Some(queue) = state.batcher().take_receiver()
        {
            workers
                .push(tokio::spawn(crate::ledger::group_commit::run_writer(state.batcher().clone(), queue)));
        }
        if let Some(sandbox) = &state.0.sandbox {
            workers.push(tokio::spawn(crate::payments::sandbox::run_deliveries(
                sandbox.clone(),
                state.settings().worker_tick,
            )));
        }
        let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
        let stopped = async move {
            let _ = stop_rx.wait_for(|stop| *stop).await;
        };
        let service = router(state).into_make_service();
        let mut server: futures_util::future::BoxFuture<'static, std::io::Result<()>> = match tls {
            None => Box::pin(axum::serve(listener, service).with_graceful_shutdown(stopped).into_future()),
            Some(config) => Box::pin(
                axum::serve(crate::ops::tls::TlsListener::new(listener, config)?, service)
                    .with_graceful_shutdown(stopped)
                    .into_future(),
            ),
        };
        tokio::select! {
            result = &mut server => result?,
            () = shutdown => {
                tracing::info!(limit_s = limit.as_secs(), "shutting down; finishing requests in flight");
                let _ = stop_tx.send(true);
                match tokio::time::timeout(limit, &mut server).await {
                    Ok(result) => result?,
                    Err(_) => tracing::warn!("requests still running after the shutdown limit were dropped"),
                }
            }
        }
        for worker in workers {
            worker.abort();
        }
        db.close().await;
        Ok(())
    }
}

/// Expires unpaid orders, sends pending refunds to their providers and acknowledges redeemed
/// platform purchases, every worker tick.
async fn run_order_workers(state: AppState) {
    let mut ticks = tokio::time::interval(state.settings().worker_tick);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut reconciled_at: Option<tokio::time::Instant> = None;
    loop {
        ticks.tick().await;
        if reconciled_at.is_none_or(|at| at.elapsed() >= state.settings().reconcile_interval) {
            reconciled_at = Some(tokio::time::Instant::now());
            if let Err(error) = crate::payments::reconcile::reconcile_events(state.payments()).await {
                tracing::warn!(%error, "could not reconcile with the providers");
            }
        }
        if let Err(error) = crate::payments::orders::expire_due_orders(state.payments()).await {
            tracing::warn!(%error, "could not expire orders");
        }
        if let Err(error) = crate::payments::orders::submit_pending_refunds(state.payments()).await {
            tracing::warn!(%error, "could not submit refunds");
        }
        if let Err(error) = crate::payments::platform::acknowledge_due(state.payments(), None).await {
            tracing::warn!(%error, "could not acknowledge platform purchases");
        }
    }
}

/// Serves only the sandbox payment provider (`store-server sandbox`), with its delivery worker,
/// until `shutdown` resolves.
///
/// # Errors
/// Fails when the address cannot be bound or the server fails.
pub async fn run_sandbox(
    config: SandboxConfig,
    listen: SocketAddr,
    tick: Duration,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let sandbox = Sandbox::new(config);
    let listener = TcpListener::bind(listen).await?;
    let (routes, _) = crate::payments::sandbox::routes().split_for_parts();
    let router = routes.with_state(sandbox.clone()).fallback(route_not_found).layer(
        ServiceBuilder::new()
            .layer(middleware::from_fn(type_every_error))
            .layer(DefaultBodyLimit::max(store_api::limits::REQUEST_BODY_BYTES_MAX)),
    );
    let deliveries = tokio::spawn(crate::payments::sandbox::run_deliveries(sandbox, tick));
    let served = axum::serve(listener, router).with_graceful_shutdown(shutdown).await;
    deliveries.abort();
    Ok(served?)
}

/// Deletes expired idempotency keys every `interval`, for as long as the server runs.
async fn clean_idempotency_keys(db: Db, retention: Duration, interval: Duration) {
    let mut ticks = tokio::time::interval(interval);
    loop {
        ticks.tick().await;
        match delete_expired_keys(&db, retention).await {
            Ok(0) => {}
            Ok(deleted) => tracing::info!(deleted, "deleted expired idempotency keys"),
            Err(error) => tracing::warn!(%error, "could not delete expired idempotency keys"),
        }
        match crate::players::auth::delete_expired_sessions(&db).await {
            Ok(0) => {}
            Ok(deleted) => tracing::info!(deleted, "deleted expired sessions"),
            Err(error) => tracing::warn!(%error, "could not delete expired sessions"),
        }
    }
}

/// Checkpoints SQLite's write-ahead log in the background until aborted (nothing on PostgreSQL).
async fn run_checkpoints(db: crate::db::Db) {
    if db.backend() != crate::db::Backend::Sqlite {
        return;
    }
    let mut ticks = tokio::time::interval(crate::db::CHECKPOINT_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        if let Err(error) = db.checkpoint().await {
            tracing::warn!(%error, "a WAL checkpoint failed; the next one will retry");
        }
    }
}
