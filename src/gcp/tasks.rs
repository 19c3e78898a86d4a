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
        // Tasks being replaced: the new one starts after the old one finished its
        // poll, so two never write the same state at once.
        let mut replaced: BTreeMap<String, JoinHandle<()>> = BTreeMap::new();
        let names: Vec<String> = tasks.keys().cloned().collect();
        for name in names {
            let keep = match (wanted.get(&name), tasks.get(&name)) {
                (Some(c), Some(r)) => *c == r.config && !r.handle.is_finished(),
                _ => false,
            };
            if !keep {
                if let Some(r) = tasks.remove(&name) {
                    let _ = r.stop.send(true);
                    replaced.insert(name, r.handle);
                }
            }
        }
        for (name, config) in wanted {
            if tasks.contains_key(&name) {
                continue;
            }
            let (stop, rx) = watch::channel(false);
            let previous = replaced.remove(&name);
            let task = spawn(config.clone(), rx);
            let handle = tokio::spawn(async move {
                if let Some(old) = previous {
                    let abort = old.abort_handle();
                    if tokio::time::timeout(Duration::from_secs(10), old)
                        .await
                        .is_err()
                    {
                        abort.abort();
                    }
                }
                task.await
            });
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn unchanged_tasks_keep_running_changed_ones_restart() {
        let starts = Arc::new(AtomicUsize::new(0));
        let set: TaskSet<u32> = TaskSet::default();
        let spawn = |starts: Arc<AtomicUsize>| {
            move |_c: u32, mut stop: watch::Receiver<bool>| {
                let starts = starts.clone();
                async move {
                    starts.fetch_add(1, Ordering::SeqCst);
                    while !sleep_or_stop(Duration::from_secs(1), &mut stop).await {}
                }
            }
        };
        set.apply(
            vec![("a".into(), 1), ("b".into(), 1)],
            spawn(starts.clone()),
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(starts.load(Ordering::SeqCst), 2);
        set.apply(
            vec![("a".into(), 1), ("b".into(), 2)],
            spawn(starts.clone()),
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(starts.load(Ordering::SeqCst), 3, "only b restarted");
        set.apply(vec![("a".into(), 1)], spawn(starts.clone()));
        assert_eq!(set.names(), vec!["a".to_string()]);
        set.shutdown().await;
        assert!(set.names().is_empty());
    }
}
