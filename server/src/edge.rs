//! What every edge (`/ws`, Socket.IO, REST) needs from an HTTP request and a connection, in one
//! place: the bearer token, query parameters, the peer address, and the per-connection rate
//! limiter.

use std::{net::IpAddr, num::NonZeroU32};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

/// The peer address of the TCP connection (or, behind a trusted proxy, of the client), put into
/// each request's extensions by the accept loop so that edges can apply per-address limits.
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub IpAddr);

/// The value of query parameter `name` (not percent-decoded: tokens are URL-safe).
pub fn query_param<'a>(query: Option<&'a str>, name: &str) -> Option<&'a str> {
    query?.split('&').find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
}

/// The token of an `Authorization: Bearer …` header.
pub fn bearer(headers: &hyper::HeaderMap) -> Option<&str> {
    let v = headers.get(hyper::header::AUTHORIZATION)?.to_str().ok()?;
    v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")).map(str::trim)
}

/// A connection's own frame (or event) rate: `per_sec` sustained, bursts up to twice that.
pub struct ConnLimiter {
    limiter: DefaultDirectRateLimiter,
    per_sec: u32,
}

impl ConnLimiter {
    pub fn new(per_sec: u32) -> ConnLimiter {
        let sustained = NonZeroU32::new(per_sec.max(1)).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(per_sec.saturating_mul(2).max(1)).unwrap_or(NonZeroU32::MIN);
        ConnLimiter { limiter: RateLimiter::direct(Quota::per_second(sustained).allow_burst(burst)), per_sec }
    }

    /// Counts one frame; the `RATE_LIMITED` error when over the rate.
    pub fn check(&self) -> Result<(), unisono_core::protocol::ErrorBody> {
        self.limiter.check().map_err(|_| {
            unisono_core::protocol::ErrorBody::new(
                unisono_core::protocol::ErrorCode::RateLimited,
                format!("more than {} frames per second", self.per_sec),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parameters_and_bearer_tokens() {
        assert_eq!(query_param(Some("a=1&token=xyz&b"), "token"), Some("xyz"));
        assert_eq!(query_param(Some("tokens=1"), "token"), None);
        assert_eq!(query_param(None, "token"), None);
        let mut h = hyper::HeaderMap::new();
        h.insert(hyper::header::AUTHORIZATION, hyper::header::HeaderValue::from_static("Bearer  abc "));
        assert_eq!(bearer(&h), Some("abc"));
        h.insert(hyper::header::AUTHORIZATION, hyper::header::HeaderValue::from_static("Basic abc"));
        assert_eq!(bearer(&h), None);
    }

    #[test]
    fn the_limiter_allows_a_burst_of_twice_the_rate() {
        let l = ConnLimiter::new(5);
        let allowed = (0..20).filter(|_| l.check().is_ok()).count();
        assert_eq!(allowed, 10);
        assert_eq!(l.check().map_err(|e| e.code), Err(unisono_core::protocol::ErrorCode::RateLimited));
    }
}
