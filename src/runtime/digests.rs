//! Digests of large store values that params take whole (`"${read.content}"`),
//! remembered so that N nodes reading one 50 MB value hash it once for
//! `pflow.node.params_digest` instead of N times (each hash reads the whole
//! value: ~9 ms per 50 MB, the largest telemetry cost of such a run).
//!
//! An entry is keyed by the store it was read from (the address of the
//! `execute` frame's store, stable while that frame runs) and the reference
//! text. It is dropped when the store takes new outputs under the
//! reference's root (a node run again in a loop), and all of a store's
//! entries go when its frame ends, so an address reused later finds none.

use crate::ir::template::Reference;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::sync::Mutex;

/// Values shorter than this are hashed each time: cheaper than remembering.
pub const REMEMBER_FROM: usize = 1 << 20;

type Key = (usize, String);

#[derive(Debug, Default)]
pub struct ParamDigests {
    /// (store, reference text) → (root, digest).
    entries: Mutex<HashMap<Key, (String, u64)>>,
}

fn store_id(store: &Map<String, Value>) -> usize {
    store as *const Map<String, Value> as usize
}

/// Forgets a store's entries when its `execute` frame ends, however it ends.
pub struct ForgetStore<'a> {
    digests: &'a ParamDigests,
    store: usize,
}

impl<'a> ForgetStore<'a> {
    pub fn new(digests: &'a ParamDigests, store: &Map<String, Value>) -> Self {
        ForgetStore {
            digests,
            store: store_id(store),
        }
    }
}

impl Drop for ForgetStore<'_> {
    fn drop(&mut self) {
        self.digests.forget_id(self.store);
    }
}

impl ParamDigests {
    /// The digest of `value`, which `reference` read from `store`: remembered
    /// when the value is a large string, else computed by `digest`.
    pub fn get_or(
        &self,
        store: &Map<String, Value>,
        reference: &Reference,
        value: &Value,
        digest: impl FnOnce(&Value) -> u64,
    ) -> u64 {
        if !matches!(value, Value::String(s) if s.len() >= REMEMBER_FROM) {
            return digest(value);
        }
        let key = (store_id(store), reference.text.clone());
        if let Some((_, d)) = self.lock().get(&key) {
            return *d;
        }
        let d = digest(value);
        self.lock().insert(key, (reference.root.clone(), d));
        d
    }

    /// `store` takes new outputs under `root`: what was read there is stale.
    pub fn forget_root(&self, store: &Map<String, Value>, root: &str) {
        let id = store_id(store);
        let mut m = self.lock();
        if !m.is_empty() {
            m.retain(|(s, _), (r, _)| *s != id || r != root);
        }
    }

    /// A store's frame ends: its address may hold another store later.
    fn forget_id(&self, id: usize) {
        let mut m = self.lock();
        if !m.is_empty() {
            m.retain(|(s, _), _| *s != id);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, (String, u64)>> {
        // A panic while holding the lock leaves a map of whole entries.
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::template::Template;
    use serde_json::json;

    fn reference(text: &str) -> Reference {
        Template::parse(text)
            .unwrap()
            .single_reference()
            .unwrap()
            .clone()
    }

    #[test]
    fn a_large_value_is_hashed_once_per_store_until_its_root_is_written_again() {
        let d = ParamDigests::default();
        let big = Value::String("x".repeat(REMEMBER_FROM));
        let (a, b) = (Map::new(), json!({}).as_object().unwrap().clone());
        let r = reference("${read.content}");
        let calls = std::cell::Cell::new(0);
        let hash = |_: &Value| {
            calls.set(calls.get() + 1);
            42
        };
        assert_eq!(d.get_or(&a, &r, &big, hash), 42);
        assert_eq!(d.get_or(&a, &r, &big, hash), 42);
        assert_eq!(calls.get(), 1, "remembered");
        // Another store, or another root written: not this entry.
        d.get_or(&b, &r, &big, hash);
        d.forget_root(&a, "other");
        d.get_or(&a, &r, &big, hash);
        assert_eq!(calls.get(), 2);
        // The root written again: hashed again.
        d.forget_root(&a, "read");
        d.get_or(&a, &r, &big, hash);
        assert_eq!(calls.get(), 3);
        drop((ForgetStore::new(&d, &a), ForgetStore::new(&d, &b)));
        assert!(d.lock().is_empty());
        // Small values and values of other types are never remembered.
        d.get_or(&a, &r, &json!("small"), hash);
        d.get_or(&a, &r, &json!([1, 2]), hash);
        assert!(d.lock().is_empty());
        assert_eq!(calls.get(), 5);
    }
}
