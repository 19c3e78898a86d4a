//! The command effect.

use super::*;

/// `command`: runs argv with the alert in its environment. A command is never
/// re-run after a restart (it may or may not have run), see `reconcile.rs`.
pub(super) struct Command<'a>(pub &'a [String]);

impl Command<'_> {
    fn shown(&self) -> String {
        self.0.join(" ")
    }
}

impl Effect for Command<'_> {
    async fn plan(&self, _: &ActionRunner, run: &Run) -> Result<Planned, Step> {
        let shown = self.shown();
        Ok(Planned {
            kind: IntentKind::Command,
            detail: IntentDetail {
                argv: self.0.to_vec(),
                ..IntentDetail::for_alert(run.trigger.alert.as_ref())
            },
            from: None,
            to: None,
            etag: None,
            dry_run: format!("would run {shown}"),
            audit_start: format!("running {shown}"),
            notice_reason: "running_command",
            summary: format!("running {shown} because {}", run.because()),
            description: "Then verifying.".into(),
            evidence: Vec::new(),
        })
    }

    async fn apply(&self, runner: &ActionRunner, run: &mut Run, intent: &Intent) -> Applied {
        let id = intent.id;
        runner
            .set_intent(id, IntentState::Applied, None, None)
            .await;
        let env = command::alert_env(run.trigger.alert.as_ref(), run.service.as_deref());
        let out = command::run(self.0, &env, run.action.timeout.0).await;
        let step = if out.success {
            runner
                .set_intent(id, IntentState::Verifying, None, None)
                .await;
            Step::Done {
                intent_id: id,
                from: None,
                to: None,
            }
        } else {
            let shown = self.shown();
            let detail = match (&out.error, out.exit_code) {
                (Some(e), _) => format!("{shown}: {e}"),
                (None, Some(code)) => format!("{shown} exited {code}"),
                (None, None) => format!("{shown} was killed by a signal"),
            };
            runner.fail_intent(id, detail).await
        };
        Applied {
            step,
            done: "command exited 0",
            evidence: json!({ "command": out }),
        }
    }
}
