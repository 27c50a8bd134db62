//! Who may send which command: the role each command needs, declared once ([`policy`]),
//! checked by one function ([`authorize`]) with one rejection ([`Forbidden`]). Every service
//! that takes commands (ingest, executor, scheduler, notifier) asks here.

use fleetbus_schemas::commands::{
    AlertCommand, CheckCommand, ConfigCommand, JobCommand, NotifyCommand, ScheduleCommand,
};
use fleetbus_schemas::{Actor, ActorKind, Command, UserRole};

/// What a command needs of its sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// The lowest user role that may send it.
    pub role: UserRole,
    /// Whether services (scheduler, notifier, …) may send it on their own authority.
    pub services: bool,
    /// What it does, for the rejection message (`run ad-hoc commands`).
    pub what: &'static str,
}

/// A sender that may not send a command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Forbidden(pub String);

const fn allow(role: UserRole, what: &'static str) -> Policy {
    Policy {
        role,
        services: true,
        what,
    }
}

/// Only people may do these, never a service on its own authority.
const fn people(role: UserRole, what: &'static str) -> Policy {
    Policy {
        role,
        services: false,
        what,
    }
}

/// The one table: the role every command needs.
pub fn policy(command: &Command) -> Policy {
    use UserRole::{Admin, Operator};
    match command {
        Command::Host(_) => allow(Admin, "manage hosts"),
        Command::Agent(_) => allow(Admin, "manage agents"),
        Command::User(_) => allow(Admin, "manage users"),
        Command::Alert(AlertCommand::Ack { .. } | AlertCommand::Resolve { .. }) => {
            allow(Operator, "acknowledge or resolve alerts")
        }
        Command::Config(ConfigCommand::Push { .. }) => allow(Operator, "push configs"),
        Command::Config(_) => allow(Admin, "change configs"),
        Command::Job(c) => match c {
            JobCommand::RunAction { .. } => allow(Operator, "run service actions"),
            JobCommand::RunTask { .. } => allow(Operator, "run tasks"),
            JobCommand::RunBatch { .. } => {
                people(Admin, "run batch scripts (they are ad-hoc commands)")
            }
            JobCommand::RunVerb { .. } => allow(Operator, "run privileged verbs"),
            JobCommand::RunAdhoc { .. } => people(Admin, "run ad-hoc commands"),
            JobCommand::ReadResources { .. } => allow(Operator, "read host resources"),
            JobCommand::Cancel { .. } => allow(Operator, "cancel jobs"),
            JobCommand::SaveTask(_) => people(Admin, "define tasks"),
            JobCommand::DeleteTask { .. } => people(Admin, "delete tasks"),
        },
        Command::Schedule(c) => match c {
            ScheduleCommand::Create(_) => allow(Admin, "create schedules"),
            ScheduleCommand::Update(_) => allow(Admin, "change schedules"),
            ScheduleCommand::Pause { .. } => allow(Operator, "pause schedules"),
            ScheduleCommand::Resume { .. } => allow(Operator, "resume schedules"),
            ScheduleCommand::Delete { .. } => allow(Admin, "delete schedules"),
        },
        Command::Check(c) => match c {
            CheckCommand::Define(_) => allow(Admin, "define checks"),
            CheckCommand::Delete { .. } => allow(Admin, "delete checks"),
            CheckCommand::Pause { .. } | CheckCommand::Resume { .. } => {
                allow(Operator, "pause or resume checks")
            }
        },
        Command::Notify(NotifyCommand::SetMute(_) | NotifyCommand::DeleteMute { .. }) => {
            allow(Operator, "manage mutes")
        }
        Command::Notify(_) => allow(Admin, "manage notification rules, recipients and channels"),
    }
}

/// May `actor` send `command`? Agents never send commands; services may unless the table says
/// only people may; users need at least the table's role.
pub fn authorize(actor: &Actor, command: &Command) -> Result<(), Forbidden> {
    let need = policy(command);
    let refusal = match actor.kind {
        ActorKind::Service if need.services => return Ok(()),
        ActorKind::User if actor.role.is_some_and(|r| r >= need.role) => return Ok(()),
        ActorKind::Service => format!(
            "service '{}' may not {}: only users with the {:?} role may",
            actor.name, need.what, need.role
        ),
        ActorKind::Agent => format!(
            "agent '{}' may not {}: agents may not send commands",
            actor.name, need.what
        ),
        ActorKind::User => format!(
            "user '{}' ({}) may not {}: needs {:?} or higher",
            actor.name,
            actor
                .role
                .map(|r| format!("role {r:?}").to_lowercase())
                .unwrap_or_else(|| "no role".into()),
            need.what,
            need.role
        ),
    };
    Err(Forbidden(refusal))
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetbus_schemas::HostId;

    #[test]
    fn operators_run_actions_only_admins_run_adhoc_and_services_never_do() {
        let host: HostId = "web-1".parse().expect("id");
        let adhoc = Command::Job(JobCommand::RunAdhoc {
            host,
            command: "uptime".into(),
        });
        let cancel = Command::Job(JobCommand::Cancel {
            job: fleetbus_schemas::JobId::new(),
        });
        let op = Actor::user("olga", UserRole::Operator);
        assert!(authorize(&op, &cancel).is_ok());
        let no = authorize(&op, &adhoc).unwrap_err().0;
        assert!(no.contains("needs Admin"), "{no}");
        assert!(authorize(&Actor::user("ada", UserRole::Admin), &adhoc).is_ok());
        assert!(authorize(&Actor::service("scheduler"), &cancel).is_ok());
        assert!(authorize(&Actor::service("scheduler"), &adhoc).is_err());
        assert!(authorize(&Actor::agent("web-1"), &cancel).is_err());
        assert!(authorize(&Actor::user("vic", UserRole::Viewer), &cancel).is_err());
    }
}
