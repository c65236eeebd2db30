//! Decisions of pure plugins (no grants), keyed by plugin digest, settings and input.
//!
//! A decision is a pure function of those, so a hit is exact. Only validated plugin
//! decisions are stored, never failures or fallbacks. The cache must never grow without
//! bound: when full it is emptied (a reconcile storm re-fills it in microseconds).

use std::{collections::HashMap, sync::Mutex};

/// A bounded map from an exact key to a decision.
pub(crate) struct DecisionCache<D> {
    capacity: usize,
    map: Mutex<HashMap<Vec<u8>, D>>,
}

impl<D: Clone> DecisionCache<D> {
    pub fn new(capacity: usize) -> Self {
        DecisionCache {
            capacity,
            map: Mutex::new(HashMap::new()),
        }
    }

    pub fn enabled(&self) -> bool {
        self.capacity > 0
    }

    /// The key: digest and settings of the plugin, then the input's JSON.
    pub fn key(digest: &str, settings: &str, input: &impl serde::Serialize) -> Option<Vec<u8>> {
        let mut key = Vec::with_capacity(256);
        key.extend_from_slice(digest.as_bytes());
        key.push(0);
        key.extend_from_slice(settings.as_bytes());
        key.push(0);
        serde_json::to_writer(&mut key, input).ok()?;
        Some(key)
    }

    pub fn get(&self, key: &[u8]) -> Option<D> {
        self.map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .cloned()
    }

    pub fn put(&self, key: Vec<u8>, decision: D) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= self.capacity {
            map.clear();
        }
        map.insert(key, decision);
    }

    pub fn clear(&self) {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}
