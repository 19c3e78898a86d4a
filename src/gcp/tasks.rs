//! A set of named polling tasks that a config reload can change: unchanged
//! entries keep running, changed ones restart, removed ones stop.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

struct Running<C> {
    config: C,
    stop: watch::Sender<bool>,
    handle: JoinHandle<()>,
}

pub struct TaskSet<C> {
    tasks: Mutex<BTreeMap<String, Running<C>>>,
}

impl<C> Default for TaskSet<C> {
    fn default() -> Self {
        Self {
            tasks: Mutex::new(BTreeMap::new()),
        }
    }
}

/// Resolves when `stop` says so (or its sender is gone).
pub async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Sleeps `d` unless told to stop first; true when told to stop.
pub async fn sleep_or_stop(d: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => false,
        _ = stopped(stop) => true,
    }
}

impl<C: Clone + PartialEq + Send + 'static> TaskSet<C> {
    /// Makes the running set match `wanted` (name → config); `spawn` starts one task.
    pub fn apply<F, Fut>(&self, wanted: Vec<(String, C)>, spawn: F)
    where
        F: Fn(C, watch::Receiver<bool>) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let mut tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        let wanted: BTreeMap<String, C> = wanted.into_iter().collect();
        tasks.retain(|name, running| {
            let keep = wanted.get(name).is_some_and(|c| *c == running.config)
                && !running.handle.is_finished();
            if !keep {
                let _ = running.stop.send(true);
            }
            keep
        });
        for (name, config) in wanted {
            if tasks.contains_key(&name) {
                continue;
            }
            let (stop, rx) = watch::channel(false);
            let handle = tokio::spawn(spawn(config.clone(), rx));
            tasks.insert(
                name,
                Running {
                    config,
                    stop,
                    handle,
                },
            );
        }
    }

    pub fn names(&self) -> Vec<String> {
        self.tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect()
    }

    /// Stops every task; a task that does not stop within 3 s is aborted.
    pub async fn shutdown(&self) {
        let all: Vec<Running<C>> = {
            let mut tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
            std::mem::take(&mut *tasks).into_values().collect()
        };
        for r in &all {
            let _ = r.stop.send(true);
        }
        for r in all {
            let abort = r.handle.abort_handle();
            if tokio::time::timeout(Duration::from_secs(3), r.handle)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
    }
}
