//! SHA-256 of whole 4096-byte data blocks, two at a time where the CPU
//! has the SHA extensions. One SHA-256 is a chain of dependent rounds
//! that leaves the SHA unit idle most cycles; two independent blocks
//! interleaved keep it busy, and hashing file contents is most of a
//! cold commit's CPU time.

use sha2::{Digest as _, Sha256};

use super::Digest;

/// Size of an fs-verity data block, and of what these functions hash.
pub const BLOCK: usize = 4096;

/// SHA-256 of one block.
pub fn hash_one(block: &[u8; BLOCK]) -> Digest {
    Sha256::digest(block).into()
}

/// SHA-256 of two blocks.
pub fn hash_two(a: &[u8; BLOCK], b: &[u8; BLOCK]) -> [Digest; 2] {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("sha")
        && std::arch::is_x86_feature_detected!("sse4.1")
        && std::arch::is_x86_feature_detected!("ssse3")
    {
        // SAFETY: the CPU has every feature the function is compiled for.
        return unsafe { x86::hash_two(a, b) };
    }
    [hash_one(a), hash_one(b)]
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use core::arch::x86_64::*;

    use super::{Digest, BLOCK};

    const H: [u32; 8] = [
        0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab,
        0x5be0cd19,
    ];

    const K: [u32; 64] = [
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
        0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
        0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
        0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
        0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
        0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
        0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
        0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
        0xc67178f2,
    ];

    /// The padding after exactly one block: 0x80, zeros, then the message
    /// length in bits (32768) big-endian.
    const PADDING: [u8; 64] = {
        let mut p = [0u8; 64];
        p[0] = 0x80;
        p[62] = 0x80;
        p
    };

    /// Two streams' working state, in the (ABEF, CDGH) form the SHA
    /// instructions take.
    #[derive(Clone, Copy)]
    struct State {
        abef: __m128i,
        cdgh: __m128i,
    }

    /// Four rounds of both streams on message words `wa` and `wb`
    /// (constants at `K[4 * i..]`).
    macro_rules! rounds4 {
        ($a:ident, $b:ident, $wa:expr, $wb:expr, $i:expr) => {{
            let k = _mm_loadu_si128(K.as_ptr().add(4 * $i) as *const __m128i);
            let ta = _mm_add_epi32($wa, k);
            let tb = _mm_add_epi32($wb, k);
            $a.cdgh = _mm_sha256rnds2_epu32($a.cdgh, $a.abef, ta);
            $b.cdgh = _mm_sha256rnds2_epu32($b.cdgh, $b.abef, tb);
            $a.abef = _mm_sha256rnds2_epu32($a.abef, $a.cdgh, _mm_shuffle_epi32(ta, 0x0E));
            $b.abef = _mm_sha256rnds2_epu32($b.abef, $b.cdgh, _mm_shuffle_epi32(tb, 0x0E));
        }};
    }

    /// The next four message words from the last sixteen.
    #[inline(always)]
    unsafe fn schedule(w0: __m128i, w1: __m128i, w2: __m128i, w3: __m128i) -> __m128i {
        let t = _mm_add_epi32(_mm_sha256msg1_epu32(w0, w1), _mm_alignr_epi8(w3, w2, 4));
        _mm_sha256msg2_epu32(t, w3)
    }

    /// The sixteen message words of a 64-byte block, as four vectors.
    #[inline(always)]
    unsafe fn load(block: *const u8) -> [__m128i; 4] {
        let swap = _mm_set_epi64x(0x0C0D_0E0F_0809_0A0B, 0x0405_0607_0001_0203);
        let p = block as *const __m128i;
        [
            _mm_shuffle_epi8(_mm_loadu_si128(p), swap),
            _mm_shuffle_epi8(_mm_loadu_si128(p.add(1)), swap),
            _mm_shuffle_epi8(_mm_loadu_si128(p.add(2)), swap),
            _mm_shuffle_epi8(_mm_loadu_si128(p.add(3)), swap),
        ]
    }

    /// One 64-byte block of each stream.
    #[inline(always)]
    unsafe fn compress(a: &mut State, b: &mut State, block_a: *const u8, block_b: *const u8) {
        let (a0, b0) = (*a, *b);
        let [mut wa0, mut wa1, mut wa2, mut wa3] = load(block_a);
        let [mut wb0, mut wb1, mut wb2, mut wb3] = load(block_b);
        rounds4!(a, b, wa0, wb0, 0);
        rounds4!(a, b, wa1, wb1, 1);
        rounds4!(a, b, wa2, wb2, 2);
        rounds4!(a, b, wa3, wb3, 3);
        // Words 16..64, four at a time, each from the sixteen before.
        for i in 1..4 {
            wa0 = schedule(wa0, wa1, wa2, wa3);
            wb0 = schedule(wb0, wb1, wb2, wb3);
            rounds4!(a, b, wa0, wb0, 4 * i);
            wa1 = schedule(wa1, wa2, wa3, wa0);
            wb1 = schedule(wb1, wb2, wb3, wb0);
            rounds4!(a, b, wa1, wb1, 4 * i + 1);
            wa2 = schedule(wa2, wa3, wa0, wa1);
            wb2 = schedule(wb2, wb3, wb0, wb1);
            rounds4!(a, b, wa2, wb2, 4 * i + 2);
            wa3 = schedule(wa3, wa0, wa1, wa2);
            wb3 = schedule(wb3, wb0, wb1, wb2);
            rounds4!(a, b, wa3, wb3, 4 * i + 3);
        }
        a.abef = _mm_add_epi32(a.abef, a0.abef);
        a.cdgh = _mm_add_epi32(a.cdgh, a0.cdgh);
        b.abef = _mm_add_epi32(b.abef, b0.abef);
        b.cdgh = _mm_add_epi32(b.cdgh, b0.cdgh);
    }

    #[inline(always)]
    unsafe fn initial() -> State {
        let p = H.as_ptr() as *const __m128i;
        let dcba = _mm_loadu_si128(p);
        let efgh = _mm_shuffle_epi32(_mm_loadu_si128(p.add(1)), 0x1B);
        let cdab = _mm_shuffle_epi32(dcba, 0xB1);
        State {
            abef: _mm_alignr_epi8(cdab, efgh, 8),
            cdgh: _mm_blend_epi16(efgh, cdab, 0xF0),
        }
    }

    #[inline(always)]
    unsafe fn digest(state: State) -> Digest {
        let feba = _mm_shuffle_epi32(state.abef, 0x1B);
        let dchg = _mm_shuffle_epi32(state.cdgh, 0xB1);
        let mut words = [0u32; 8];
        let p = words.as_mut_ptr() as *mut __m128i;
        _mm_storeu_si128(p, _mm_blend_epi16(feba, dchg, 0xF0));
        _mm_storeu_si128(p.add(1), _mm_alignr_epi8(dchg, feba, 8));
        let mut out = [0u8; 32];
        for (bytes, word) in out.chunks_exact_mut(4).zip(words) {
            bytes.copy_from_slice(&word.to_be_bytes());
        }
        out
    }

    /// SHA-256 of `a` and of `b`, their rounds interleaved.
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    pub unsafe fn hash_two(a: &[u8; BLOCK], b: &[u8; BLOCK]) -> [Digest; 2] {
        let (mut sa, mut sb) = (initial(), initial());
        for offset in (0..BLOCK).step_by(64) {
            compress(
                &mut sa,
                &mut sb,
                a.as_ptr().add(offset),
                b.as_ptr().add(offset),
            );
        }
        compress(&mut sa, &mut sb, PADDING.as_ptr(), PADDING.as_ptr());
        [digest(sa), digest(sb)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_at_once_equal_one_at_a_time() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut block = || {
            let mut b = [0u8; BLOCK];
            for byte in b.iter_mut() {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                *byte = seed as u8;
            }
            b
        };
        for _ in 0..64 {
            let (a, b) = (block(), block());
            assert_eq!(hash_two(&a, &b), [hash_one(&a), hash_one(&b)]);
        }
        let zeros = [0u8; BLOCK];
        assert_eq!(
            hex::encode(hash_two(&zeros, &zeros)[1]),
            "ad7facb2586fc6e966c004d7d1d16b024f5805ff7cb47c7a85dabd8b48892ca7"
        );
    }
}
