//! Dashboard users. Password hashes travel only on `fleet.sec.…`. Owned by the web service.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{id, DomainEvent};
use crate::envelope::UserRole;
use crate::ids::UserName;

/// User facts. Entity token: the user name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", content = "data", rename_all = "snake_case")]
pub enum UserEvent {
    /// A user was created (secret: carries the argon2id hash).
    Added {
        /// Login name.
        user: UserName,
        /// Role.
        role: UserRole,
        /// argon2id PHC string. Credential material.
        password_hash: String,
    },
    /// A user's password changed (secret).
    PasswordChanged {
        /// Login name.
        user: UserName,
        /// argon2id PHC string. Credential material.
        password_hash: String,
    },
    /// A user's role changed.
    RoleChanged {
        /// Login name.
        user: UserName,
        /// New role.
        role: UserRole,
    },
    /// A user was removed.
    Removed {
        /// Login name.
        user: UserName,
    },
}

impl DomainEvent for UserEvent {
    fn entity(&self) -> String {
        match self {
            Self::Added { user, .. }
            | Self::PasswordChanged { user, .. }
            | Self::RoleChanged { user, .. }
            | Self::Removed { user } => user.to_string(),
        }
    }
    fn type_name(&self) -> &'static str {
        match self {
            Self::Added { .. } => "added",
            Self::PasswordChanged { .. } => "password_changed",
            Self::RoleChanged { .. } => "role_changed",
            Self::Removed { .. } => "removed",
        }
    }
    fn is_secret(&self) -> bool {
        matches!(self, Self::Added { .. } | Self::PasswordChanged { .. })
    }
    fn samples() -> Vec<Self> {
        vec![
            Self::Added {
                user: id("admin"),
                role: UserRole::Admin,
                password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
            },
            Self::PasswordChanged {
                user: id("admin"),
                password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
            },
            Self::RoleChanged {
                user: id("ops"),
                role: UserRole::Operator,
            },
            Self::Removed { user: id("ops") },
        ]
    }
}
