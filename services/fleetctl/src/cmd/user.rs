//! `fleetctl user add|passwd|role|rm|ls`: dashboard users. Passwords are hashed here with
//! argon2id (the same parameters the web service verifies with); only the PHC string travels,
//! on `fleet.sec.…`. A generated password is printed once and never stored.

use std::io::BufRead as _;

use argon2::password_hash::{PasswordHasher, SaltString};
use argon2::Argon2;
use base64::Engine as _;
use clap::Subcommand;
use fleetbus_schemas::commands::UserCommand;
use fleetbus_schemas::queries::{model, UsersQuery};
use fleetbus_schemas::{Command, UserName, UserRole};
use rand::RngCore as _;

use crate::{CtlError, Ctx};

/// `user` arguments.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    verb: Verb,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Role {
    Viewer,
    Operator,
    Admin,
}

impl From<Role> for UserRole {
    fn from(r: Role) -> UserRole {
        match r {
            Role::Viewer => UserRole::Viewer,
            Role::Operator => UserRole::Operator,
            Role::Admin => UserRole::Admin,
        }
    }
}

#[derive(Debug, Subcommand)]
enum Verb {
    /// Create a user. Without --password-stdin a password is generated and printed once.
    Add {
        /// Login name.
        user: UserName,
        /// Role.
        #[arg(long, value_enum, default_value = "viewer")]
        role: Role,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Set a new password (generated and printed once, or read with --password-stdin).
    Passwd {
        /// Login name.
        user: UserName,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Change a user's role.
    Role {
        /// Login name.
        user: UserName,
        /// New role.
        #[arg(value_enum)]
        role: Role,
    },
    /// Remove a user.
    Rm {
        /// Login name.
        user: UserName,
    },
    /// List users and roles.
    Ls,
}

/// The shortest password accepted (the dashboard enforces the same).
pub(crate) const MIN_PASSWORD_CHARS: usize = 12;

/// A random password: 18 bytes, base64url (24 characters).
pub(crate) fn generate_password() -> String {
    let mut bytes = [0u8; 18];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// argon2id PHC string (19 MiB, 2 passes, 1 lane).
pub(crate) fn hash_password(password: &str) -> Result<String, CtlError> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(CtlError::Usage(format!(
            "password must be at least {MIN_PASSWORD_CHARS} characters"
        )));
    }
    let mut salt = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt).map_err(|e| CtlError::Usage(e.to_string()))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| CtlError::Usage(format!("cannot hash password: {e}")))
}

/// The password to set: the first stdin line, or a generated one (returned to be shown).
fn password(from_stdin: bool) -> Result<(String, bool), CtlError> {
    if !from_stdin {
        return Ok((generate_password(), true));
    }
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| CtlError::Input {
            what: "password from stdin".into(),
            reason: e.to_string(),
        })?;
    Ok((line.trim_end_matches(['\r', '\n']).to_owned(), false))
}

/// Runs a `user` verb.
pub(crate) async fn run(ctx: &Ctx, args: Args) -> Result<(), CtlError> {
    match args.verb {
        Verb::Add {
            user,
            role,
            password_stdin,
        } => {
            let (pw, generated) = password(password_stdin)?;
            let password_hash = hash_password(&pw)?;
            let role: UserRole = role.into();
            let outcome = ctx
                .send(Command::User(UserCommand::Add {
                    user: user.clone(),
                    role,
                    password_hash,
                }))
                .await?;
            let shown = generated.then_some(pw);
            let human = match &shown {
                Some(pw) => format!("user {user} added ({role:?}); one-time password: {pw}"),
                None => format!("user {user} added ({role:?})"),
            };
            ctx.print(
                human,
                &serde_json::json!({"user": user, "role": role, "password": shown, "command_id": outcome.command.id.to_string()}),
            );
        }
        Verb::Passwd {
            user,
            password_stdin,
        } => {
            let (pw, generated) = password(password_stdin)?;
            let password_hash = hash_password(&pw)?;
            let outcome = ctx
                .send(Command::User(UserCommand::SetPassword {
                    user: user.clone(),
                    password_hash,
                }))
                .await?;
            let shown = generated.then_some(pw);
            let human = match &shown {
                Some(pw) => format!("password of {user} changed; one-time password: {pw}"),
                None => format!("password of {user} changed"),
            };
            ctx.print(
                human,
                &serde_json::json!({"user": user, "password": shown, "command_id": outcome.command.id.to_string()}),
            );
        }
        Verb::Role { user, role } => {
            let role: UserRole = role.into();
            let outcome = ctx
                .send(Command::User(UserCommand::SetRole {
                    user: user.clone(),
                    role,
                }))
                .await?;
            ctx.print(
                format!("{user} is now {role:?}"),
                &serde_json::json!({"user": user, "role": role, "command_id": outcome.command.id.to_string()}),
            );
        }
        Verb::Rm { user } => {
            let outcome = ctx
                .send(Command::User(UserCommand::Remove { user: user.clone() }))
                .await?;
            ctx.print(
                format!("user {user} removed"),
                &serde_json::json!({"user": user, "command_id": outcome.command.id.to_string()}),
            );
        }
        Verb::Ls => {
            let users = ctx.query(model::USERS, &UsersQuery {}).await?;
            let mut human = String::new();
            if let Some(map) = users.as_object() {
                for (name, record) in map {
                    let role = record.get("role").and_then(|r| r.as_str()).unwrap_or("?");
                    human.push_str(&format!("{name}\t{role}\n"));
                }
            }
            ctx.print(human, &users);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_argon2id_and_short_passwords_are_refused() {
        let phc = hash_password("a long enough password").expect("hash");
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(matches!(hash_password("short"), Err(CtlError::Usage(_))));
        let a = generate_password();
        assert!(a.chars().count() >= MIN_PASSWORD_CHARS);
        assert_ne!(a, generate_password());
    }
}
