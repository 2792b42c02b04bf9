//! Typed tables: a column family (or a key prefix within one) with an order-preserving key
//! codec and JSON values.

use std::marker::PhantomData;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{Cf, Error, Op, Result, Store};

/// A key that encodes to bytes whose order matches the key's order.
pub trait Key: Sized {
    /// Appends the encoded key to `out`.
    fn encode(&self, out: &mut Vec<u8>);
    /// Decodes a key; `None` when the bytes are not a key of this type.
    fn decode(bytes: &[u8]) -> Option<Self>;
}

impl Key for u64 {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_be_bytes());
    }
    fn decode(bytes: &[u8]) -> Option<Self> {
        Some(u64::from_be_bytes(bytes.try_into().ok()?))
    }
}

impl Key for String {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.as_bytes());
    }
    fn decode(bytes: &[u8]) -> Option<Self> {
        String::from_utf8(bytes.to_vec()).ok()
    }
}

impl Key for [u8; 16] {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self);
    }
    fn decode(bytes: &[u8]) -> Option<Self> {
        bytes.try_into().ok()
    }
}

/// A typed view of a column family, optionally restricted to a key prefix.
pub struct Table<K, V> {
    store: Store,
    cf: Cf,
    prefix: &'static [u8],
    _types: PhantomData<fn(K, V)>,
}

impl<K, V> Clone for Table<K, V> {
    fn clone(&self) -> Self {
        Self { store: self.store.clone(), cf: self.cf, prefix: self.prefix, _types: PhantomData }
    }
}

impl<K, V> std::fmt::Debug for Table<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Table").field("cf", &self.cf).field("prefix", &String::from_utf8_lossy(self.prefix)).finish()
    }
}

impl<K: Key, V: Serialize + DeserializeOwned> Table<K, V> {
    /// The table of `cf` whose keys start with `prefix`.
    pub fn new(store: &Store, cf: Cf, prefix: &'static [u8]) -> Self {
        Self { store: store.clone(), cf, prefix, _types: PhantomData }
    }

    /// The store the table lives in.
    pub fn store(&self) -> &Store {
        &self.store
    }

    fn key(&self, key: &K) -> Vec<u8> {
        let mut out = self.prefix.to_vec();
        key.encode(&mut out);
        out
    }

    /// Reads the value at `key`.
    pub fn get(&self, key: &K) -> Result<Option<V>> {
        let raw = self.key(key);
        match self.store.get(self.cf, &raw)? {
            None => Ok(None),
            Some(bytes) => self.decode_value(&raw, &bytes).map(Some),
        }
    }

    /// The op that sets `key` to `value`, to commit with others.
    pub fn put_op(&self, key: &K, value: &V) -> Result<Op> {
        let value = serde_json::to_vec(value).map_err(|source| Error::Encode { cf: self.cf.name(), source })?;
        Ok(Op::Put { cf: self.cf, key: self.key(key), value })
    }

    /// The op that removes `key`.
    pub fn delete_op(&self, key: &K) -> Op {
        Op::Delete { cf: self.cf, key: self.key(key) }
    }

    /// Sets `key` to `value` now, fsynced.
    pub fn put(&self, key: &K, value: &V) -> Result<()> {
        self.store.write(vec![self.put_op(key, value)?], true)
    }

    /// Removes `key` now, fsynced.
    pub fn delete(&self, key: &K) -> Result<()> {
        self.store.write(vec![self.delete_op(key)], true)
    }

    /// Up to `limit` entries in key order, starting at `from` (inclusive) or the first key.
    pub fn scan(&self, from: Option<&K>, limit: usize) -> Result<Vec<(K, V)>> {
        let start = from.map(|k| self.key(k)).unwrap_or_else(|| self.prefix.to_vec());
        self.decode_entries(self.store.scan(self.cf, self.prefix, &start, limit)?)
    }

    /// Up to `limit` entries in descending key order, before `end` (exclusive) or from the
    /// last key.
    pub fn scan_rev(&self, end: Option<&K>, limit: usize) -> Result<Vec<(K, V)>> {
        let end = end.map(|k| self.key(k));
        self.decode_entries(self.store.scan_rev(self.cf, self.prefix, end.as_deref(), limit)?)
    }

    fn decode_entries(&self, raw: Vec<(Vec<u8>, Vec<u8>)>) -> Result<Vec<(K, V)>> {
        raw.into_iter()
            .map(|(k, v)| {
                let key = K::decode(&k[self.prefix.len()..]).ok_or_else(|| Error::Corrupt {
                    cf: self.cf.name(),
                    key: super::hex(&k),
                    reason: "undecodable key".into(),
                })?;
                Ok((key, self.decode_value(&k, &v)?))
            })
            .collect()
    }

    fn decode_value(&self, key: &[u8], bytes: &[u8]) -> Result<V> {
        serde_json::from_slice(bytes).map_err(|e| Error::Corrupt {
            cf: self.cf.name(),
            key: super::hex(key),
            reason: e.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::temp_store;

    #[test]
    fn prefixed_tables_share_a_family_without_mixing() {
        let (_dir, store) = temp_store();
        let a: Table<String, u32> = Table::new(&store, Cf::State, b"a/");
        let b: Table<String, u32> = Table::new(&store, Cf::State, b"b/");
        a.put(&"x".into(), &1).expect("put");
        a.put(&"y".into(), &2).expect("put");
        b.put(&"x".into(), &3).expect("put");
        assert_eq!(a.get(&"x".into()).expect("get"), Some(1));
        assert_eq!(b.get(&"x".into()).expect("get"), Some(3));
        assert_eq!(a.scan(None, 10).expect("scan"), vec![("x".into(), 1), ("y".into(), 2)]);
        assert_eq!(a.scan(Some(&"y".into()), 10).expect("scan"), vec![("y".into(), 2)]);
        assert_eq!(b.scan(None, 10).expect("scan").len(), 1);
    }

    #[test]
    fn reverse_scans_page_backwards_within_the_prefix() {
        let (_dir, store) = temp_store();
        let a: Table<u64, u64> = Table::new(&store, Cf::State, b"a/");
        let b: Table<u64, u64> = Table::new(&store, Cf::State, b"b/");
        for n in 1..=5u64 {
            a.put(&n, &n).expect("put");
            b.put(&n, &(n * 10)).expect("put");
        }
        let keys = |v: Vec<(u64, u64)>| v.into_iter().map(|(k, _)| k).collect::<Vec<_>>();
        assert_eq!(keys(a.scan_rev(None, 2).expect("scan")), [5, 4]);
        assert_eq!(keys(a.scan_rev(Some(&4), 10).expect("scan")), [3, 2, 1]);
        assert_eq!(b.scan_rev(None, 1).expect("scan"), [(5, 50)]);
    }

    #[test]
    fn u64_keys_sort_numerically() {
        let (_dir, store) = temp_store();
        let t: Table<u64, String> = Table::new(&store, Cf::Meta, b"");
        for n in [300u64, 2, 10] {
            t.put(&n, &n.to_string()).expect("put");
        }
        let keys: Vec<u64> = t.scan(None, 10).expect("scan").into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, [2, 10, 300]);
    }

    #[test]
    fn corrupt_values_are_reported_with_their_key() {
        let (_dir, store) = temp_store();
        store.write(vec![Op::Put { cf: Cf::Meta, key: b"k".to_vec(), value: b"{".to_vec() }], false).expect("write");
        let t: Table<String, u32> = Table::new(&store, Cf::Meta, b"");
        let err = t.get(&"k".into()).expect_err("corrupt");
        assert!(err.to_string().contains("meta at key 6b"), "{err}");
    }
}
