//! A fast hasher for the simulator's maps keyed by integer ids (task, job) and short names.
//!
//! The standard library's SipHash resists hash flooding, which a simulator reading its own
//! trace does not need, and it was ≈ 6 % of a wagap replay's instructions. This is the
//! multiply-rotate hash rustc uses for its own tables ("FxHash"). No decision depends on a
//! map's iteration order (the one map iterated, the live tasks at the horizon, is sorted
//! first), so the hasher changes speed only.

use std::hash::{BuildHasherDefault, Hasher};

#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct FxHasher(u64);

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl FxHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(SEED);
    }
}

impl Hasher for FxHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.add(u64::from_le_bytes(c.try_into().expect("8 bytes")));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut last = [0u8; 8];
            last[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(last));
        }
    }

    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }

    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }

    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }

    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
}

/// `HashMap<K, V, FxBuild>`.
pub(crate) type FxBuild = BuildHasherDefault<FxHasher>;
pub(crate) type FxHashMap<K, V> = std::collections::HashMap<K, V, FxBuild>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::{BuildHasher, Hash};

    #[test]
    fn equal_keys_hash_equal_and_ids_spread() {
        let b = FxBuild::default();
        let h = |x: &dyn Fn(&mut FxHasher)| {
            let mut s = b.build_hasher();
            x(&mut s);
            s.finish()
        };
        assert_eq!(h(&|s| 7u64.hash(s)), h(&|s| 7u64.hash(s)));
        assert_ne!(h(&|s| 7u64.hash(s)), h(&|s| 8u64.hash(s)));
        assert_ne!(h(&|s| "i-1".hash(s)), h(&|s| "i-2".hash(s)));
        let mut m: FxHashMap<u64, u64> = FxHashMap::default();
        for i in 0..10_000u64 {
            m.insert(i, i * 2);
        }
        assert!((0..10_000u64).all(|i| m[&i] == i * 2));
    }
}
