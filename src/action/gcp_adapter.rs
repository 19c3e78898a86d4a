//! [`CloudRunApi`] over the typed Cloud Run v2 client of `src/gcp/`.

use std::collections::BTreeMap;

use super::cloud_run::{
    short_name, CloudRunApi, CloudRunError, OperationState, RevisionState, ServicePatch,
    ServiceState, TrafficTarget,
};
use crate::dispatch::notification::BoxFuture;
use crate::gcp::run::{self, CloudRunClient, EnvVar, PatchOptions, TrafficTargetAllocationType};
use crate::gcp::GcpError;

fn map_err(e: GcpError) -> CloudRunError {
    match e {
        GcpError::StaleEtag { message, .. } => CloudRunError::StaleEtag(message),
        GcpError::Api {
            http_status: 404,
            message,
            ..
        } => CloudRunError::NotFound(message),
        GcpError::Api {
            http_status,
            status,
            message,
            ..
        } => CloudRunError::Api {
            code: http_status,
            status,
            message,
        },
        other => CloudRunError::Transport(other.to_string()),
    }
}

fn view(s: &run::Service) -> ServiceState {
    let traffic = s
        .traffic
        .iter()
        .map(|t| TrafficTarget {
            revision: t
                .revision
                .as_deref()
                .filter(|r| !r.is_empty())
                .map(|r| short_name(r).to_string()),
            latest: t.type_ == TrafficTargetAllocationType::Latest,
            percent: t.percent.max(0) as u32,
        })
        .collect();
    let traffic_statuses = s
        .traffic_statuses
        .iter()
        .map(|t| TrafficTarget {
            revision: t
                .revision
                .as_deref()
                .filter(|r| !r.is_empty())
                .map(|r| short_name(r).to_string()),
            latest: t.type_ == TrafficTargetAllocationType::Latest,
            percent: t.percent.max(0) as u32,
        })
        .collect();
    let env = s
        .template
        .as_ref()
        .and_then(|t| t.containers.first())
        .map(|c| {
            c.env
                .iter()
                .filter_map(|e| e.value.clone().map(|v| (e.name.clone(), v)))
                .collect()
        })
        .unwrap_or_default();
    ServiceState {
        name: s.name.clone(),
        etag: s.etag.clone().unwrap_or_default(),
        generation: s.generation.unwrap_or(0),
        observed_generation: s.observed_generation.unwrap_or(0),
        latest_ready_revision: s
            .latest_ready_revision
            .as_deref()
            .map(|r| short_name(r).to_string()),
        latest_created_revision: s
            .latest_created_revision
            .as_deref()
            .map(|r| short_name(r).to_string()),
        traffic,
        traffic_statuses,
        env,
        annotations: s.annotations.clone(),
    }
}

fn op_state(op: &run::Operation) -> OperationState {
    OperationState {
        name: op.name.clone(),
        done: op.done,
        error: op
            .error
            .as_ref()
            .map(|e| format!("{} (code {})", e.message, e.code)),
    }
}

/// Applies `patch` to the service as read; the etag sent is the one the
/// change was planned against, so a change in between is refused.
fn apply(mut svc: run::Service, patch: &ServicePatch) -> (run::Service, Vec<String>) {
    let mut mask = Vec::new();
    svc.etag = Some(patch.etag.clone());
    if let Some(traffic) = &patch.traffic {
        svc.traffic = traffic
            .iter()
            .map(|t| run::TrafficTarget {
                type_: if t.latest {
                    TrafficTargetAllocationType::Latest
                } else {
                    TrafficTargetAllocationType::Revision
                },
                revision: if t.latest { None } else { t.revision.clone() },
                percent: t.percent as i32,
                tag: None,
            })
            .collect();
        mask.push("traffic".to_string());
    }
    if let Some(env) = &patch.env {
        let template = svc.template.get_or_insert_with(Default::default);
        // A new revision gets a generated name: drop a pinned one.
        template.revision = None;
        if template.containers.is_empty() {
            template.containers.push(Default::default());
        }
        let container = &mut template.containers[0];
        let mut rest: BTreeMap<&String, &String> = env.iter().collect();
        for var in container.env.iter_mut() {
            if let Some(v) = rest.remove(&var.name) {
                var.value = Some(v.clone());
                var.value_source = None;
            }
        }
        for (k, v) in rest {
            container.env.push(EnvVar {
                name: k.clone(),
                value: Some(v.clone()),
                value_source: None,
            });
        }
        mask.push("template".to_string());
    }
    if !patch.annotations.is_empty() {
        svc.annotations.extend(patch.annotations.clone());
        mask.push("annotations".to_string());
    }
    (svc, mask)
}

impl CloudRunApi for CloudRunClient {
    fn get_service<'a>(
        &'a self,
        service: &'a str,
    ) -> BoxFuture<'a, Result<ServiceState, CloudRunError>> {
        Box::pin(async move {
            CloudRunClient::get_service(self, service)
                .await
                .map(|s| view(&s))
                .map_err(map_err)
        })
    }

    fn list_revisions<'a>(
        &'a self,
        service: &'a str,
    ) -> BoxFuture<'a, Result<Vec<RevisionState>, CloudRunError>> {
        Box::pin(async move {
            let revs = CloudRunClient::list_revisions(self, service)
                .await
                .map_err(map_err)?;
            Ok(revs
                .iter()
                .map(|r| RevisionState {
                    name: r.short_name().to_string(),
                    create_time_ms: r.create_time.map(|t| t.timestamp_millis()).unwrap_or(0),
                    ready: r.is_ready(),
                })
                .collect())
        })
    }

    fn patch_service<'a>(
        &'a self,
        service: &'a str,
        patch: ServicePatch,
    ) -> BoxFuture<'a, Result<OperationState, CloudRunError>> {
        Box::pin(async move {
            let current = CloudRunClient::get_service(self, service)
                .await
                .map_err(map_err)?;
            let (changed, mask) = apply(current, &patch);
            let op = CloudRunClient::patch_service(
                self,
                &changed,
                &PatchOptions {
                    update_mask: mask,
                    validate_only: false,
                },
            )
            .await
            .map_err(map_err)?;
            Ok(op_state(&op))
        })
    }

    fn get_operation<'a>(
        &'a self,
        operation: &'a str,
    ) -> BoxFuture<'a, Result<OperationState, CloudRunError>> {
        Box::pin(async move {
            CloudRunClient::get_operation(self, operation)
                .await
                .map(|op| op_state(&op))
                .map_err(map_err)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traffic_patch_keeps_the_planned_etag_and_pins_the_revision() {
        let svc: run::Service = serde_json::from_value(serde_json::json!({
            "name": "projects/p/locations/l/services/s",
            "etag": "\"new\"",
            "template": {"containers": [{"image": "x", "env": [{"name": "FLAG", "value": "on"}]}]},
            "traffic": [{"type": "TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST", "percent": 100}],
            "trafficStatuses": [{"type": "TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST", "revision": "s-2", "percent": 100}],
            "latestReadyRevision": "projects/p/locations/l/services/s/revisions/s-2"
        }))
        .unwrap();
        let state = view(&svc);
        assert_eq!(state.serving_revision().as_deref(), Some("s-2"));
        assert_eq!(state.env.get("FLAG").map(String::as_str), Some("on"));
        let (patched, mask) = apply(
            svc.clone(),
            &ServicePatch {
                etag: "\"old\"".into(),
                traffic: Some(vec![TrafficTarget::pinned("s-1", 100)]),
                env: None,
                annotations: [("a".to_string(), "b".to_string())].into(),
            },
        );
        assert_eq!(patched.etag.as_deref(), Some("\"old\""));
        assert_eq!(mask, ["traffic", "annotations"]);
        assert_eq!(patched.traffic[0].revision.as_deref(), Some("s-1"));
        assert_eq!(
            patched.traffic[0].type_,
            TrafficTargetAllocationType::Revision
        );
        let (patched, mask) = apply(
            svc,
            &ServicePatch {
                etag: "e".into(),
                traffic: None,
                env: Some(
                    [
                        ("FLAG".to_string(), "off".to_string()),
                        ("NEW".to_string(), "1".to_string()),
                    ]
                    .into(),
                ),
                annotations: BTreeMap::new(),
            },
        );
        assert_eq!(mask, ["template"]);
        let env = &patched.template.unwrap().containers[0].env;
        assert_eq!(env.len(), 2);
        assert_eq!(env[0].value.as_deref(), Some("off"));
    }
}
