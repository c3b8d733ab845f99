//! Who a connection is: a [`Principal`] (subject, tenant, role) from an HS256 JWT, or the
//! anonymous principal when the configuration allows it.
//!
//! Every edge (`/ws`, Socket.IO, REST) authenticates through [`Auth::authenticate`], so the
//! rules are the same everywhere: failed attempts are logged with the peer address and reason,
//! counted in `unisono_auth_failures_total{edge,reason}`, and an address with too many failures
//! in the current minute is refused without even checking its token.
//!
//! The secret comes from `--jwt-secret` / `UNISONO_JWT_SECRET`; without one, a random secret is
//! created once in the data folder (`jwt-secret`), so `unisono token` and `unisono serve` agree
//! on a local machine with no configuration at all.

use std::{
    collections::HashMap,
    fmt,
    net::IpAddr,
    path::Path,
    sync::Mutex,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, errors::ErrorKind};
use serde::{Deserialize, Serialize};
use unisono_core::room::DEFAULT_TENANT;

use crate::metrics::METRICS;

/// What a token allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// A device (seed 003's App Player): namespace `/players` only.
    Player,
    /// Controls its tenant's devices and sees its tenant's state.
    Admin,
    /// Operator staff: cross-tenant metrics and connection counts, never payloads.
    Staff,
    /// A browser user: rooms and its tenant's broadcasts.
    User,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Player => "player",
            Role::Admin => "admin",
            Role::Staff => "staff",
            Role::User => "user",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Roles that may use rooms (every role but devices).
pub const ROOM_ROLES: &[Role] = &[Role::User, Role::Admin, Role::Staff];

/// The JWT claims Unisono reads and writes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub tenant: String,
    pub role: Role,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
}

/// An authenticated identity. Everything a connection touches is scoped to `tenant`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub sub: String,
    pub tenant: String,
    pub role: Role,
}

impl Principal {
    /// The identity of a connection without a token, when anonymous use is on.
    pub fn anonymous() -> Principal {
        Principal { sub: "anonymous".into(), tenant: DEFAULT_TENANT.into(), role: Role::User }
    }
}

/// Why a connection was refused. The `Display` text is what the client sees (CONNECT_ERROR
/// message, close reason or JSON error): it never says whether a tenant or subject exists.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("authentication required: send a token")]
    Missing,
    #[error("token expired")]
    Expired,
    #[error("invalid token")]
    Invalid,
    #[error("this token's role may not connect here")]
    WrongRole,
    #[error("too many failed authentication attempts; retry later")]
    RateLimited,
}

impl AuthError {
    /// Stable code for error frames and the metric label.
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::Missing => "AUTH_REQUIRED",
            AuthError::Expired => "TOKEN_EXPIRED",
            AuthError::Invalid => "INVALID_TOKEN",
            AuthError::WrongRole => "FORBIDDEN_ROLE",
            AuthError::RateLimited => "RATE_LIMITED",
        }
    }
}

/// Token verification and the per-address failure limit.
pub struct Auth {
    /// Key of the session resume tokens, derived from the same secret (`resume_key`).
    resume_key: [u8; 32],
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    anonymous: bool,
    failures_per_min: u32,
    failures: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

/// A purpose-bound key from the server secret (HMAC-SHA256 of the purpose), so that no two
/// uses of the secret share a key.
fn derive_key(secret: &[u8], purpose: &[u8]) -> [u8; 32] {
    hmac_sha256(secret, &[purpose])
}

/// HMAC-SHA256 of `parts`, each followed by a zero byte so that part boundaries are part of
/// the message (`["ab", "c"]` and `["a", "bc"]` differ).
pub fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    use hmac::{Hmac, Mac};
    let Ok(mut mac) = Hmac::<sha2::Sha256>::new_from_slice(key) else {
        unreachable!("HMAC accepts keys of any length")
    };
    for part in parts {
        mac.update(part);
        mac.update(&[0]);
    }
    mac.finalize().into_bytes().into()
}

/// Addresses remembered by the failure limiter before stale ones are swept.
const FAILURE_TABLE_SWEEP: usize = 10_000;

impl Auth {
    /// `anonymous`: whether a connection without a token gets [`Principal::anonymous`].
    /// `failures_per_min`: failed attempts an address may make per minute before it is refused.
    pub fn new(secret: &[u8], anonymous: bool, failures_per_min: u32) -> Auth {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 5;
        validation.set_required_spec_claims(&["exp", "sub"]);
        Auth {
            resume_key: derive_key(secret, b"unisono/resume-tokens/v1"),
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            anonymous,
            failures_per_min: failures_per_min.max(1),
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// The key that signs session resume tokens: stable across restarts with the secret, so a
    /// client resumes its session after one (engine/sessions.rs).
    pub fn resume_key(&self) -> [u8; 32] {
        self.resume_key
    }

    /// Signs a token valid for `ttl`.
    pub fn mint(
        &self,
        sub: &str,
        tenant: &str,
        role: Role,
        ttl: Duration,
    ) -> Result<String, jsonwebtoken::errors::Error> {
        let exp = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().saturating_add(ttl).as_secs();
        let claims = Claims { sub: sub.into(), tenant: tenant.into(), role, exp };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
    }

    /// Checks a token's signature and expiry.
    pub fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        let data =
            jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation).map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => AuthError::Expired,
                _ => AuthError::Invalid,
            })?;
        let c = data.claims;
        if c.tenant.is_empty() || c.sub.is_empty() {
            return Err(AuthError::Invalid);
        }
        Ok(Principal { sub: c.sub, tenant: c.tenant, role: c.role })
    }

    /// Authenticates a connection or request on `edge` (a metric label such as `ws`,
    /// `socketio:/admin`, `rest`). `allowed` lists the roles that may use it; anonymous use
    /// counts as [`Role::User`].
    pub fn authenticate(
        &self,
        token: Option<&str>,
        allowed: &[Role],
        ip: Option<IpAddr>,
        edge: &'static str,
    ) -> Result<Principal, AuthError> {
        if let Some(ip) = ip
            && self.blocked(ip)
        {
            return Err(self.fail(AuthError::RateLimited, ip, edge, false));
        }
        let result = match token.filter(|t| !t.is_empty()) {
            Some(t) => self.verify(t),
            // Anonymous use is a browser user: where users may not go, a token is required.
            None if self.anonymous && allowed.contains(&Role::User) => Ok(Principal::anonymous()),
            None => Err(AuthError::Missing),
        };
        let result = result.and_then(|p| if allowed.contains(&p.role) { Ok(p) } else { Err(AuthError::WrongRole) });
        result.map_err(|e| match ip {
            Some(ip) => self.fail(e, ip, edge, true),
            None => {
                METRICS.auth_failures.with_label_values(&[edge, e.code()]).inc();
                e
            }
        })
    }

    fn blocked(&self, ip: IpAddr) -> bool {
        let table = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        table
            .get(&ip)
            .is_some_and(|(since, n)| since.elapsed() < Duration::from_secs(60) && *n >= self.failures_per_min)
    }

    fn fail(&self, e: AuthError, ip: IpAddr, edge: &'static str, count: bool) -> AuthError {
        METRICS.auth_failures.with_label_values(&[edge, e.code()]).inc();
        tracing::warn!(%ip, edge, reason = e.code(), "authentication refused");
        if count {
            let mut table = self.failures.lock().unwrap_or_else(|e| e.into_inner());
            if table.len() >= FAILURE_TABLE_SWEEP {
                table.retain(|_, (since, _)| since.elapsed() < Duration::from_secs(60));
            }
            let entry = table.entry(ip).or_insert((Instant::now(), 0));
            if entry.0.elapsed() >= Duration::from_secs(60) {
                *entry = (Instant::now(), 0);
            }
            entry.1 += 1;
        }
        e
    }
}

/// The HS256 secret: `explicit` if given, else the one stored in `data_dir/jwt-secret`
/// (created with 32 random bytes on first use, readable by the owner only).
pub fn load_or_create_secret(explicit: Option<&str>, data_dir: &Path) -> std::io::Result<Vec<u8>> {
    if let Some(s) = explicit.filter(|s| !s.is_empty()) {
        return Ok(s.as_bytes().to_vec());
    }
    let path = data_dir.join("jwt-secret");
    match std::fs::read_to_string(&path) {
        Ok(s) if !s.trim().is_empty() => return Ok(s.trim().as_bytes().to_vec()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    std::fs::create_dir_all(data_dir)?;
    let secret: String = {
        use rand::Rng;
        let mut rng = rand::rng();
        (0..32).map(|_| format!("{:02x}", rng.random::<u8>())).collect()
    };
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    match opts.open(&path) {
        Ok(mut f) => {
            std::io::Write::write_all(&mut f, secret.as_bytes())?;
            f.sync_all()?;
            Ok(secret.into_bytes())
        }
        // Another process created it first: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            Ok(std::fs::read_to_string(&path)?.trim().as_bytes().to_vec())
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: &[Role] = &[Role::Player, Role::Admin, Role::Staff, Role::User];

    #[test]
    fn minted_tokens_verify_and_carry_the_tenant() {
        let auth = Auth::new(b"secret", false, 10);
        let t = auth.mint("alice", "acme", Role::Admin, Duration::from_secs(60)).expect("mint");
        let p = auth.verify(&t).expect("valid");
        assert_eq!(p, Principal { sub: "alice".into(), tenant: "acme".into(), role: Role::Admin });
    }

    #[test]
    fn wrong_secret_expired_and_wrong_role_are_refused() {
        let auth = Auth::new(b"secret", false, 10);
        let other = Auth::new(b"other", false, 10);
        let t = other.mint("a", "acme", Role::Admin, Duration::from_secs(60)).expect("mint");
        assert_eq!(auth.verify(&t), Err(AuthError::Invalid));
        let claims = Claims { sub: "a".into(), tenant: "acme".into(), role: Role::Admin, exp: 1_000 };
        let old = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(b"secret"))
            .expect("encode");
        assert_eq!(auth.verify(&old), Err(AuthError::Expired));
        let t = auth.mint("a", "acme", Role::User, Duration::from_secs(60)).expect("mint");
        assert_eq!(auth.authenticate(Some(&t), &[Role::Admin], None, "test"), Err(AuthError::WrongRole));
        assert_eq!(auth.authenticate(None, ALL, None, "test"), Err(AuthError::Missing));
    }

    #[test]
    fn anonymous_use_is_a_user_of_the_default_tenant() {
        let auth = Auth::new(b"secret", true, 10);
        assert_eq!(auth.authenticate(None, &[Role::User], None, "test"), Ok(Principal::anonymous()));
        assert_eq!(auth.authenticate(None, &[Role::Admin], None, "test"), Err(AuthError::Missing));
    }

    #[test]
    fn an_address_with_too_many_failures_is_refused_even_with_a_good_token() {
        let auth = Auth::new(b"secret", false, 3);
        let ip: IpAddr = "10.0.0.1".parse().expect("ip");
        for _ in 0..3 {
            assert_eq!(auth.authenticate(Some("junk"), ALL, Some(ip), "test"), Err(AuthError::Invalid));
        }
        let good = auth.mint("a", "acme", Role::User, Duration::from_secs(60)).expect("mint");
        assert_eq!(auth.authenticate(Some(&good), ALL, Some(ip), "test"), Err(AuthError::RateLimited));
        let other: IpAddr = "10.0.0.2".parse().expect("ip");
        assert!(auth.authenticate(Some(&good), ALL, Some(other), "test").is_ok());
    }

    #[test]
    fn the_generated_secret_is_stable_across_calls() {
        let dir = std::env::temp_dir().join(format!("unisono-secret-{}", std::process::id()));
        let a = load_or_create_secret(None, &dir).expect("create");
        let b = load_or_create_secret(None, &dir).expect("read");
        assert_eq!(a, b);
        assert_eq!(load_or_create_secret(Some("explicit"), &dir).expect("explicit"), b"explicit");
        let _ = std::fs::remove_dir_all(dir);
    }
}
