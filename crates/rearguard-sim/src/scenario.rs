//! Scripted scenarios on the shared Clock: steps at offsets from the start
//! (a deploy, a behaviour change, a metric rising, a log burst, a fault).
//! Under tokio's paused time a scenario of minutes runs in milliseconds.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::faults::Fault;
use super::logging::LogEntrySpec;
use super::monitoring::{PointValue, SeriesSpec};
use super::run::{DeploySpec, RevisionBehaviour, ServiceSpec};
use super::server::{FakeGcp, FakeOptions};
use super::service::{SimService, SimServiceOptions};
use rearguard_clock::{Clock, TimestampMs};

/// One step of a scenario.
#[derive(Clone)]
pub enum Step {
    /// A deploy like `gcloud run deploy` (see [`FakeGcp::deploy`]).
    Deploy {
        service: String,
        spec: DeploySpec,
    },
    /// Changes an existing revision's behaviour (full revision name).
    SetBehaviour {
        revision: String,
        behaviour: RevisionBehaviour,
    },
    /// A gauge moving linearly from `from` to `to` over `over`, a point every `every`.
    Ramp {
        series: SeriesSpec,
        from: f64,
        to: f64,
        over: Duration,
        every: Duration,
    },
    /// `count` copies of `entry`, spread evenly over `over`, timestamps at write time.
    LogBurst {
        entry: LogEntrySpec,
        count: u32,
        over: Duration,
    },
    Fault(Fault),
    ClearFaults,
    /// Anything else, on the fake.
    Call(Arc<dyn Fn(&FakeGcp) + Send + Sync>),
}

impl std::fmt::Debug for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Step::Deploy { service, .. } => write!(f, "deploy {service}"),
            Step::SetBehaviour { revision, .. } => write!(f, "set behaviour of {revision}"),
            Step::Ramp {
                series, from, to, ..
            } => write!(f, "ramp {} {from} → {to}", series.metric_type),
            Step::LogBurst { count, entry, .. } => {
                write!(f, "log burst of {count} {} entries", entry.severity)
            }
            Step::Fault(fault) => write!(f, "fault {fault:?}"),
            Step::ClearFaults => write!(f, "clear faults"),
            Step::Call(_) => write!(f, "call"),
        }
    }
}

/// What happened when, for timelines and assertions.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    pub at_ms: TimestampMs,
    pub what: String,
    /// For a deploy: the new revision's full name.
    pub revision: Option<String>,
}

/// Steps at offsets from the scenario's start.
#[derive(Clone, Debug, Default)]
pub struct Scenario {
    steps: Vec<(Duration, Step)>,
}

impl Scenario {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn at(mut self, offset: Duration, step: Step) -> Self {
        self.steps.push((offset, step));
        self
    }

    /// Runs the steps on `fake`'s clock, starting now. Ramps and bursts run
    /// in the background, so later steps are not delayed by them.
    pub fn spawn(mut self, fake: &FakeGcp) -> ScenarioHandle {
        self.steps.sort_by_key(|(d, _)| *d);
        let events = Arc::new(Mutex::new(Vec::new()));
        let (done_tx, done_rx) = watch::channel(false);
        let fake = fake.clone();
        let ev = events.clone();
        let task = tokio::spawn(async move {
            let clock = fake.clock().clone();
            let start = clock.now_ms();
            let mut background = Vec::new();
            for (offset, step) in self.steps {
                clock
                    .sleep_until_ms(start + offset.as_millis() as i64)
                    .await;
                let (what, revision) =
                    (format!("{step:?}"), run_step(&fake, step, &mut background));
                let mut e = ev.lock().unwrap_or_else(|e| e.into_inner());
                e.push(Event {
                    at_ms: clock.now_ms(),
                    what,
                    revision,
                });
            }
            for b in background {
                let _ = b.await;
            }
            let _ = done_tx.send(true);
        });
        ScenarioHandle {
            task,
            events,
            done: done_rx,
        }
    }
}

fn run_step(fake: &FakeGcp, step: Step, background: &mut Vec<JoinHandle<()>>) -> Option<String> {
    match step {
        Step::Deploy { service, spec } => match fake.deploy(&service, spec) {
            Ok((rev, _)) => return Some(rev),
            Err(e) => tracing::warn!(error = ?e, "scenario deploy failed"),
        },
        Step::SetBehaviour {
            revision,
            behaviour,
        } => {
            if let Err(e) = fake.set_revision_behaviour(&revision, behaviour) {
                tracing::warn!(error = ?e, "scenario step failed");
            }
        }
        Step::Ramp {
            series,
            from,
            to,
            over,
            every,
        } => {
            let fake = fake.clone();
            background.push(tokio::spawn(async move {
                let clock = fake.clock().clone();
                let start = clock.now_ms();
                let steps = (over.as_millis() / every.as_millis().max(1)).max(1) as i64;
                for i in 0..=steps {
                    let t = start + i * every.as_millis() as i64;
                    clock.sleep_until_ms(t).await;
                    let v = from + (to - from) * i as f64 / steps as f64;
                    let _ = fake.add_point(&series, t, t, PointValue::Double(v));
                }
            }));
        }
        Step::LogBurst { entry, count, over } => {
            let fake = fake.clone();
            background.push(tokio::spawn(async move {
                let clock = fake.clock().clone();
                let start = clock.now_ms();
                let gap = over.as_millis() as i64 / i64::from(count.max(1));
                for i in 0..count {
                    let t = start + i64::from(i) * gap;
                    clock.sleep_until_ms(t).await;
                    let mut e = entry.clone();
                    e.timestamp_ms = t;
                    e.insert_id = None;
                    let _ = fake.add_log_entry(e);
                }
            }));
        }
        Step::Fault(f) => fake.inject(f),
        Step::ClearFaults => fake.clear_faults(),
        Step::Call(f) => f(fake),
    }
    None
}

/// A running scenario; aborted when dropped.
pub struct ScenarioHandle {
    task: JoinHandle<()>,
    events: Arc<Mutex<Vec<Event>>>,
    done: watch::Receiver<bool>,
}

impl ScenarioHandle {
    /// The steps run so far.
    pub fn events(&self) -> Vec<Event> {
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Waits until every step (and every ramp and burst) has run.
    pub async fn finished(&mut self) {
        let _ = self.done.wait_for(|d| *d).await;
    }
}

impl Drop for ScenarioHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Settings of the ready-made demo scenario.
#[derive(Clone, Debug)]
pub struct DemoOptions {
    pub service: String,
    /// When the bad revision is deployed, after the start.
    pub deploy_after: Duration,
    /// How the bad revision behaves.
    pub bad: RevisionBehaviour,
    /// The env var the bad deploy flips (a feature flag), so `cloud_run_env`
    /// rollbacks that set it back produce a healthy revision.
    pub flag: (String, String, String),
    pub fake: FakeOptions,
    pub service_options: SimServiceOptions,
}

impl Default for DemoOptions {
    fn default() -> Self {
        Self {
            service: "projects/sim-project/locations/us-central1/services/netra-backend-staging"
                .into(),
            deploy_after: Duration::from_secs(30),
            bad: RevisionBehaviour::bad(),
            flag: (
                "USE_CLOUDRUN_JOBS_SANDBOX".into(),
                "false".into(),
                "true".into(),
            ),
            fake: FakeOptions::default(),
            service_options: SimServiceOptions::default(),
        }
    }
}

/// "A healthy revision serving; deploy a bad revision": the fake APIs, the
/// simulated service serving real HTTP, and the scenario that deploys.
pub struct Demo {
    pub fake: FakeGcp,
    pub service: SimService,
    /// Full service name.
    pub service_name: String,
    /// Full name of the healthy first revision.
    pub good_revision: String,
    pub scenario: ScenarioHandle,
}

impl Demo {
    /// Starts everything; the bad deploy happens `deploy_after` from now.
    /// Revisions created later through the API with the flag's good value
    /// (e.g. by a `cloud_run_env` rollback) are healthy; with the bad value, bad.
    pub async fn start(clock: Clock, options: DemoOptions) -> std::io::Result<Self> {
        let fake = FakeGcp::start_with(clock, options.fake.clone()).await?;
        let (flag, good_value, bad_value) = options.flag.clone();
        let io_err = |e: super::util::ApiError| std::io::Error::other(e.message);
        let good_revision = fake
            .create_service(ServiceSpec::new(&options.service).env(&flag, &good_value))
            .map_err(io_err)?;
        fake.behaviour_for_env(&options.service, &flag, &bad_value, options.bad.clone())
            .map_err(io_err)?;
        let service =
            SimService::start(&fake, &options.service, options.service_options.clone()).await?;
        let scenario = Scenario::new()
            .at(
                options.deploy_after,
                Step::Deploy {
                    service: options.service.clone(),
                    spec: DeploySpec {
                        image: Some("us-docker.pkg.dev/sim-project/backend/backend:v2".into()),
                        env: vec![(flag, bad_value)],
                        behaviour: options.bad.clone(),
                    },
                },
            )
            .spawn(&fake);
        Ok(Self {
            fake,
            service,
            service_name: options.service,
            good_revision,
            scenario,
        })
    }

    /// The bad revision, once deployed.
    pub fn bad_revision(&self) -> Option<String> {
        self.scenario.events().into_iter().find_map(|e| e.revision)
    }
}
