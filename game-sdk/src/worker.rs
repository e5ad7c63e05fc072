//! The async half of the plugin: a thread that owns a tokio runtime and the [`StoreClient`],
//! takes [`Command`]s from the ECS over a bounded channel and answers with [`Reply`]s over
//! another. Nothing here touches the ECS, and nothing in the ECS waits for it.
//!
//! It also keeps the session alive: logs in (with backoff while the server is away), resumes
//! requests left on disk by an earlier run, loads the catalog, wallet, inventory, orders and
//! tabs, and follows `/v1/events`, reconnecting on its own.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use store_api::auth::{Country, DeviceId, DeviceLoginRequest, Session, SteamLoginRequest};
use store_api::catalog::{Catalog, OfferId};
use store_api::ledger::{ConsumeResult, Inventory, Wallet};
use store_api::orders::{Order, OrderStatus, TabList};
use store_api::sandbox::PayResult;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::RequestId;
use crate::client::{
    CatalogFetch, IdempotencyKey, RetryPolicy, StoreClient, StoreError, StoreResult, VerifiedPurchase,
    VerifiedReward,
};
use crate::events::StoreEvent;
use crate::storage::{LocalStore, PendingRecord, PendingRequest};

/// How long the worker waits for its tasks when the plugin is dropped.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(1);
/// The first wait before reconnecting; it doubles up to the configured maximum.
const RECONNECT_BACKOFF_INITIAL: Duration = Duration::from_millis(100);

/// What the ECS asks of the worker.
#[derive(Debug)]
pub(crate) enum Command {
    Login(RequestId),
    Refresh(RequestId),
    Send {
        request: RequestId,
        pending: PendingRequest,
    },
    PaySandbox {
        request: RequestId,
        order_id: Uuid,
        card_number: String,
    },
    StoreViewed {
        request: RequestId,
        offer_ids: Vec<store_api::catalog::OfferId>,
    },
    SteamAuthorization {
        request: RequestId,
        steam_order_id: u64,
        authorized: bool,
    },
    /// The ECS has reported this request's outcome: its local record can go.
    Forget(IdempotencyKey),
}

/// A connection state the worker has reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Link {
    Offline,
    Connecting,
    Ready,
}

/// What the worker tells the ECS. A reply with `request: Some(_)` is the one final answer to
/// that request; replies with `None` are news.
#[derive(Debug)]
pub(crate) struct Reply {
    pub request: Option<RequestId>,
    pub body: ReplyBody,
}

#[derive(Debug)]
pub(crate) enum ReplyBody {
    Link(Link),
    LoggedIn(Session),
    Refreshed,
    Catalog(Box<Catalog>),
    Wallet(Wallet),
    Inventory(Inventory),
    /// The orders not yet finished, replacing what the plugin held.
    OpenOrders(Vec<Order>),
    /// A fulfilled order fetched again for its receipt, which verified.
    VerifiedOrder(Box<Order>),
    Tabs(TabList),
    Event(StoreEvent),
    Purchase {
        key: IdempotencyKey,
        offer_id: OfferId,
        resumed: bool,
        outcome: StoreResult<Box<VerifiedPurchase>>,
    },
    Order {
        key: IdempotencyKey,
        outcome: StoreResult<Box<Order>>,
    },
    Reward {
        key: IdempotencyKey,
        outcome: StoreResult<Box<VerifiedReward>>,
    },
    Consume {
        key: IdempotencyKey,
        outcome: StoreResult<ConsumeResult>,
    },
    Paid {
        order_id: Uuid,
        outcome: StoreResult<PayResult>,
    },
    /// The server's answer to a Steam overlay's authorization.
    SteamAuthorized(StoreResult<Box<Order>>),
    /// Store views were recorded.
    Viewed,
    /// A request could not be sent at all (its record could not be written); nothing left.
    NotSent(StoreError),
    /// A failure not tied to a request (the server went away) or the end of login/refresh.
    Error(StoreError),
}

impl ReplyBody {
    /// The idempotency key of a recorded request's outcome, with whether the request is still
    /// open (no answer came, so it must be sent again rather than forgotten).
    pub(crate) fn recorded_key(&self) -> Option<(&IdempotencyKey, bool)> {
        fn open<T>(outcome: &StoreResult<T>) -> bool {
            outcome.as_ref().err().is_some_and(StoreError::leaves_request_open)
        }
        match self {
            Self::Purchase { key, outcome, .. } => Some((key, open(outcome))),
            Self::Order { key, outcome, .. } => Some((key, open(outcome))),
            Self::Reward { key, outcome, .. } => Some((key, open(outcome))),
            Self::Consume { key, outcome, .. } => Some((key, open(outcome))),
            _ => None,
        }
    }

    fn leaves_request_open(&self) -> bool {
        self.recorded_key().is_some_and(|(_, open)| open)
    }
}

/// Who the player is: a device id, or a Steam account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceIdSource {
    /// Made on first start and kept in the persistence directory.
    Persisted,
    /// Given by the game (its own account or platform id).
    Fixed(String),
    /// The Steam account the Steam client is logged in with, proved by a session ticket for the
    /// Web API (`POST /v1/auth/steam`); a new ticket at every login. Needed for Steam purchases.
    /// With the `steam` feature, [`crate::steam::ticket_source`] makes one from a
    /// `steamworks::Client`.
    Steam(SteamTickets),
}

/// The future a [`SteamTickets`] source returns: a ticket in hex, or why there is none.
pub type TicketFuture = std::pin::Pin<Box<dyn std::future::Future<Output = Result<String, String>> + Send>>;

/// Where Steam session tickets come from: a function the worker calls at every login, whose
/// future yields the ticket's bytes in hex (`ISteamUser::GetAuthTicketForWebApi` with the
/// identity `coinslot`, delivered by `GetTicketForWebApiResponse_t`).
#[derive(Clone)]
pub struct SteamTickets(Arc<dyn Fn() -> TicketFuture + Send + Sync>);

impl SteamTickets {
    /// A source calling `ticket` at every login.
    pub fn new(ticket: impl Fn() -> TicketFuture + Send + Sync + 'static) -> Self {
        Self(Arc::new(ticket))
    }
}

impl std::fmt::Debug for SteamTickets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SteamTickets")
    }
}

impl PartialEq for SteamTickets {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for SteamTickets {}

/// How many times the worker reports one Steam authorization while Steam has not recorded it
/// (or failed to finalize), waiting 500 ms, then twice as long each time. The server asks Steam
/// again before the order expires, so a report that gives up loses nothing.
const STEAM_REPORT_ATTEMPTS: u32 = 5;

/// What the worker needs to run.
#[derive(Debug, Clone)]
pub(crate) struct WorkerConfig {
    pub base_url: String,
    pub device_id: DeviceIdSource,
    pub country: Option<String>,
    pub persistence_path: std::path::PathBuf,
    pub auto_login: bool,
    pub retry: RetryPolicy,
    pub reconnect_backoff_max: Duration,
}

/// The running worker: dropping it stops the I/O.
#[derive(Debug)]
pub(crate) struct Worker {
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Worker {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            // Happens when the app (or the resource) is dropped, never in a frame.
            let _ = thread.join();
        }
    }
}

/// Starts the worker thread.
///
/// # Errors
/// When the thread cannot be spawned.
pub(crate) fn spawn(
    config: WorkerConfig,
    commands: mpsc::Receiver<Command>,
    replies: mpsc::Sender<Reply>,
) -> std::io::Result<Worker> {
    let (shutdown_tx, shutdown_rx) = oneshot::channel();
    let thread = std::thread::Builder::new().name("coinslot-store".to_owned()).spawn(move || {
        let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(runtime) => runtime,
            Err(error) => {
                tracing::error!(%error, "the store's runtime could not start");
                return;
            }
        };
        runtime.block_on(run(config, commands, replies, shutdown_rx));
        runtime.shutdown_timeout(SHUTDOWN_WAIT);
    })?;
    Ok(Worker { shutdown: Some(shutdown_tx), thread: Some(thread) })
}

/// Shared by the worker's tasks.
#[derive(Debug, Clone)]
struct Shared {
    client: StoreClient,
    local: Result<LocalStore, StoreError>,
    replies: mpsc::Sender<Reply>,
    config: Arc<WorkerConfig>,
    /// Keys being sent right now, so a resume never sends one twice at once.
    in_flight: Arc<Mutex<HashSet<IdempotencyKey>>>,
}

async fn run(
    config: WorkerConfig,
    mut commands: mpsc::Receiver<Command>,
    replies: mpsc::Sender<Reply>,
    mut shutdown: oneshot::Receiver<()>,
) {
    let client = match StoreClient::with_retry(&config.base_url, config.retry) {
        Ok(client) => client,
        Err(error) => {
            let _ = replies.send(Reply { request: None, body: ReplyBody::Error(error) }).await;
            return;
        }
    };
    let local = LocalStore::open(&config.persistence_path);
    if let Err(error) = &local {
        tracing::error!(%error, "the store's local records cannot be kept; money-moving requests will be refused");
    }
    let shared = Shared {
        client,
        local,
        replies,
        config: Arc::new(config),
        in_flight: Arc::new(Mutex::new(HashSet::new())),
    };
    let supervisor = shared.config.auto_login.then(|| tokio::spawn(supervise(shared.clone(), None)));
    let mut supervisor = supervisor;
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            command = commands.recv() => match command {
                None => break,
                Some(Command::Login(request)) => {
                    if let Some(running) = supervisor.take() {
                        running.abort();
                    }
                    supervisor = Some(tokio::spawn(supervise(shared.clone(), Some(request))));
                }
                Some(command) => {
                    tokio::spawn(handle(shared.clone(), command));
                }
            },
        }
    }
    if let Some(running) = supervisor {
        running.abort();
    }
}

impl Shared {
    async fn reply(&self, request: Option<RequestId>, body: ReplyBody) {
        // The ECS drains replies every frame; waiting here is the back-pressure.
        let _ = self.replies.send(Reply { request, body }).await;
    }

    async fn link(&self, link: Link) {
        self.reply(None, ReplyBody::Link(link)).await;
    }

    /// Logs in as the configured device or Steam account.
    async fn log_in(&self) -> StoreResult<Session> {
        let country = match &self.config.country {
            Some(code) => Some(Country::parse(code).map_err(StoreError::Storage)?),
            None => None,
        };
        let device_id = match &self.config.device_id {
            DeviceIdSource::Fixed(id) => DeviceId::parse(id).map_err(StoreError::Storage)?,
            DeviceIdSource::Persisted => self.local.as_ref().map_err(Clone::clone)?.device_id()?,
            DeviceIdSource::Steam(tickets) => {
                let ticket = (tickets.0)().await.map_err(|why| {
                    StoreError::Transport(format!("the Steam client gave no ticket: {why}"))
                })?;
                return self.client.login_steam(&SteamLoginRequest { ticket, country }).await;
            }
        };
        self.client.login(&DeviceLoginRequest { device_id, country }).await
    }
}

/// Logs in, resumes what an earlier run left, loads the state, then follows the event stream;
/// when the server goes away, reports `Offline` (and one `StoreError` per outage) and starts
/// again after a backoff that doubles up to `reconnect_backoff_max`.
async fn supervise(shared: Shared, mut login_request: Option<RequestId>) {
    let mut backoff = RECONNECT_BACKOFF_INITIAL;
    let mut last_event_id: Option<String> = None;
    let mut outage_reported = false;
    loop {
        shared.link(Link::Connecting).await;
        let mut was_ready = false;
        let error =
            match connect_and_follow(&shared, &mut login_request, &mut last_event_id, &mut was_ready).await {
                Ok(()) => StoreError::Transport("the event stream ended".to_owned()),
                Err(error) => error,
            };
        shared.link(Link::Offline).await;
        if !error.is_worth_retrying() {
            // An answer, not an outage (a device id the server refuses): report it and stop.
            shared.reply(login_request.take(), ReplyBody::Error(error)).await;
            return;
        }
        if was_ready {
            backoff = RECONNECT_BACKOFF_INITIAL;
            outage_reported = false;
        }
        if !outage_reported || login_request.is_some() {
            shared.reply(login_request.take(), ReplyBody::Error(error)).await;
            outage_reported = true;
        }
        tracing::debug!(?backoff, "reconnecting to the store");
        tokio::time::sleep(backoff).await;
        backoff = backoff.saturating_mul(2).min(shared.config.reconnect_backoff_max);
    }
}

async fn connect_and_follow(
    shared: &Shared,
    login_request: &mut Option<RequestId>,
    last_event_id: &mut Option<String>,
    was_ready: &mut bool,
) -> StoreResult<()> {
    let session = shared.log_in().await?;
    shared.reply(login_request.take(), ReplyBody::LoggedIn(session.clone())).await;
    let mut stream = shared.client.events(last_event_id.as_deref()).await?;
    // The stream is open before the state is read, so no change falls between the two.
    refresh(shared).await?;
    // What an earlier run, or a lost connection, left in flight goes out again now.
    resume_pending(shared, session.player_id);
    shared.link(Link::Ready).await;
    *was_ready = true;
    while let Some(event) = stream.next().await? {
        if event.id.is_some() {
            last_event_id.clone_from(&event.id);
        }
        follow_up(shared, &event.event);
        shared.reply(None, ReplyBody::Event(event.event)).await;
    }
    Ok(())
}

/// An event that needs more than itself: a fulfilled order's receipt is fetched and verified,
/// and a tab's orders refresh the tab.
fn follow_up(shared: &Shared, event: &StoreEvent) {
    let StoreEvent::OrderUpdated(order) = event else { return };
    let shared = shared.clone();
    let order_id = order.id;
    let fulfilled = order.status == OrderStatus::Fulfilled;
    let tab = order.tab_id.is_some();
    tokio::spawn(async move {
        if fulfilled {
            match shared.client.order(order_id).await {
                Ok(order) => shared.reply(None, ReplyBody::VerifiedOrder(Box::new(order))).await,
                Err(error) => shared.reply(None, ReplyBody::Error(error)).await,
            }
        }
        if tab && let Ok(tabs) = shared.client.tabs().await {
            shared.reply(None, ReplyBody::Tabs(tabs)).await;
        }
    });
}

/// Loads everything the plugin's resources hold.
async fn refresh(shared: &Shared) -> StoreResult<()> {
    if let CatalogFetch::Changed { catalog, .. } = shared.client.catalog(None).await? {
        shared.reply(None, ReplyBody::Catalog(catalog)).await;
    }
    let wallet = shared.client.wallet().await?;
    shared.reply(None, ReplyBody::Wallet(wallet)).await;
    let inventory = shared.client.inventory().await?;
    shared.reply(None, ReplyBody::Inventory(inventory)).await;
    let orders = shared.client.orders().await?;
    let open = orders.orders.into_iter().filter(|order| order.status.is_open()).collect();
    shared.reply(None, ReplyBody::OpenOrders(open)).await;
    let tabs = shared.client.tabs().await?;
    shared.reply(None, ReplyBody::Tabs(tabs)).await;
    Ok(())
}

/// Sends again, with their own keys, the requests an earlier run (or a lost connection) left.
fn resume_pending(shared: &Shared, player_id: Uuid) {
    let Ok(local) = &shared.local else { return };
    let records = match local.pending() {
        Ok(records) => records,
        Err(error) => {
            tracing::error!(%error, "could not read the requests left in flight");
            return;
        }
    };
    let now_s = crate::storage::unix_now_s();
    for record in records.into_iter().filter(|record| record.player_id == player_id) {
        if record.is_too_old(now_s) {
            // The server may have forgotten its key: sending it again could do the work twice.
            // It is dropped and reported; the history shows whether it happened.
            let error =
                StoreError::Abandoned { age_s: now_s.saturating_sub(record.created_at_s.unwrap_or(now_s)) };
            tracing::warn!(key = record.key.as_str(), %error, "a request left in flight too long was dropped");
            if let Err(error) = local.remove(&record.key) {
                tracing::error!(%error, "could not drop a request left in flight too long");
                continue;
            }
            let shared = shared.clone();
            tokio::spawn(async move { shared.reply(None, ReplyBody::Error(error)).await });
            continue;
        }
        tokio::spawn(send_recorded(shared.clone(), None, record, true));
    }
}

async fn handle(shared: Shared, command: Command) {
    match command {
        Command::Login(_) => {}
        Command::Refresh(request) => {
            let body = match refresh(&shared).await {
                Ok(()) => ReplyBody::Refreshed,
                Err(error) => ReplyBody::Error(error),
            };
            shared.reply(Some(request), body).await;
        }
        Command::Send { request, pending } => {
            let Some(session) = shared.client.session() else {
                shared.reply(Some(request), ReplyBody::NotSent(StoreError::NotLoggedIn)).await;
                return;
            };
            let record = PendingRecord::new(pending, session.player_id);
            let saved = shared.local.as_ref().map_err(Clone::clone).and_then(|local| local.save(&record));
            if let Err(error) = saved {
                shared.reply(Some(request), ReplyBody::NotSent(error)).await;
                return;
            }
            send_recorded(shared, Some(request), record, false).await;
        }
        Command::PaySandbox { request, order_id, card_number } => {
            let outcome = match shared.client.order(order_id).await {
                Ok(order) => shared.client.pay_sandbox(&order.checkout_url, &card_number).await,
                Err(error) => Err(error),
            };
            shared.reply(Some(request), ReplyBody::Paid { order_id, outcome }).await;
        }
        Command::StoreViewed { request, offer_ids } => {
            let outcome =
                shared.client.store_viewed(&store_api::analytics::StoreViewedRequest { offer_ids }).await;
            let body = match outcome {
                Ok(_) => ReplyBody::Viewed,
                Err(error) => ReplyBody::Error(error),
            };
            shared.reply(Some(request), body).await;
        }
        Command::SteamAuthorization { request, steam_order_id, authorized } => {
            let outcome = report_steam_authorization(&shared, steam_order_id, authorized).await;
            shared.reply(Some(request), ReplyBody::SteamAuthorized(outcome.map(Box::new))).await;
        }
        Command::Forget(key) => {
            shared.in_flight.lock().unwrap_or_else(PoisonError::into_inner).remove(&key);
            if let Ok(local) = &shared.local
                && let Err(error) = local.remove(&key)
            {
                tracing::warn!(%error, "could not forget a finished request");
            }
        }
    }
}

/// Finds the Steam order the overlay named and reports its authorization, again (a few times,
/// backing off) while Steam has not recorded it or could not finalize.
async fn report_steam_authorization(
    shared: &Shared,
    steam_order_id: u64,
    authorized: bool,
) -> StoreResult<Order> {
    let named = steam_order_id.to_string();
    let order = shared
        .client
        .orders()
        .await?
        .orders
        .into_iter()
        .find(|order| order.provider_order_id.as_deref() == Some(named.as_str()))
        .ok_or_else(|| StoreError::Api {
            status: 404,
            code: store_api::ErrorCode::NotFound,
            message: format!("no Steam order {named} of this player"),
            details: serde_json::Map::new(),
        })?;
    let mut wait = Duration::from_millis(500);
    let mut attempt = 1;
    loop {
        match shared.client.report_steam_authorization(order.id, authorized).await {
            Err(StoreError::Api {
                code: store_api::ErrorCode::OrderStateConflict | store_api::ErrorCode::ProviderUnavailable,
                ..
            }) if attempt < STEAM_REPORT_ATTEMPTS => {
                tokio::time::sleep(wait).await;
                wait *= 2;
                attempt += 1;
            }
            outcome => return outcome,
        }
    }
}

/// Sends a recorded request and replies with its outcome. The record stays on disk (and its
/// key in `in_flight`, so no resume sends it meanwhile) until the ECS has the outcome and sends
/// `Forget`; after a failure that leaves the request open (no answer), it is free to be resumed.
async fn send_recorded(shared: Shared, request: Option<RequestId>, record: PendingRecord, resumed: bool) {
    {
        let mut in_flight = shared.in_flight.lock().unwrap_or_else(PoisonError::into_inner);
        if !in_flight.insert(record.key.clone()) {
            return;
        }
    }
    let client = &shared.client;
    let key = record.key.clone();
    let body = match &record.request {
        PendingRequest::Purchase(purchase) => {
            let outcome = client.purchase(purchase, &key).await.map(Box::new);
            if let Ok(verified) = &outcome
                && verified.result.purchase.charged_to_tab.is_some()
                && let Ok(tabs) = client.tabs().await
            {
                shared.reply(None, ReplyBody::Tabs(tabs)).await;
            }
            ReplyBody::Purchase { key: key.clone(), offer_id: purchase.offer_id, resumed, outcome }
        }
        PendingRequest::Order(order) => {
            let outcome = client.create_order(order, &key).await.map(Box::new);
            ReplyBody::Order { key: key.clone(), outcome }
        }
        PendingRequest::SettleTab(settle) => {
            let outcome = client.settle_tab(settle, &key).await.map(Box::new);
            if outcome.is_ok()
                && let Ok(tabs) = client.tabs().await
            {
                shared.reply(None, ReplyBody::Tabs(tabs)).await;
            }
            ReplyBody::Order { key: key.clone(), outcome }
        }
        PendingRequest::Reward { rule, request: claim } => {
            let outcome = client.claim_reward(rule, claim, &key).await.map(Box::new);
            ReplyBody::Reward { key: key.clone(), outcome }
        }
        PendingRequest::RedeemPlatform(proof) => {
            let outcome = client.redeem_platform(proof).await.map(Box::new);
            ReplyBody::Order { key: key.clone(), outcome }
        }
        PendingRequest::Consume { sku, request: consume } => {
            let outcome = client.consume(sku, consume, &key).await;
            ReplyBody::Consume { key: key.clone(), outcome }
        }
    };
    if body.leaves_request_open() {
        shared.in_flight.lock().unwrap_or_else(PoisonError::into_inner).remove(&key);
    }
    shared.reply(request, body).await;
}
