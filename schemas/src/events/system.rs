//! Rejections and component lifecycle. Entity token: the component that publishes.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{sample_ulid, DomainEvent};
use crate::ids::{CommandId, JobId};

/// Why a command was rejected, typed so edges can map it (HTTP 400/403/404/409/413).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RejectKind {
    /// The payload is not valid MessagePack for any command, or its subject is unknown.
    Malformed,
    /// The payload is larger than allowed.
    TooLarge,
    /// A field has an invalid value.
    Invalid,
    /// The thing the command names does not exist.
    NotFound,
    /// The actor may not do this.
    Forbidden,
    /// The same work is already queued or running.
    Duplicate {
        /// The job already doing it.
        job: JobId,
    },
    /// The command conflicts with current state (e.g. adding a host that exists).
    Conflict,
}

/// System facts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", content = "data", rename_all = "snake_case")]
pub enum SystemEvent {
    /// A command was not carried out.
    CommandRejected {
        /// The component that rejected it.
        component: String,
        /// The command, when its id could be read.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        command: Option<CommandId>,
        /// The subject it arrived on.
        subject: String,
        /// The reason, typed.
        reason: RejectKind,
        /// What was wrong and what was expected, for people.
        message: String,
    },
    /// A component started.
    ComponentStarted {
        /// Its name.
        component: String,
        /// Its version.
        version: String,
    },
    /// Ingest's committed log head, published periodically so that a copy of the log can be
    /// checked against anchors held elsewhere (the stream, other replicas, the log itself:
    /// `fleetctl log verify` checks every anchor it finds against the chain).
    HeadAnchored {
        /// The component that publishes (`ingest`).
        component: String,
        /// The identity of the log file whose head this is (checkpoint digests are per file).
        log: String,
        /// The committed head sequence.
        seq: u64,
        /// Entry `seq`'s hash (hex; 64 zeros for an empty log).
        hash: String,
        /// The sequence of the newest projection snapshot (0 when there is none).
        checkpoint_seq: u64,
        /// That snapshot's checkpoint digest (hex; empty when there is no snapshot).
        checkpoint: String,
    },
}

impl DomainEvent for SystemEvent {
    fn entity(&self) -> String {
        match self {
            Self::CommandRejected { component, .. }
            | Self::ComponentStarted { component, .. }
            | Self::HeadAnchored { component, .. } => component.clone(),
        }
    }
    fn type_name(&self) -> &'static str {
        match self {
            Self::CommandRejected { .. } => "command_rejected",
            Self::ComponentStarted { .. } => "component_started",
            Self::HeadAnchored { .. } => "head_anchored",
        }
    }
    fn samples() -> Vec<Self> {
        vec![
            Self::CommandRejected {
                component: "ingest".into(),
                command: Some(CommandId(sample_ulid(1))),
                subject: "fleet.cmd.host.add".into(),
                reason: RejectKind::Conflict,
                message: "host web-1 already exists".into(),
            },
            Self::CommandRejected {
                component: "executor".into(),
                command: Some(CommandId(sample_ulid(2))),
                subject: "fleet.cmd.job.run_action".into(),
                reason: RejectKind::Duplicate {
                    job: JobId(sample_ulid(3)),
                },
                message: "restart of web-1:nginx is already running as job …".into(),
            },
            Self::ComponentStarted {
                component: "ingest".into(),
                version: "0.1.0".into(),
            },
            Self::HeadAnchored {
                component: "ingest".into(),
                log: "01KBQ4Z3V1D6W8Y0A2C4E6G8J0".into(),
                seq: 120_000,
                hash: "5f".repeat(32),
                checkpoint_seq: 120_000,
                checkpoint: "a7".repeat(32),
            },
        ]
    }
}
