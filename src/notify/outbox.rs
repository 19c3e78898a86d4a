//! The durable outbox: every notification is written to the store (one row per
//! integration) before anything is sent; one worker task per integration
//! delivers its queue in order with exponential backoff and jitter, and
//! dead-letters a row that is older than the maximum age or was refused for
//! good. A restart resumes every pending row; a delivered row is never sent
//! again. A slow or down receiver only holds up its own queue.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use rand::Rng;
use sha2::{Digest, Sha256};
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

use crate::clock::{Clock, TimestampMs};
use crate::config::receivers::{
    EmailConfig, IntegrationId, IntegrationKind, ReceiverConfig, ReceiverSecrets, ReportConfig,
    WebhookConfig, REPORT_RECEIVER_PREFIX,
};
use crate::config::LoadedConfig;
use crate::dispatch::notification::BoxFuture;
use crate::dispatch::{Notification, NotificationSink};
use crate::notify::evidence::EvidenceSource;
use crate::notify::metrics::NotifyMetrics;
use crate::notify::payload::{Payload, RenderedReport, StoredNotification, WebhookMessage};
use crate::notify::{email, webhook, DeliveryError};
use crate::store::outbox::{NewOutboxRow, OutboxRow};
use crate::store::{Store, StoreError};

/// Retry policy of the outbox.
#[derive(Clone, Debug)]
pub struct OutboxOptions {
    /// Delay before the first retry; doubles with every failure.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// A notification not delivered this long after its creation is dead-lettered.
    pub max_age: Duration,
    /// Delivered and dead-lettered rows are deleted after this long.
    pub keep_finished: Duration,
    /// How long shutdown waits for deliveries in flight.
    pub shutdown_grace: Duration,
}

impl Default for OutboxOptions {
    fn default() -> Self {
        Self {
            initial_backoff: Duration::from_secs(2),
            max_backoff: Duration::from_secs(300),
            max_age: Duration::from_secs(3 * 3600),
            keep_finished: Duration::from_secs(7 * 86_400),
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

/// What the notifier needs from the config: receivers, reports, their secrets
/// and the external URL (for links and the webhook payload).
#[derive(Clone, Debug, Default)]
pub struct NotifierConfig {
    pub receivers: Vec<ReceiverConfig>,
    pub reports: Vec<ReportConfig>,
    pub secrets: ReceiverSecrets,
    pub external_url: String,
}

impl NotifierConfig {
    pub fn from_loaded(c: &LoadedConfig) -> Self {
        let external_url = c
            .config
            .external_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", c.config.listen));
        Self {
            receivers: c.config.receivers.clone(),
            reports: c.config.reports.clone(),
            secrets: c.receiver_secrets.clone(),
            external_url,
        }
    }

    pub fn receiver(&self, name: &str) -> Option<&ReceiverConfig> {
        self.receivers.iter().find(|r| r.name == name)
    }

    pub fn email(&self, id: &IntegrationId) -> Option<&EmailConfig> {
        if let Some(report) = id.receiver.strip_prefix(REPORT_RECEIVER_PREFIX) {
            return self
                .reports
                .iter()
                .find(|r| r.name == report)?
                .email_configs
                .get(id.index);
        }
        self.receiver(&id.receiver)?.email_configs.get(id.index)
    }

    pub fn webhook(&self, id: &IntegrationId) -> Option<&WebhookConfig> {
        self.receiver(&id.receiver)?.webhook_configs.get(id.index)
    }
}

/// One delivery, as handed to a [`Transport`].
pub struct DeliveryJob {
    pub integration: IntegrationId,
    /// The notification's deterministic id (the same on every attempt).
    pub delivery_id: String,
    pub payload: Payload,
    pub config: Arc<NotifierConfig>,
    pub now_ms: TimestampMs,
}

/// Sends one outbox row. [`SmtpAndHttp`] is the real one; tests may count or fail.
pub trait Transport: Send + Sync {
    fn deliver<'a>(&'a self, job: &'a DeliveryJob) -> BoxFuture<'a, Result<(), DeliveryError>>;
}

/// Email over SMTP (lettre) and webhooks over HTTP (reqwest).
pub struct SmtpAndHttp {
    http: reqwest::Client,
    evidence: Arc<dyn EvidenceSource>,
}

impl SmtpAndHttp {
    pub fn new(evidence: Arc<dyn EvidenceSource>) -> Self {
        Self {
            http: webhook::client(),
            evidence,
        }
    }

    async fn deliver_inner(&self, job: &DeliveryJob) -> Result<(), DeliveryError> {
        let id = &job.integration;
        let gone = || DeliveryError::permanent(format!("{id} is no longer in the config"));
        match id.kind {
            IntegrationKind::Email => {
                let cfg = job.config.email(id).ok_or_else(gone)?;
                let mail = match &job.payload {
                    Payload::Alerts(n) => {
                        email::render(cfg, n, self.evidence.as_ref(), &job.config.external_url)
                    }
                    Payload::Report(r) => email::RenderedEmail {
                        subject: r.subject.clone(),
                        text: r.text.clone(),
                        html: r.html.clone(),
                        headers: Vec::new(),
                    },
                };
                let delivery_id = format!("{}.{}", job.delivery_id, id.index);
                let message = email::build_message(cfg, &mail, job.now_ms, &delivery_id)?;
                let transport = email::transport(
                    cfg,
                    job.config.secrets.smtp_passwords.get(id),
                    job.config.secrets.tls_files.get(id),
                )?;
                email::send(&transport, message).await
            }
            IntegrationKind::Webhook => {
                let cfg = job.config.webhook(id).ok_or_else(gone)?;
                let Payload::Alerts(n) = &job.payload else {
                    return Err(DeliveryError::permanent(
                        "reports go by email only".to_string(),
                    ));
                };
                let msg =
                    WebhookMessage::build(n, &job.config.external_url, cfg.max_alerts.unwrap_or(0));
                let body = serde_json::to_vec(&msg).map_err(|e| {
                    DeliveryError::permanent(format!("cannot encode the webhook payload: {e}"))
                })?;
                let envelope = webhook::Envelope {
                    delivery_id: &job.delivery_id,
                    now_ms: job.now_ms,
                    hmac_secret: job.config.secrets.hmac_secrets.get(id),
                };
                webhook::post(&self.http, cfg, envelope, body).await
            }
        }
    }
}

impl Transport for SmtpAndHttp {
    fn deliver<'a>(&'a self, job: &'a DeliveryJob) -> BoxFuture<'a, Result<(), DeliveryError>> {
        Box::pin(self.deliver_inner(job))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("unknown receiver {0:?} (not in `receivers:`)")]
    UnknownReceiver(String),
    #[error("unknown report {0:?} (not in `reports:`)")]
    UnknownReport(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot encode notification: {0}")]
    Encode(#[from] serde_json::Error),
}

struct Inner {
    store: Store,
    clock: Clock,
    metrics: NotifyMetrics,
    transport: Arc<dyn Transport>,
    options: OutboxOptions,
    config: RwLock<Arc<NotifierConfig>>,
    workers: Mutex<HashMap<IntegrationId, Arc<Notify>>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    shutdown: watch::Sender<bool>,
}

/// The outbox and its delivery workers. Cheap to clone.
#[derive(Clone)]
pub struct Outbox {
    inner: Arc<Inner>,
}

impl Outbox {
    /// Starts the outbox with the real transports and resumes every pending
    /// row in the store. Must run inside a tokio runtime.
    pub async fn start(
        store: Store,
        clock: Clock,
        registry: &prometheus::Registry,
        config: NotifierConfig,
        evidence: Arc<dyn EvidenceSource>,
        options: OutboxOptions,
    ) -> Result<Outbox, OutboxStartError> {
        let metrics = NotifyMetrics::new(registry)?;
        let transport = Arc::new(SmtpAndHttp::new(evidence));
        Ok(Self::start_with(store, clock, metrics, config, transport, options).await?)
    }

    /// Like [`Outbox::start`] with a given transport and metrics (tests).
    pub async fn start_with(
        store: Store,
        clock: Clock,
        metrics: NotifyMetrics,
        config: NotifierConfig,
        transport: Arc<dyn Transport>,
        options: OutboxOptions,
    ) -> Result<Outbox, StoreError> {
        let (shutdown, _) = watch::channel(false);
        let outbox = Outbox {
            inner: Arc::new(Inner {
                store,
                clock,
                metrics,
                transport,
                options,
                config: RwLock::new(Arc::new(config)),
                workers: Mutex::new(HashMap::new()),
                tasks: Mutex::new(Vec::new()),
                shutdown,
            }),
        };
        let pending = outbox.inner.store.outbox_pending_integrations().await?;
        for (receiver, kind, index) in pending {
            match IntegrationKind::parse(&kind) {
                Some(kind) => outbox.wake(IntegrationId {
                    receiver,
                    kind,
                    index,
                }),
                None => tracing::error!(
                    receiver,
                    integration = kind,
                    "outbox row with an unknown integration kind; left in the store"
                ),
            }
        }
        outbox.update_queue_depth().await;
        Ok(outbox)
    }

    /// Takes a reloaded config: new deliveries and retries use it.
    pub fn apply(&self, config: NotifierConfig) {
        *self.inner.config.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(config);
        let workers = self.inner.workers.lock().unwrap_or_else(|p| p.into_inner());
        for n in workers.values() {
            n.notify_one();
        }
    }

    pub fn config(&self) -> Arc<NotifierConfig> {
        self.inner
            .config
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn metrics(&self) -> &NotifyMetrics {
        &self.inner.metrics
    }

    /// Stops the workers: waits up to `shutdown_grace` for deliveries in flight
    /// (so a message accepted by the server is also marked delivered), then aborts.
    pub async fn shutdown(&self) {
        // `send_replace`: `send` would not store the value while no worker is waiting.
        self.inner.shutdown.send_replace(true);
        let tasks: Vec<JoinHandle<()>> =
            std::mem::take(&mut *self.inner.tasks.lock().unwrap_or_else(|p| p.into_inner()));
        let deadline = tokio::time::Instant::now() + self.inner.options.shutdown_grace;
        for mut t in tasks {
            if tokio::time::timeout_at(deadline, &mut t).await.is_err() {
                t.abort();
            }
        }
    }

    /// Writes a notification for every email and webhook integration of its
    /// receiver (honouring `send_resolved`) and wakes the workers. Returns the
    /// number of rows written (0 when the same notification was written before).
    pub async fn enqueue(&self, n: &Notification) -> Result<usize, OutboxError> {
        let cfg = self.config();
        let receiver = cfg
            .receiver(&n.receiver)
            .ok_or_else(|| OutboxError::UnknownReceiver(n.receiver.clone()))?;
        let stored = StoredNotification::from(n);
        let nid = notification_id(&stored);
        let mut rows = Vec::new();
        let mut ids = Vec::new();
        let integrations = receiver
            .email_configs
            .iter()
            .map(|e| (IntegrationKind::Email, e.send_resolved()))
            .enumerate()
            .chain(
                receiver
                    .webhook_configs
                    .iter()
                    .map(|w| (IntegrationKind::Webhook, w.send_resolved()))
                    .enumerate(),
            );
        for (index, (kind, send_resolved)) in integrations {
            let body = if send_resolved {
                Some(stored.clone())
            } else {
                stored.only_firing()
            };
            let Some(body) = body else { continue };
            let id = IntegrationId {
                receiver: n.receiver.clone(),
                kind,
                index,
            };
            rows.push(NewOutboxRow {
                notification_id: nid.clone(),
                receiver: id.receiver.clone(),
                integration: kind.as_str().to_string(),
                integration_index: index,
                group_key: n.group_key.clone(),
                payload: serde_json::to_string(&Payload::Alerts(body))?,
                created_at_ms: n.created_at_ms,
            });
            ids.push(id);
        }
        let written = self.inner.store.outbox_enqueue(rows).await?;
        for id in ids {
            self.wake(id);
        }
        self.update_queue_depth().await;
        Ok(written)
    }

    /// Queues a rendered report for every email of the report.
    pub async fn enqueue_report(
        &self,
        report: RenderedReport,
        at_ms: TimestampMs,
    ) -> Result<usize, OutboxError> {
        let cfg = self.config();
        let rc = cfg
            .reports
            .iter()
            .find(|r| r.name == report.name)
            .ok_or_else(|| OutboxError::UnknownReport(report.name.clone()))?;
        let receiver = format!("{REPORT_RECEIVER_PREFIX}{}", report.name);
        let nid = {
            let mut h = Sha256::new();
            h.update(receiver.as_bytes());
            h.update(at_ms.to_be_bytes());
            hex::encode(&h.finalize()[..16])
        };
        let payload = serde_json::to_string(&Payload::Report(report))?;
        let mut rows = Vec::new();
        let mut ids = Vec::new();
        for index in 0..rc.email_configs.len() {
            rows.push(NewOutboxRow {
                notification_id: nid.clone(),
                receiver: receiver.clone(),
                integration: IntegrationKind::Email.as_str().to_string(),
                integration_index: index,
                group_key: String::new(),
                payload: payload.clone(),
                created_at_ms: at_ms,
            });
            ids.push(IntegrationId {
                receiver: receiver.clone(),
                kind: IntegrationKind::Email,
                index,
            });
        }
        let written = self.inner.store.outbox_enqueue(rows).await?;
        for id in ids {
            self.wake(id);
        }
        self.update_queue_depth().await;
        Ok(written)
    }

    /// When the report's last run was queued (its due time), if it ever was
    /// and that run's rows are still kept.
    pub async fn last_report_run_ms(
        &self,
        report: &str,
    ) -> Result<Option<TimestampMs>, OutboxError> {
        let receiver = format!("{REPORT_RECEIVER_PREFIX}{report}");
        Ok(self.inner.store.outbox_latest_created_ms(&receiver).await?)
    }

    fn wake(&self, id: IntegrationId) {
        if *self.inner.shutdown.borrow() {
            return;
        }
        let mut workers = self.inner.workers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = workers.get(&id) {
            n.notify_one();
            return;
        }
        let notify = Arc::new(Notify::new());
        notify.notify_one();
        workers.insert(id.clone(), notify.clone());
        let handle = tokio::spawn(worker(self.inner.clone(), id, notify));
        let mut tasks = self.inner.tasks.lock().unwrap_or_else(|p| p.into_inner());
        tasks.retain(|t| !t.is_finished());
        tasks.push(handle);
    }

    async fn update_queue_depth(&self) {
        update_queue_depth(&self.inner).await
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OutboxStartError {
    #[error("cannot register notifier metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl NotificationSink for Outbox {
    fn send<'a>(&'a self, notification: Notification) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            self.enqueue(&notification)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
    }
}

/// A deterministic id: the same notification handed over twice is written once.
fn notification_id(n: &StoredNotification) -> String {
    let mut h = Sha256::new();
    h.update(n.receiver.as_bytes());
    h.update([0]);
    h.update(n.group_key.as_bytes());
    h.update([0]);
    h.update(n.created_at_ms.to_be_bytes());
    let mut alerts: BTreeMap<String, Option<TimestampMs>> = BTreeMap::new();
    for a in &n.alerts {
        alerts.insert(a.fingerprint_hex(), a.ends_at_ms);
    }
    for (fp, end) in alerts {
        h.update(fp.as_bytes());
        h.update(end.unwrap_or(-1).to_be_bytes());
    }
    hex::encode(&h.finalize()[..16])
}

async fn update_queue_depth(inner: &Inner) {
    match inner.store.outbox_queue_depth().await {
        Ok(d) => inner.metrics.queue_depth.set(d),
        Err(e) => tracing::warn!(error = %e, "cannot read the outbox queue depth"),
    }
}

/// The delay before attempt `attempts + 1`: exponential, capped, with jitter
/// (between half and all of it), so many retries do not arrive together.
pub fn backoff(options: &OutboxOptions, attempts: u32) -> Duration {
    let exp = attempts.saturating_sub(1).min(30);
    let full = options
        .initial_backoff
        .saturating_mul(1u32 << exp)
        .min(options.max_backoff);
    let half = full / 2;
    let jitter_ms = rand::thread_rng().gen_range(0..=half.as_millis() as u64);
    half + Duration::from_millis(jitter_ms)
}

enum Wait {
    Woken,
    Shutdown,
}

async fn wait(inner: &Inner, notify: &Notify, until_ms: Option<TimestampMs>) -> Wait {
    let mut sd = inner.shutdown.subscribe();
    if *sd.borrow() {
        return Wait::Shutdown;
    }
    let sleep = async {
        match until_ms {
            Some(t) => inner.clock.sleep_until_ms(t).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = sd.changed() => Wait::Shutdown,
        _ = notify.notified() => Wait::Woken,
        _ = sleep => Wait::Woken,
    }
}

async fn worker(inner: Arc<Inner>, id: IntegrationId, notify: Arc<Notify>) {
    let kind = id.kind.as_str();
    loop {
        if *inner.shutdown.borrow() {
            return;
        }
        let head = match inner.store.outbox_head(&id.receiver, kind, id.index).await {
            Ok(h) => h,
            Err(e) => {
                tracing::error!(integration = %id, error = %e, "cannot read the outbox; retrying");
                let retry = inner.clock.now_ms() + inner.options.initial_backoff.as_millis() as i64;
                if let Wait::Shutdown = wait(&inner, &notify, Some(retry)).await {
                    return;
                }
                continue;
            }
        };
        let Some(row) = head else {
            if let Wait::Shutdown = wait(&inner, &notify, None).await {
                return;
            }
            continue;
        };
        let now = inner.clock.now_ms();
        let deadline = row.created_at_ms + inner.options.max_age.as_millis() as i64;
        if now >= deadline {
            let why = format!(
                "not delivered within {}s after {} attempts; last error: {}",
                inner.options.max_age.as_secs(),
                row.attempts,
                row.last_error.as_deref().unwrap_or("none")
            );
            dead_letter(&inner, &id, &row, row.attempts, why).await;
            continue;
        }
        if row.next_attempt_ms > now {
            if let Wait::Shutdown =
                wait(&inner, &notify, Some(row.next_attempt_ms.min(deadline))).await
            {
                return;
            }
            continue;
        }
        attempt(&inner, &id, row).await;
    }
}

async fn attempt(inner: &Inner, id: &IntegrationId, row: OutboxRow) {
    let kind = id.kind.as_str();
    let attempts = row.attempts + 1;
    let payload: Payload = match serde_json::from_str(&row.payload) {
        Ok(p) => p,
        Err(e) => {
            dead_letter(
                inner,
                id,
                &row,
                attempts,
                format!("unreadable outbox payload: {e}"),
            )
            .await;
            return;
        }
    };
    let job = DeliveryJob {
        integration: id.clone(),
        delivery_id: row.notification_id.clone(),
        payload,
        config: inner
            .config
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone(),
        now_ms: inner.clock.now_ms(),
    };
    // A delivery in flight is not cut short by shutdown (see `Outbox::shutdown`).
    let result = inner.transport.deliver(&job).await;
    let now = inner.clock.now_ms();
    match result {
        Ok(()) => {
            inner
                .metrics
                .notifications
                .with_label_values(&[&id.receiver, kind, "success"])
                .inc();
            inner
                .metrics
                .latency
                .with_label_values(&[kind])
                .observe((now - row.created_at_ms).max(0) as f64 / 1000.0);
            if let Err(e) = inner
                .store
                .outbox_mark_delivered(row.id, attempts, now)
                .await
            {
                tracing::error!(integration = %id, error = %e, "delivered, but cannot mark the outbox row delivered");
            }
            tracing::info!(integration = %id, group_key = row.group_key, attempts, "notification delivered");
            prune(inner, now).await;
            update_queue_depth(inner).await;
        }
        Err(err) => {
            inner
                .metrics
                .notifications
                .with_label_values(&[&id.receiver, kind, "failure"])
                .inc();
            if err.permanent {
                dead_letter(inner, id, &row, attempts, err.message).await;
            } else {
                let next = now + backoff(&inner.options, attempts).as_millis() as i64;
                tracing::warn!(integration = %id, attempts, error = %err.message, retry_in_ms = next - now, "notification delivery failed; will retry");
                if let Err(e) = inner
                    .store
                    .outbox_mark_retry(row.id, attempts, next, err.message)
                    .await
                {
                    tracing::error!(integration = %id, error = %e, "cannot record the failed attempt");
                }
            }
        }
    }
}

async fn dead_letter(
    inner: &Inner,
    id: &IntegrationId,
    row: &OutboxRow,
    attempts: u32,
    why: String,
) {
    tracing::error!(
        integration = %id,
        group_key = row.group_key,
        attempts,
        error = %why,
        "notification dead-lettered: it will not be delivered"
    );
    inner
        .metrics
        .dead_lettered
        .with_label_values(&[&id.receiver, id.kind.as_str()])
        .inc();
    if let Err(e) = inner
        .store
        .outbox_mark_dead(row.id, attempts, inner.clock.now_ms(), why)
        .await
    {
        tracing::error!(integration = %id, error = %e, "cannot mark the outbox row dead");
    }
    update_queue_depth(inner).await;
}

async fn prune(inner: &Inner, now: TimestampMs) {
    let before = now - inner.options.keep_finished.as_millis() as i64;
    if let Err(e) = inner
        .store
        .outbox_prune(before, REPORT_RECEIVER_PREFIX)
        .await
    {
        tracing::warn!(error = %e, "cannot prune the outbox");
    }
}
