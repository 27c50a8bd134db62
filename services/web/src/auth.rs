//! Who is asking: argon2id passwords, server-side sessions (random token, stored hashed),
//! CSRF synchronizer tokens, API bearer tokens, and the role checks. Login throttling is in
//! [`crate::throttle`].

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use fleetbus_schemas::{Actor, UserRole};
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::time::Instant;

/// The session cookie. `__Host-` binds it to this origin, HTTPS (or localhost) and path `/`.
pub const SESSION_COOKIE: &str = "__Host-fleetbus-session";
/// The pre-login cookie holding the login form's CSRF token (double submit).
pub const LOGIN_COOKIE: &str = "__Host-fleetbus-login";
/// Header carrying the CSRF token for script requests.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// Form field carrying the CSRF token.
pub const CSRF_FIELD: &str = "_csrf";

/// 32 random bytes, URL-safe base64 (no padding).
pub fn random_token() -> String {
    use base64::Engine;
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// SHA-256 of a token: what is stored instead of it.
pub fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Constant-time string comparison (CSRF tokens).
pub fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// Hashes a password with argon2id (OWASP parameters: 19 MiB, 2 passes, 1 lane) into a PHC
/// string. CPU-heavy: call from `spawn_blocking`.
pub fn hash_password(password: &str) -> Result<String, String> {
    let mut salt = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt).map_err(|e| e.to_string())?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// Checks a password against a PHC string; false for anything unparsable. CPU-heavy.
pub fn verify_password(password: &str, phc: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(parsed) if parsed.algorithm.as_str() == "argon2id" => Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        _ => false,
    }
}

/// Rules for new passwords (the same for the dashboard and fleetctl).
pub fn check_password_rules(password: &str) -> Result<(), &'static str> {
    if password.chars().count() < 12 {
        return Err("password must be at least 12 characters");
    }
    if password.len() > 1024 {
        return Err("password must be at most 1024 bytes");
    }
    Ok(())
}

/// The minimum role for a kind of request.
pub fn role_name(role: UserRole) -> &'static str {
    match role {
        UserRole::Viewer => "viewer",
        UserRole::Operator => "operator",
        UserRole::Admin => "admin",
    }
}

/// Parses `viewer`, `operator` or `admin`.
pub fn parse_role(s: &str) -> Option<UserRole> {
    match s {
        "viewer" => Some(UserRole::Viewer),
        "operator" => Some(UserRole::Operator),
        "admin" => Some(UserRole::Admin),
        _ => None,
    }
}

/// How a request was authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Via {
    /// A browser session with its CSRF token.
    Session {
        /// The synchronizer token forms and scripts must echo.
        csrf: String,
    },
    /// An API bearer token (no cookies, so no CSRF).
    Token {
        /// The token's public id.
        id: String,
    },
}

/// An authenticated principal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// User name (for tokens: `token:<id>` of the user who issued it).
    pub user: String,
    /// The role it acts with.
    pub role: UserRole,
    /// How it authenticated.
    pub via: Via,
}

impl Principal {
    /// The actor named on commands.
    pub fn actor(&self) -> Actor {
        Actor::user(&self.user, self.role)
    }
    /// True when the principal has at least `role`.
    pub fn can(&self, role: UserRole) -> bool {
        self.role >= role
    }
    /// The CSRF token to embed in forms (empty for tokens).
    pub fn csrf(&self) -> &str {
        match &self.via {
            Via::Session { csrf } => csrf,
            Via::Token { .. } => "",
        }
    }
}

#[derive(Debug, Clone)]
struct Session {
    user: String,
    role: UserRole,
    csrf: String,
    created: Instant,
    last_seen: Instant,
}

/// Server-side sessions keyed by the SHA-256 of their token.
pub struct Sessions {
    map: Mutex<HashMap<[u8; 32], Session>>,
    idle: Duration,
    absolute: Duration,
}

impl Sessions {
    /// An empty store with the given timeouts.
    pub fn new(idle: Duration, absolute: Duration) -> Sessions {
        Sessions {
            map: Mutex::new(HashMap::new()),
            idle,
            absolute,
        }
    }

    /// Starts a session; returns its token (for the cookie only).
    pub fn create(&self, user: &str, role: UserRole) -> String {
        let token = random_token();
        let now = Instant::now();
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        // Expired sessions are dropped here rather than by a timer task.
        map.retain(|_, s| !self.expired(s, now));
        map.insert(
            token_hash(&token),
            Session {
                user: user.to_owned(),
                role,
                csrf: random_token(),
                created: now,
                last_seen: now,
            },
        );
        token
    }

    fn expired(&self, s: &Session, now: Instant) -> bool {
        now.duration_since(s.last_seen) > self.idle || now.duration_since(s.created) > self.absolute
    }

    /// The principal of a live session; refreshes its idle timer.
    pub fn lookup(&self, token: &str) -> Option<Principal> {
        let key = token_hash(token);
        let now = Instant::now();
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let session = map.get_mut(&key)?;
        if self.expired(session, now) {
            map.remove(&key);
            return None;
        }
        session.last_seen = now;
        Some(Principal {
            user: session.user.clone(),
            role: session.role,
            via: Via::Session {
                csrf: session.csrf.clone(),
            },
        })
    }

    /// Ends a session.
    pub fn remove(&self, token: &str) {
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&token_hash(token));
    }

    /// Applies a role change to the user's live sessions.
    pub fn set_role(&self, user: &str, role: UserRole) {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        for s in map.values_mut().filter(|s| s.user == user) {
            s.role = role;
        }
    }

    /// Ends every session of a user (removed, or password changed elsewhere).
    pub fn remove_user(&self, user: &str) {
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|_, s| s.user != user);
    }

    /// Number of live sessions.
    pub fn len(&self) -> usize {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argon2id_round_trip_and_rejects_other_algorithms() {
        let phc = hash_password("correct horse battery").expect("hash");
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(verify_password("correct horse battery", &phc));
        assert!(!verify_password("wrong horse battery", &phc));
        assert!(!verify_password("x", "not a phc string"));
        let argon2i = phc.replacen("argon2id", "argon2i", 1);
        assert!(!verify_password("correct horse battery", &argon2i));
    }

    #[test]
    fn tokens_are_random_and_stored_hashed() {
        let a = random_token();
        let b = random_token();
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
        assert_ne!(hex::encode(token_hash(&a)), a);
    }

    #[tokio::test(start_paused = true)]
    async fn sessions_expire_when_idle_and_absolutely() {
        let s = Sessions::new(Duration::from_secs(60), Duration::from_secs(150));
        let t = s.create("ann", UserRole::Operator);
        assert_eq!(s.lookup(&t).map(|p| p.role), Some(UserRole::Operator));
        tokio::time::advance(Duration::from_secs(50)).await;
        assert!(s.lookup(&t).is_some(), "activity refreshes the idle timer");
        tokio::time::advance(Duration::from_secs(50)).await;
        assert!(s.lookup(&t).is_some());
        tokio::time::advance(Duration::from_secs(55)).await;
        assert!(s.lookup(&t).is_none(), "absolute timeout passed");

        let t = s.create("ann", UserRole::Viewer);
        tokio::time::advance(Duration::from_secs(61)).await;
        assert!(s.lookup(&t).is_none(), "idle timeout passed");

        let t = s.create("bob", UserRole::Admin);
        s.set_role("bob", UserRole::Viewer);
        assert_eq!(s.lookup(&t).map(|p| p.role), Some(UserRole::Viewer));
        s.remove_user("bob");
        assert!(s.lookup(&t).is_none());
        let t = s.create("bob", UserRole::Admin);
        s.remove(&t);
        assert!(s.lookup(&t).is_none(), "logout ends the session");
    }
}
