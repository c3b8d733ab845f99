//! Tokens a client sends: the JWT of every edge (`Auth::verify`) and the session resume token
//! (`engine::sessions::verify`, `/ws?resume=` and Socket.IO's `auth.resume`). Input: a token.
//! Beyond not panicking: no token the fuzzer makes is accepted (both are HMAC-signed with a key
//! it does not have), while a token signed with the key, built from the same input, is accepted
//! for its own principal only.
#![no_main]

use std::{sync::LazyLock, time::Duration};

use libfuzzer_sys::fuzz_target;
use unisono_server::{
    auth::{Auth, Principal, Role},
    engine::sessions,
};

static AUTH: LazyLock<Auth> = LazyLock::new(|| Auth::new(b"fuzzing secret, 32 bytes or more!", false, 1000));
const NOW: u64 = 1_790_000_000_000;

fuzz_target!(|data: &[u8]| {
    let Some(token) = unisono_fuzz::text(data) else { return };
    assert!(AUTH.verify(token).is_err(), "forged JWT accepted: {token}");
    let key = AUTH.resume_key();
    let alice = Principal { sub: "alice".into(), tenant: "acme".into(), role: Role::User };
    assert_eq!(sessions::verify(&key, token, &alice, NOW), None, "forged resume token accepted: {token}");

    // The same input as the parts of genuine tokens.
    let (sub, tenant) = token.split_once('\n').unwrap_or((token, "acme"));
    if !sub.is_empty() && !tenant.is_empty() {
        let jwt = AUTH.mint(sub, tenant, Role::Admin, Duration::from_secs(60)).expect("mint");
        let p = AUTH.verify(&jwt).expect("a minted JWT verifies");
        assert_eq!((p.sub.as_str(), p.tenant.as_str(), p.role), (sub, tenant, Role::Admin));
    }
    let id = sub;
    if !id.is_empty() && id.len() <= 64 && !id.contains('.') {
        let signed = sessions::sign(&key, id, &alice, NOW);
        assert_eq!(sessions::verify(&key, &signed, &alice, NOW + 1000), Some(id));
        let mallory = Principal { sub: "mallory".into(), ..alice.clone() };
        assert_eq!(sessions::verify(&key, &signed, &mallory, NOW), None, "a token is its principal's only");
    }
});
