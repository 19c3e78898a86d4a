//! [`CloudRunApi`] over the typed Cloud Run v2 client of `src/gcp/`.

use std::collections::BTreeMap;

use super::cloud_run::{
    short_name, CloudRunApi, CloudRunError, OperationState, RevisionState, ServicePatch,
    ServiceState, TrafficTarget,
};
use crate::dispatch::notification::BoxFuture;
use crate::gcp::run::{self, CloudRunClient, EnvVar, ServiceUpdate, TrafficTargetAllocationType};
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
            denied_permission,
            ..
        } => CloudRunError::Api {
            code: http_status,
            status,
            message,
            denied_permission,
        },
        other => CloudRunError::Transport(other.to_string()),
    }
}

fn traffic_view(
    type_: TrafficTargetAllocationType,
    revision: Option<&str>,
    percent: i32,
    tag: Option<&String>,
) -> TrafficTarget {
    TrafficTarget {
        revision: revision
            .filter(|r| !r.is_empty())
            .map(|r| short_name(r).to_string()),
        latest: type_ == TrafficTargetAllocationType::Latest,
        percent: percent.max(0) as u32,
        tag: tag.filter(|t| !t.is_empty()).cloned(),
    }
}

fn view(s: &run::Service) -> ServiceState {
    let traffic = s
        .traffic
        .iter()
        .map(|t| traffic_view(t.type_, t.revision.as_deref(), t.percent, t.tag.as_ref()))
        .collect();
    let traffic_statuses = s
        .traffic_statuses
        .iter()
        .map(|t| traffic_view(t.type_, t.revision.as_deref(), t.percent, t.tag.as_ref()))
        .collect();
    let env = s
        .template
        .as_ref()
        .and_then(|t| t.ingress_index().map(|i| &t.containers[i]))
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
        runtime_service_account: s
            .template
            .as_ref()
            .and_then(|t| t.service_account())
            .map(String::from),
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

/// The `services.patch` body for `patch` against the service as just read:
/// only the fields that change. The etag sent is the one the change was
/// planned against, so a change in between is refused where Cloud Run
/// enforces it (and the plan check catches it where it does not).
fn update_for(current: &run::Service, patch: &ServicePatch) -> Result<ServiceUpdate, String> {
    let mut update = ServiceUpdate {
        name: current.name.clone(),
        etag: patch.etag.clone(),
        ..Default::default()
    };
    if let Some(traffic) = &patch.traffic {
        update.traffic = Some(
            traffic
                .iter()
                .map(|t| run::TrafficTarget {
                    type_: if t.latest {
                        TrafficTargetAllocationType::Latest
                    } else {
                        TrafficTargetAllocationType::Revision
                    },
                    revision: if t.latest { None } else { t.revision.clone() },
                    percent: t.percent as i32,
                    tag: t.tag.clone(),
                })
                .collect(),
        );
    }
    if let Some(env) = &patch.env {
        let mut template = current.template.clone().unwrap_or_default();
        // A new revision gets a generated name: a pinned one (gcloud, the
        // Console) names an existing revision, which Cloud Run refuses.
        template.revision = None;
        let Some(i) = template.ingress_index() else {
            return Err(format!(
                "cannot tell which of the {} containers serves requests (none declares a port)",
                template.containers.len()
            ));
        };
        let container = &mut template.containers[i];
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
        update.template = Some(template);
    }
    if !patch.annotations.is_empty() {
        let mut annotations = current.annotations.clone();
        annotations.extend(patch.annotations.clone());
        update.annotations = Some(annotations);
    }
    Ok(update)
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
            // Re-read right before the patch: the etag alone is not relied on.
            let current = CloudRunClient::get_service(self, service)
                .await
                .map_err(map_err)?;
            if let Some(why) = patch
                .expect
                .as_ref()
                .and_then(|e| e.differs(&view(&current)))
            {
                return Err(CloudRunError::Changed(why));
            }
            let update = update_for(&current, &patch).map_err(|message| CloudRunError::Api {
                code: 400,
                status: "FAILED_PRECONDITION".into(),
                message,
                denied_permission: None,
            })?;
            let op = CloudRunClient::update_service(self, &update, false)
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

    fn pinned_service() -> run::Service {
        serde_json::from_value(serde_json::json!({
            "name": "projects/p/locations/l/services/s",
            "etag": "\"new\"",
            "generation": "3",
            "annotations": {"owner": "team-a"},
            "template": {
                "revision": "s-00002-abc",
                "serviceAccount": "runtime@p.iam.gserviceaccount.com",
                "containers": [
                    {"name": "proxy", "image": "envoy", "env": [{"name": "FLAG", "value": "sidecar"}]},
                    {"name": "app", "image": "x", "env": [{"name": "FLAG", "value": "on"}], "ports": [{"containerPort": 8080}]}
                ]
            },
            "traffic": [
                {"type": "TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST", "percent": 100},
                {"type": "TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION", "revision": "s-00001-xyz", "percent": 0, "tag": "stable"}
            ],
            "trafficStatuses": [{"type": "TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST", "revision": "s-00002-abc", "percent": 100}],
            "latestReadyRevision": "projects/p/locations/l/services/s/revisions/s-00002-abc"
        }))
        .unwrap()
    }

    #[test]
    fn traffic_patch_sends_only_traffic_and_annotations_never_the_template() {
        let svc = pinned_service();
        let state = view(&svc);
        assert_eq!(state.serving_revision().as_deref(), Some("s-00002-abc"));
        // The ingress container (the one with a port), not containers[0].
        assert_eq!(state.env.get("FLAG").map(String::as_str), Some("on"));
        assert_eq!(
            state.runtime_service_account.as_deref(),
            Some("runtime@p.iam.gserviceaccount.com")
        );
        assert_eq!(state.traffic[1].tag.as_deref(), Some("stable"));
        let update = update_for(
            &svc,
            &ServicePatch {
                etag: "\"old\"".into(),
                expect: None,
                traffic: Some(vec![TrafficTarget::pinned("s-1", 100)]),
                env: None,
                annotations: [("a".to_string(), "b".to_string())].into(),
            },
        )
        .unwrap();
        assert_eq!(update.update_mask(), ["traffic", "annotations"]);
        let body = serde_json::to_value(&update).unwrap();
        let mut keys: Vec<&String> = body.as_object().unwrap().keys().collect();
        keys.sort();
        assert_eq!(keys, ["annotations", "etag", "name", "traffic"]);
        assert_eq!(body["etag"], "\"old\"");
        assert_eq!(body["traffic"][0]["revision"], "s-1");
        assert_eq!(
            body["traffic"][0]["type"],
            "TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION"
        );
        // Annotations are replaced as a map: the others are kept.
        assert_eq!(body["annotations"]["owner"], "team-a");
        assert_eq!(body["annotations"]["a"], "b");
    }

    #[test]
    fn env_patch_clears_the_pinned_revision_and_changes_the_ingress_container() {
        let svc = pinned_service();
        let update = update_for(
            &svc,
            &ServicePatch {
                etag: "e".into(),
                expect: None,
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
        )
        .unwrap();
        assert_eq!(update.update_mask(), ["template"]);
        let template = update.template.unwrap();
        assert_eq!(template.revision, None);
        assert_eq!(
            template.service_account(),
            Some("runtime@p.iam.gserviceaccount.com")
        );
        let sidecar = &template.containers[0].env;
        assert_eq!(sidecar[0].value.as_deref(), Some("sidecar"));
        let app = &template.containers[1].env;
        assert_eq!(app.len(), 2);
        assert_eq!(app[0].value.as_deref(), Some("off"));
        assert_eq!(app[1].name, "NEW");
    }

    #[test]
    fn env_patch_refuses_when_no_container_has_a_port() {
        let mut svc = pinned_service();
        if let Some(t) = svc.template.as_mut() {
            t.containers[1].extra.remove("ports");
        }
        let err = update_for(
            &svc,
            &ServicePatch {
                etag: "e".into(),
                expect: None,
                traffic: None,
                env: Some([("FLAG".to_string(), "off".to_string())].into()),
                annotations: BTreeMap::new(),
            },
        )
        .unwrap_err();
        assert!(err.contains("none declares a port"), "{err}");
    }
}
