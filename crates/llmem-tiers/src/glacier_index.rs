//! The searchable index of the glacier tier (feature `glacier`): per archived record, keyed by
//! its id, the BM25 terms of its search fields (this crate's [`TextIndex`]) and its embedding
//! quantised to int8 with one scale a row (as warm's int8 scan). It holds no batch names: a
//! search finds each hit's batch in the manifest, so rewriting batches never touches it.
//!
//! [`GlacierIndex::to_bytes`] writes it in a small binary form (little-endian):
//! `LLMGIDX1`, the dimension and the row count (u32 each), then per row the id, the row's
//! factor (f32; 0 for no vector), the int8 codes when there is a vector, the document length
//! (f32) and the terms with their frequencies. The glacier store compresses that with zstd and
//! encrypts it like a batch when a key is set.

use std::collections::HashMap;

use llmem_core::{Error, MemoryRecord, Result};

use crate::text::TextIndex;
use crate::vector::{TopK, dot_i8_kernel, norm, quantize};

const MAGIC: &[u8; 8] = b"LLMGIDX1";

/// The index of what glacier holds (see the module docs).
#[derive(Debug, Default)]
pub(crate) struct GlacierIndex {
    dim: usize,
    by_id: HashMap<String, u32>,
    /// Row → record id (`None`: a free row).
    ids: Vec<Option<String>>,
    free: Vec<u32>,
    /// The int8 codes, `dim` a row.
    codes: Vec<i8>,
    /// Per row: the int8 scale divided by the vector's norm (0: a free row or no vector).
    factor: Vec<f32>,
    text: TextIndex<String>,
}

impl GlacierIndex {
    pub(crate) fn len(&self) -> usize {
        self.by_id.len()
    }

    pub(crate) fn contains(&self, id: &str) -> bool {
        self.by_id.contains_key(id)
    }

    /// The ids indexed.
    pub(crate) fn ids(&self) -> impl Iterator<Item = &String> {
        self.by_id.keys()
    }

    fn row(&mut self, id: &str) -> u32 {
        let row = match self.free.pop() {
            Some(r) => r,
            None => {
                self.ids.push(None);
                self.factor.push(0.0);
                self.codes.resize(self.ids.len() * self.dim, 0);
                (self.ids.len() - 1) as u32
            }
        };
        self.ids[row as usize] = Some(id.to_owned());
        self.by_id.insert(id.to_owned(), row);
        row
    }

    /// Sets the dimension on the first vector (rows so far have none).
    fn set_dim(&mut self, dim: usize) {
        if self.dim == 0 {
            self.dim = dim;
            self.codes = vec![0; self.ids.len() * dim];
        }
    }

    /// Indexes `rec` (replacing what its id had). An embedding of another dimension than the
    /// index's is left out (the record stays findable by text) with a warning.
    pub(crate) fn insert(&mut self, rec: &MemoryRecord) {
        self.remove(&rec.id);
        let row = self.row(&rec.id) as usize;
        if let Some(e) = rec.embedding.as_deref().filter(|e| !e.is_empty()) {
            self.set_dim(e.len());
            if e.len() == self.dim {
                let at = row * self.dim;
                let scale = quantize(e, &mut self.codes[at..at + self.dim]);
                let n = norm(e);
                self.factor[row] = if n > 0.0 { scale / n } else { 0.0 };
            } else {
                tracing::warn!(id = %rec.id, dim = e.len(), index_dim = self.dim, "glacier index: an embedding of another dimension is not indexed");
            }
        }
        self.text
            .insert_fields(rec.id.clone(), &rec.search_fields());
    }

    /// Drops `id`; whether it was there.
    pub(crate) fn remove(&mut self, id: &str) -> bool {
        let Some(row) = self.by_id.remove(id) else {
            return false;
        };
        self.ids[row as usize] = None;
        self.factor[row as usize] = 0.0;
        self.free.push(row);
        self.text.remove(&id.to_owned());
        true
    }

    /// The best `n` ids by approximate cosine similarity to `q` (int8 dot products) among
    /// those `accept` lets through (checked only for rows that would enter the list).
    pub(crate) fn vector_ranking(
        &self,
        q: &[f32],
        n: usize,
        accept: impl Fn(&str) -> bool,
    ) -> Result<Vec<(String, f32)>> {
        if self.dim == 0 || n == 0 {
            return Ok(Vec::new());
        }
        if q.len() != self.dim {
            return Err(Error::invalid(format!(
                "the query vector has {} dimensions but the glacier tier holds {}-dimensional embeddings",
                q.len(),
                self.dim
            )));
        }
        let mut qq = vec![0i8; self.dim];
        let qn = norm(q);
        let qf = if qn > 0.0 {
            quantize(q, &mut qq) / qn
        } else {
            return Ok(Vec::new());
        };
        let dot_i8 = dot_i8_kernel();
        let mut top = TopK::new(n);
        for (row, (codes, &f)) in self
            .codes
            .chunks_exact(self.dim)
            .zip(&self.factor)
            .enumerate()
        {
            if f == 0.0 {
                continue;
            }
            let s = dot_i8(&qq, codes) as f32 * f * qf;
            if s > top.threshold()
                && let Some(id) = &self.ids[row]
                && accept(id)
            {
                top.push(row as u32, s);
            }
        }
        Ok(top
            .into_sorted()
            .into_iter()
            .filter_map(|(row, s)| Some((self.ids[row as usize].clone()?, s)))
            .collect())
    }

    /// The best `n` ids by BM25 for `q` among those `accept` lets through.
    pub(crate) fn text_ranking(
        &self,
        q: &str,
        n: usize,
        accept: impl Fn(&str) -> bool,
    ) -> Vec<(String, f32)> {
        self.text.search(q, n, |id| accept(id))
    }

    /// The binary form (see the module docs).
    pub(crate) fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + self.len() * (self.dim + 64));
        out.extend_from_slice(MAGIC);
        put_u32(&mut out, self.dim as u32);
        put_u32(&mut out, self.len() as u32);
        for (row, id) in self.ids.iter().enumerate() {
            let Some(id) = id else { continue };
            put_str(&mut out, id);
            let f = self.factor[row];
            out.extend_from_slice(&f.to_le_bytes());
            if f != 0.0 {
                let at = row * self.dim;
                out.extend(self.codes[at..at + self.dim].iter().map(|c| *c as u8));
            }
            let (terms, len) = self.text.terms_of(id).unwrap_or_default();
            out.extend_from_slice(&len.to_le_bytes());
            put_u32(&mut out, terms.len() as u32);
            for (t, tf) in terms {
                put_str(&mut out, t);
                out.extend_from_slice(&tf.to_le_bytes());
            }
        }
        out
    }

    /// Reads the binary form back; an error names what is wrong.
    pub(crate) fn from_bytes(b: &[u8]) -> Result<Self> {
        let mut r = Reader { b, at: 0 };
        if r.take(8)? != MAGIC {
            return Err(bad("not a glacier index"));
        }
        let dim = r.u32()? as usize;
        let rows = r.u32()? as usize;
        let mut ix = GlacierIndex {
            dim,
            ..GlacierIndex::default()
        };
        for _ in 0..rows {
            let id = r.str()?;
            let f = r.f32()?;
            let row = ix.row(&id) as usize;
            if f != 0.0 {
                let codes = r.take(dim)?;
                let at = row * dim;
                for (c, b) in ix.codes[at..at + dim].iter_mut().zip(codes) {
                    *c = *b as i8;
                }
                ix.factor[row] = f;
            }
            let len = r.f32()?;
            let n = r.u32()? as usize;
            let mut terms = Vec::with_capacity(n.min(4096));
            for _ in 0..n {
                let t = r.str()?;
                terms.push((t, r.f32()?));
            }
            ix.text.insert_terms(id, terms, len);
        }
        if r.at != b.len() {
            return Err(bad("trailing bytes"));
        }
        Ok(ix)
    }
}

fn bad(what: &str) -> Error {
    Error::storage(
        "glacier",
        format!("the glacier index is unreadable: {what}"),
    )
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_u32(out, s.len() as u32);
    out.extend_from_slice(s.as_bytes());
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.at.checked_add(n).filter(|e| *e <= self.b.len());
        let end = end.ok_or_else(|| bad("truncated"))?;
        let s = &self.b[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn u32(&mut self) -> Result<u32> {
        let mut a = [0u8; 4];
        a.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(a))
    }

    fn f32(&mut self) -> Result<f32> {
        Ok(f32::from_bits(self.u32()?))
    }

    fn str(&mut self) -> Result<String> {
        let n = self.u32()? as usize;
        String::from_utf8(self.take(n)?.to_vec()).map_err(|_| bad("an id or term is not UTF-8"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use llmem_core::test_kit::unit_vec;

    #[test]
    fn round_trips_and_ranks_like_before() {
        let mut ix = GlacierIndex::default();
        for i in 0..200u64 {
            let mut r = MemoryRecord::new("u", format!("note {i} about topic{}", i % 7))
                .with_id(format!("r{i}"));
            if i % 10 != 3 {
                r = r.with_embedding(unit_vec(32, i));
            }
            ix.insert(&r);
        }
        ix.remove("r5");
        ix.insert(&MemoryRecord::new("u", "replaced about zebras").with_id("r6"));
        let back = GlacierIndex::from_bytes(&ix.to_bytes()).unwrap();
        assert_eq!(back.len(), 199);
        assert!(!back.contains("r5") && back.contains("r3"));
        let q = unit_vec(32, 42);
        let a = ix.vector_ranking(&q, 5, |_| true).unwrap();
        let b = back.vector_ranking(&q, 5, |_| true).unwrap();
        assert_eq!(a, b);
        assert_eq!(a[0].0, "r42", "{a:?}");
        assert!((a[0].1 - 1.0).abs() < 0.02, "{a:?}");
        assert_eq!(
            back.text_ranking("zebras", 3, |_| true)[0].0,
            "r6",
            "replaced text indexed"
        );
        // Equal scores come in hash order: compare as sets.
        let sorted = |mut v: Vec<(String, f32)>| {
            v.sort_by(|a, b| a.0.cmp(&b.0));
            v
        };
        let topic = ix.text_ranking("topic3", 50, |_| true);
        assert_eq!(topic.len(), 29);
        assert_eq!(
            sorted(topic),
            sorted(back.text_ranking("topic3", 50, |_| true))
        );
        assert!(back.vector_ranking(&[1.0; 3], 1, |_| true).is_err());
        assert!(GlacierIndex::from_bytes(b"LLMGIDX1\x01").is_err());
    }
}
