//! Room codes: short, case-insensitive, no ambiguous characters (no `0/O`, `1/I/L`, `U`).
//!
//! Generation takes the random source as a parameter so the core stays deterministic; the
//! server feeds it from the OS RNG. 30 symbols over 6 characters give 729 million codes, so a
//! blind guess at a few open rooms has negligible odds, and join attempts are rate-limited.

use crate::prelude::*;

/// The code alphabet: digits and capitals without the look-alikes `0 O 1 I L` and without `U`.
pub const ALPHABET: &[u8; 30] = b"23456789ABCDEFGHJKMNPQRSTVWXYZ";
/// Default code length.
pub const CODE_LEN: usize = 6;

/// Builds a code from random words: `next_u32` is called once per character.
pub fn generate(mut next_u32: impl FnMut() -> u32) -> String {
    // Rejection sampling keeps the distribution uniform over the alphabet.
    const N: u32 = ALPHABET.len() as u32;
    const LIMIT: u32 = u32::MAX - (u32::MAX % N);
    (0..CODE_LEN)
        .map(|_| {
            loop {
                let r = next_u32();
                if r < LIMIT {
                    break ALPHABET[(r % N) as usize] as char;
                }
            }
        })
        .collect()
}

/// Normalizes a user-typed code (trims, uppercases). Returns `None` if it cannot be a code.
pub fn normalize(input: &str) -> Option<String> {
    let code: String = input.trim().to_ascii_uppercase();
    if code.len() != CODE_LEN || !code.bytes().all(|b| ALPHABET.contains(&b)) {
        return None;
    }
    Some(code)
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn generated_codes_normalize_to_themselves() {
        let mut x = 12345u32;
        let mut rng = || {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x
        };
        for _ in 0..1000 {
            let c = generate(&mut rng);
            assert_eq!(normalize(&c.to_lowercase()).as_deref(), Some(c.as_str()));
            assert!(!c.contains(['0', 'O', '1', 'I', 'L', 'U']));
        }
        assert_eq!(normalize("abc"), None);
        assert_eq!(normalize("ABCDE0"), None);
    }
}
