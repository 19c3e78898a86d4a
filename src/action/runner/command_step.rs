//! The command effect.

use super::*;

impl ActionRunner {
    pub(super) async fn step_command(&self, run: &mut Run, step: usize, argv: &[String]) -> Step {
        let shown = argv.join(" ");
        if run.dry_run {
            return Step::DryRun(format!("would run {shown}"));
        }
        let intent = self.new_intent(
            run,
            step,
            IntentKind::Command,
            IntentDetail {
                argv: argv.to_vec(),
                ..IntentDetail::for_alert(run.trigger.alert.as_ref())
            },
        );
        let id = match self.write_intent(&intent).await {
            Ok(id) => id,
            Err(failed) => return failed,
        };
        self.audit(
            run,
            Decision::Started,
            &format!("running {shown}"),
            Some(id),
            None,
            None,
            self.alert_evidence(run).await,
        )
        .await;
        self.event(
            run,
            Phase::Started,
            "running_command",
            None,
            None,
            format!("running {shown} because {}", run.because()),
            "Then verifying.".into(),
        )
        .await;
        self.set_intent(id, IntentState::Applied, None, None).await;
        let env = command::alert_env(run.trigger.alert.as_ref(), run.service.as_deref());
        let out = command::run(argv, &env, run.action.timeout.0).await;
        let evidence = json!({ "command": out });
        if out.success {
            self.set_intent(id, IntentState::Verifying, None, None)
                .await;
            self.audit(
                run,
                Decision::Done,
                "command exited 0",
                Some(id),
                None,
                None,
                evidence,
            )
            .await;
            Step::Done {
                intent_id: id,
                from: None,
                to: None,
            }
        } else {
            let detail = match (&out.error, out.exit_code) {
                (Some(e), _) => format!("{shown}: {e}"),
                (None, Some(code)) => format!("{shown} exited {code}"),
                (None, None) => format!("{shown} was killed by a signal"),
            };
            self.set_intent(id, IntentState::Failed, None, Some(detail.clone()))
                .await;
            self.audit(
                run,
                Decision::Failed,
                &detail,
                Some(id),
                None,
                None,
                evidence,
            )
            .await;
            Step::Failed(detail)
        }
    }
}
