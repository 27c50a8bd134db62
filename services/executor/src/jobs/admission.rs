//! Admission: who may ask, what a command resolves to on which hosts, the command line each
//! request becomes (allowlisted templates, tasks, verbs, batch, ad-hoc), and admitting the jobs —
//! all or none, duplicates of queued or running jobs rejected.

use fleetbus_schemas::commands::JobCommand;
use fleetbus_schemas::events::job::{JobEvent, JobRequest, RunType, TaskSpec};
use fleetbus_schemas::events::service::ServiceAction;
use fleetbus_schemas::{Actor, CommandEnvelope, HostId, JobId};
use tokio_util::sync::CancellationToken;
use tracing::info;

use super::{duplicate_key, After, Engine, Live, Plan, State, MAX_ADHOC};
use crate::error::{ExecError, Rejection};
use crate::inventory::Inventory;
use crate::journal::{Entry, JobRecord};
use crate::verbs::VerbPlan;
use crate::{batch, resources, tasks, templates};

/// What a job command resolves to.
pub(super) enum Resolved {
    Jobs(Vec<(HostId, JobRequest)>),
    Cancel(JobId),
    SaveTask(TaskSpec),
    DeleteTask(fleetbus_schemas::TaskId),
}

/// The one authorization policy (`fleetbus_runtime::authz`), as a rejection.
fn authorize(actor: &Actor, command: &JobCommand) -> Result<(), Rejection> {
    fleetbus_runtime::authz::authorize(actor, &fleetbus_schemas::Command::Job(command.clone()))
        .map_err(|e| Rejection::Forbidden(e.0))
}

fn invalid(e: impl Into<ExecError>) -> Rejection {
    Rejection::Invalid(e.into().to_string())
}

fn run_type(r: &JobRequest) -> RunType {
    match r {
        JobRequest::Action { .. } => RunType::Action,
        JobRequest::Task { .. } => RunType::Task,
        JobRequest::Batch { .. } => RunType::Batch,
        JobRequest::Verb { .. } => RunType::Verb,
        JobRequest::Adhoc { .. } => RunType::Adhoc,
        JobRequest::Resources => RunType::Task,
    }
}

fn summary(host: &HostId, r: &JobRequest) -> String {
    match r {
        JobRequest::Action {
            service, action, ..
        } => {
            format!("{} {host}:{service}", action.as_str())
        }
        JobRequest::Task { task, .. } => format!("task {task} on {host}"),
        JobRequest::Batch { script } => format!(
            "batch ({} steps) on {host}",
            batch::steps(script).map(|s| s.len()).unwrap_or(0)
        ),
        JobRequest::Verb { verb, args } => format!("{verb} {args} on {host}"),
        JobRequest::Adhoc { command } => {
            let short: String = command.chars().take(60).collect();
            format!("ad-hoc on {host}: {short}")
        }
        JobRequest::Resources => format!("resources of {host}"),
    }
}

fn action_idempotent(a: ServiceAction) -> bool {
    !matches!(a, ServiceAction::Restart | ServiceAction::Reload)
}

/// A plan that runs one line and does nothing with its output.
fn plain(line: String) -> Plan {
    Plan {
        line,
        after: After::Nothing,
        steps: Vec::new(),
    }
}

impl Engine {
    pub(super) fn resolve(
        &self,
        inv: &Inventory,
        actor: &Actor,
        cmd: &JobCommand,
    ) -> Result<Resolved, Rejection> {
        authorize(actor, cmd)?;
        match cmd {
            JobCommand::RunAction {
                host,
                service,
                action,
                lines,
            } => self.resolve_one(
                inv,
                host,
                JobRequest::Action {
                    service: service.clone(),
                    action: *action,
                    lines: *lines,
                },
            ),
            JobCommand::RunTask {
                task,
                params,
                targets,
            } => self.resolve_many(
                inv,
                targets,
                JobRequest::Task {
                    task: task.clone(),
                    params: params.clone(),
                },
            ),
            JobCommand::RunBatch { script, targets } => self.resolve_many(
                inv,
                targets,
                JobRequest::Batch {
                    script: script.clone(),
                },
            ),
            JobCommand::RunVerb {
                verb,
                args,
                targets,
            } => self.resolve_many(
                inv,
                targets,
                JobRequest::Verb {
                    verb: verb.clone(),
                    args: args.clone(),
                },
            ),
            JobCommand::RunAdhoc { host, command } => self.resolve_one(
                inv,
                host,
                JobRequest::Adhoc {
                    command: command.clone(),
                },
            ),
            JobCommand::ReadResources { host } => {
                self.resolve_one(inv, host, JobRequest::Resources)
            }
            JobCommand::Cancel { job } => Ok(Resolved::Cancel(*job)),
            JobCommand::SaveTask(spec) => {
                tasks::validate(spec).map_err(invalid)?;
                Ok(Resolved::SaveTask(spec.clone()))
            }
            JobCommand::DeleteTask { task } => {
                inv.task(task)?;
                Ok(Resolved::DeleteTask(task.clone()))
            }
        }
    }

    /// One request on one named host, validated by planning it.
    fn resolve_one(
        &self,
        inv: &Inventory,
        host: &HostId,
        req: JobRequest,
    ) -> Result<Resolved, Rejection> {
        self.plan(inv, host, &req)?;
        Ok(Resolved::Jobs(vec![(host.clone(), req)]))
    }

    /// One request on every selected host; any host that cannot run it rejects the command.
    fn resolve_many(
        &self,
        inv: &Inventory,
        targets: &fleetbus_schemas::commands::Targets,
        req: JobRequest,
    ) -> Result<Resolved, Rejection> {
        let hosts = inv.select(targets)?;
        let mut out = Vec::new();
        for h in hosts {
            self.plan(inv, &h, &req)?;
            out.push((h, req.clone()));
        }
        Ok(Resolved::Jobs(out))
    }

    /// Validates a request on a host and builds its command line.
    pub(super) fn plan(
        &self,
        inv: &Inventory,
        host: &HostId,
        req: &JobRequest,
    ) -> Result<Plan, Rejection> {
        let spec = inv.host(host)?;
        match req {
            JobRequest::Action {
                service,
                action,
                lines,
            } => {
                let s = inv.service(host, service, *action)?;
                let cmd = templates::action_command(s, *action, *lines).map_err(invalid)?;
                let after = match action {
                    ServiceAction::Status => After::Status(s.clone()),
                    ServiceAction::Start
                    | ServiceAction::Stop
                    | ServiceAction::Restart
                    | ServiceAction::Reload => After::FollowStatus(s.clone()),
                    _ => After::Nothing,
                };
                Ok(Plan {
                    line: cmd.line,
                    after,
                    steps: Vec::new(),
                })
            }
            JobRequest::Task { task, params } => {
                let t = inv.task(task)?;
                Ok(plain(tasks::render(t, params).map_err(invalid)?.line))
            }
            JobRequest::Batch { script } => plan_batch(host, spec.allow_adhoc, script),
            JobRequest::Verb { verb, args } => self.plan_verb(inv, host, verb, args),
            JobRequest::Adhoc { command } => plan_adhoc(host, spec.allow_adhoc, command),
            JobRequest::Resources => Ok(Plan {
                line: resources::COMMAND.to_string(),
                after: After::Resources,
                steps: Vec::new(),
            }),
        }
    }

    /// A verb is planned as the action, task or resources read it stands for.
    fn plan_verb(
        &self,
        inv: &Inventory,
        host: &HostId,
        verb: &str,
        args: &serde_json::Value,
    ) -> Result<Plan, Rejection> {
        match crate::verbs::plan(verb, args, &self.inner.verbs)? {
            VerbPlan::Action {
                service,
                action,
                lines,
            } => self.plan(
                inv,
                host,
                &JobRequest::Action {
                    service,
                    action,
                    lines,
                },
            ),
            VerbPlan::Resources => self.plan(inv, host, &JobRequest::Resources),
            VerbPlan::Task { task, params } => {
                self.plan(inv, host, &JobRequest::Task { task, params })
            }
            VerbPlan::Custom { spec, params } => {
                Ok(plain(tasks::render(&spec, &params).map_err(invalid)?.line))
            }
        }
    }

    fn idempotent(&self, inv: &Inventory, req: &JobRequest) -> bool {
        match req {
            JobRequest::Action { action, .. } => action_idempotent(*action),
            JobRequest::Task { task, .. } => inv.tasks.get(task).is_some_and(|t| t.idempotent),
            JobRequest::Verb { verb, args } => {
                match crate::verbs::plan(verb, args, &self.inner.verbs) {
                    Ok(VerbPlan::Action { action, .. }) => action_idempotent(action),
                    Ok(VerbPlan::Resources) => true,
                    Ok(VerbPlan::Task { task, .. }) => {
                        inv.tasks.get(&task).is_some_and(|t| t.idempotent)
                    }
                    Ok(VerbPlan::Custom { spec, .. }) => spec.idempotent,
                    Err(_) => false,
                }
            }
            JobRequest::Batch { .. } | JobRequest::Adhoc { .. } => false,
            JobRequest::Resources => true,
        }
    }

    /// Admits the jobs, tells their queue positions, journals them and starts what may start.
    pub(super) async fn schedule(
        &self,
        env: &CommandEnvelope,
        subject: &str,
        jobs: Vec<(HostId, JobRequest)>,
    ) -> Result<(), ExecError> {
        let admitted = {
            let mut st = self.lock();
            self.admit(&mut st, env, jobs)
        };
        let admitted = match admitted {
            Ok(a) => a,
            Err(r) => return self.reject(env, subject, r).await,
        };
        for (record, position) in &admitted {
            self.publish_scheduled(record, *position).await?;
            self.inner.journal.write(Entry::Scheduled(record.clone()));
            info!(job = %record.job, host = %record.host, summary = %record.summary, position, "job scheduled");
        }
        self.pump();
        Ok(())
    }

    /// Admit all or none: a duplicate on any target rejects the command. Returns the new records
    /// with their queue positions.
    fn admit(
        &self,
        st: &mut State,
        env: &CommandEnvelope,
        jobs: Vec<(HostId, JobRequest)>,
    ) -> Result<Vec<(JobRecord, u32)>, Rejection> {
        let keyed: Vec<(HostId, JobRequest, String)> = jobs
            .into_iter()
            .map(|(h, r)| {
                let key = duplicate_key(&h, &r);
                (h, r, key)
            })
            .collect();
        if let Some((job, live)) = keyed
            .iter()
            .find_map(|(_, _, k)| st.jobs.iter().find(|(_, l)| &l.key == k))
        {
            return Err(Rejection::Duplicate {
                job: *job,
                message: format!(
                    "{} is already {} as job {job}",
                    live.record.summary,
                    if live.running { "running" } else { "queued" }
                ),
            });
        }
        let mut out = Vec::new();
        for (host, request, key) in keyed {
            let record = JobRecord {
                job: JobId::new(),
                causation: env.id,
                actor: env.actor.clone(),
                run_type: run_type(&request),
                summary: summary(&host, &request),
                idempotent: self.idempotent(&st.inventory, &request),
                host,
                request,
            };
            st.jobs.insert(
                record.job,
                Live {
                    record: record.clone(),
                    key,
                    cancel: CancellationToken::new(),
                    running: false,
                },
            );
            st.queue.push_back(record.job);
            out.push(record);
        }
        let positions = super::queue::positions(st, &self.inner.limits);
        Ok(out
            .into_iter()
            .map(|r| {
                let p = positions.get(&r.job).copied().unwrap_or(0);
                (r, p)
            })
            .collect())
    }

    async fn publish_scheduled(&self, record: &JobRecord, position: u32) -> Result<(), ExecError> {
        self.inner
            .bus
            .event(
                &record.actor,
                Some(record.causation),
                fleetbus_schemas::Event::Job(JobEvent::Scheduled {
                    job: record.job,
                    host: record.host.clone(),
                    run_type: record.run_type,
                    summary: record.summary.clone(),
                    queue_position: position,
                    request: record.request.clone(),
                    idempotent: record.idempotent,
                }),
            )
            .await
            .map(|_| ())
    }
}

fn plan_batch(host: &HostId, allow_adhoc: bool, script: &str) -> Result<Plan, Rejection> {
    if !allow_adhoc {
        return Err(Rejection::Forbidden(format!(
            "host {host} does not allow ad-hoc commands or batch scripts"
        )));
    }
    let steps = batch::steps(script).map_err(invalid)?;
    let line = batch::script(&steps).map_err(invalid)?;
    Ok(Plan {
        line,
        after: After::Nothing,
        steps,
    })
}

fn plan_adhoc(host: &HostId, allow_adhoc: bool, command: &str) -> Result<Plan, Rejection> {
    if !allow_adhoc {
        return Err(Rejection::Forbidden(format!(
            "host {host} does not allow ad-hoc commands"
        )));
    }
    if command.trim().is_empty() || command.len() > MAX_ADHOC || command.contains('\0') {
        return Err(Rejection::Invalid(format!(
            "ad-hoc command must be non-empty, without NUL, at most {MAX_ADHOC} bytes"
        )));
    }
    Ok(plain(command.to_string()))
}
