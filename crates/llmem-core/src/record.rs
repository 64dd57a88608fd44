//! Long-term memory records and the scope (tenant, session) every store call runs in.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::time::Timestamp;
use crate::{Error, Result};

/// The metadata key whose string value lexical search indexes along with the text
/// ([`MemoryRecord::search_text`]).
pub const KEYWORDS: &str = "keywords";

/// The metadata key of a record's broader terms (a kind of thing for each thing it names:
/// "violin" → "musical instrument"), indexed by lexical search at [`BROADER_WEIGHT`].
pub const BROADER: &str = "broader";

/// The lexical key of a record with this text and metadata ([`MemoryRecord::search_text`]),
/// for stores that rebuild their index from stored columns rather than from records.
pub fn search_key<'a>(text: &'a str, metadata: &Map<String, Value>) -> std::borrow::Cow<'a, str> {
    match (keywords(metadata), non_empty(metadata, BROADER)) {
        (None, None) => text.into(),
        (k, b) => [Some(text), k, b]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join("\n")
            .into(),
    }
}

/// The non-empty string value of `metadata.keywords` ([`KEYWORDS`]), if any.
fn keywords(metadata: &Map<String, Value>) -> Option<&str> {
    non_empty(metadata, KEYWORDS)
}

fn non_empty<'a>(metadata: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    metadata
        .get(key)
        .and_then(Value::as_str)
        .filter(|k| !k.is_empty())
}

/// How many times a record's own words count against its lexical key's in lexical search (a
/// BM25F field weight): a key repeats the neighbouring messages, so a word found in the text
/// should weigh more than one found only in the key. On LoCoMo (docs/eval.md) weights 1, 2, 3
/// and 4 gave recall@10 69.6, 70.0, 70.3 and 69.6%.
pub const TEXT_WEIGHT: f32 = 3.0;

/// How much a broader term ([`BROADER`]) counts against a word of the key: a kind of thing
/// a memory names is weaker evidence than a word it says.
pub const BROADER_WEIGHT: f32 = 0.5;

/// The weighted fields lexical search indexes for a record with this text and metadata: the
/// text at [`TEXT_WEIGHT`], the string value of `metadata.keywords` ([`KEYWORDS`]) at 1 and
/// that of `metadata.broader` ([`BROADER`]) at [`BROADER_WEIGHT`]; without either, the text
/// alone at 1 (plain BM25: a weight only ranks one field against another).
pub fn search_fields<'a>(text: &'a str, metadata: &'a Map<String, Value>) -> Vec<(&'a str, f32)> {
    let mut fields = vec![(text, 1.0)];
    if let Some(k) = keywords(metadata) {
        fields.push((k, 1.0));
    }
    if let Some(b) = non_empty(metadata, BROADER) {
        fields.push((b, BROADER_WEIGHT));
    }
    if fields.len() > 1 {
        fields[0].1 = TEXT_WEIGHT;
    }
    fields
}

/// What a record remembers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum RecordKind {
    /// A turn of a conversation, verbatim.
    #[default]
    Conversation,
    /// A fact or document.
    Knowledge,
    /// An event the user lived through.
    Episode,
    /// A summary of other records.
    Summary,
}

impl RecordKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RecordKind::Conversation => "conversation",
            RecordKind::Knowledge => "knowledge",
            RecordKind::Episode => "episode",
            RecordKind::Summary => "summary",
        }
    }

    pub fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "conversation" => RecordKind::Conversation,
            "knowledge" => RecordKind::Knowledge,
            "episode" => RecordKind::Episode,
            "summary" => RecordKind::Summary,
            other => {
                return Err(Error::invalid(format!(
                    "unknown record kind `{other}`; use conversation, knowledge, episode or summary"
                )));
            }
        })
    }
}

/// One memory in long-term storage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemoryRecord {
    pub id: String,
    /// The user (or organisation) the record belongs to; no API crosses tenants.
    pub tenant: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    #[serde(default)]
    pub kind: RecordKind,
    pub text: String,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub metadata: Map<String, Value>,
    pub created_at: Timestamp,
    pub accessed_at: Timestamp,
    #[serde(default)]
    pub access_count: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedding: Option<Vec<f32>>,
    /// The id of the older version this record replaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supersedes: Option<String>,
    /// The id of the newer version that replaced this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub superseded_by: Option<String>,
}

impl MemoryRecord {
    /// A new record with a fresh time-ordered id, created and accessed now.
    pub fn new(tenant: impl Into<String>, text: impl Into<String>) -> Self {
        let now = Timestamp::now();
        MemoryRecord {
            id: new_id(),
            tenant: tenant.into(),
            session: None,
            kind: RecordKind::Conversation,
            text: text.into(),
            metadata: Map::new(),
            created_at: now,
            accessed_at: now,
            access_count: 0,
            embedding: None,
            supersedes: None,
            superseded_by: None,
        }
    }

    #[must_use]
    pub fn with_id(mut self, id: impl Into<String>) -> Self {
        self.id = id.into();
        self
    }

    #[must_use]
    pub fn with_session(mut self, session: impl Into<String>) -> Self {
        self.session = Some(session.into());
        self
    }

    #[must_use]
    pub fn with_kind(mut self, kind: RecordKind) -> Self {
        self.kind = kind;
        self
    }

    #[must_use]
    pub fn with_metadata(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    #[must_use]
    pub fn with_embedding(mut self, e: Vec<f32>) -> Self {
        self.embedding = Some(e);
        self
    }

    #[must_use]
    pub fn with_created_at(mut self, at: Timestamp) -> Self {
        self.created_at = at;
        self.accessed_at = at;
        self
    }

    /// Whether a newer version replaced this record.
    pub fn is_superseded(&self) -> bool {
        self.superseded_by.is_some()
    }

    /// Whether the record lies inside `scope`.
    pub fn in_scope(&self, scope: &Scope) -> bool {
        self.tenant == scope.tenant
            && match &scope.session {
                None => true,
                Some(s) => self.session.as_deref() == Some(s.as_str()),
            }
    }

    /// What lexical (BM25) search indexes: the text, plus the string value of
    /// `metadata.keywords` when the record has one ([`KEYWORDS`]). Keywords let an application
    /// expand a memory's key without changing the text it shows: extracted facts, synonyms, or
    /// the neighbouring turns of a conversation.
    pub fn search_text(&self) -> std::borrow::Cow<'_, str> {
        search_key(&self.text, &self.metadata)
    }

    /// The weighted fields lexical search indexes ([`search_fields`]): the words of
    /// [`MemoryRecord::search_text`], the text's counting [`TEXT_WEIGHT`] times when the record
    /// has keywords.
    pub fn search_fields(&self) -> Vec<(&str, f32)> {
        search_fields(&self.text, &self.metadata)
    }

    /// Rough in-memory size in bytes (text, metadata, embedding), for tier capacity accounting.
    pub fn approx_bytes(&self) -> usize {
        let meta: usize = self
            .metadata
            .iter()
            .map(|(k, v)| k.len() + v.to_string().len())
            .sum();
        96 + self.id.len()
            + self.tenant.len()
            + self.session.as_ref().map_or(0, String::len)
            + self.text.len()
            + meta
            + self.embedding.as_ref().map_or(0, |e| e.len() * 4)
    }

    /// The value a filter sees at `path`. Record fields (`id`, `tenant`, `session`, `kind`,
    /// `text`, `created_at`, `accessed_at`, `access_count`, `supersedes`, `superseded_by`) come
    /// first; `metadata.x.y` and bare `x.y` both look into the metadata.
    pub fn field(&self, path: &str) -> Option<Value> {
        let v = match path {
            "id" => Value::String(self.id.clone()),
            "tenant" => Value::String(self.tenant.clone()),
            "session" => self.session.clone().map(Value::String)?,
            "kind" | "type" if !self.metadata.contains_key(path) => {
                Value::String(self.kind.as_str().to_owned())
            }
            "text" => Value::String(self.text.clone()),
            "created_at" if !self.metadata.contains_key(path) => {
                Value::String(self.created_at.to_rfc3339())
            }
            "accessed_at" => Value::String(self.accessed_at.to_rfc3339()),
            "access_count" => Value::from(self.access_count),
            "supersedes" => self.supersedes.clone().map(Value::String)?,
            "superseded_by" => self.superseded_by.clone().map(Value::String)?,
            _ => {
                let rest = path.strip_prefix("metadata.").unwrap_or(path);
                return lookup(&self.metadata, rest).cloned();
            }
        };
        Some(v)
    }
}

/// Follows a dotted path through nested JSON objects.
pub fn lookup<'a>(map: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    if let Some(v) = map.get(path) {
        return Some(v);
    }
    let mut parts = path.split('.');
    let mut cur = map.get(parts.next()?)?;
    for p in parts {
        cur = match cur {
            Value::Object(o) => o.get(p)?,
            Value::Array(a) => a.get(p.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(cur)
}

/// A new time-ordered unique id (UUID v7 layout: 48-bit milliseconds, a 12-bit sequence, then
/// randomness). Ids made in one process increase strictly, also within a millisecond (the
/// sequence counts up, and a full millisecond borrows the next one), so ordering records by
/// (time, id) keeps the order they were made in.
pub fn new_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    /// The last (milliseconds << 12 | sequence) handed out.
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = (Timestamp::now().0 as u64) << 12;
    let next = |last: u64| if now > last { now } else { last + 1 };
    let stamp = match LAST.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |l| Some(next(l))) {
        Ok(last) | Err(last) => next(last),
    };
    let (ms, seq) = (stamp >> 12, stamp & 0xfff);
    // Randomness from the std hasher's per-process random keys plus a counter: unique in-process,
    // and unlikely to collide across processes.
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u64(ms);
    let r = h.finish();
    let hi = (ms << 16) | 0x7000 | seq;
    let lo = (r & 0x3fff_ffff_ffff_ffff) | 0x8000_0000_0000_0000;
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        hi >> 32,
        (hi >> 16) & 0xffff,
        hi & 0xffff,
        lo >> 48,
        lo & 0xffff_ffff_ffff
    )
}

/// Where a store call runs: a tenant, and optionally one of its sessions.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Scope {
    pub tenant: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
}

impl Scope {
    /// All of a tenant's records.
    pub fn tenant(tenant: impl Into<String>) -> Self {
        Scope {
            tenant: tenant.into(),
            session: None,
        }
    }

    /// One session of a tenant.
    pub fn session(tenant: impl Into<String>, session: impl Into<String>) -> Self {
        Scope {
            tenant: tenant.into(),
            session: Some(session.into()),
        }
    }
}

/// A record with its relevance score (higher is better).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoredRecord {
    pub record: MemoryRecord,
    pub score: f32,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_text_outweighs_the_key_and_alone_is_plain() {
        let r = MemoryRecord::new("t", "user: I sold the bike");
        assert_eq!(r.search_fields(), vec![("user: I sold the bike", 1.0)]);
        let r = r.with_metadata(KEYWORDS, "the message before");
        assert_eq!(
            r.search_fields(),
            vec![
                ("user: I sold the bike", TEXT_WEIGHT),
                ("the message before", 1.0)
            ]
        );
        let r = r.with_metadata(BROADER, "vehicle");
        assert_eq!(r.search_fields()[2], ("vehicle", BROADER_WEIGHT));
        let r = MemoryRecord::new("t", "user: I sold the bike").with_metadata(BROADER, "");
        assert_eq!(r.search_fields(), vec![("user: I sold the bike", 1.0)]);
    }

    #[test]
    fn ids_are_unique_and_time_ordered() {
        let a = new_id();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = new_id();
        assert_ne!(a, b);
        assert!(a < b, "{a} < {b}");
        assert_eq!(a.len(), 36);
        let many: Vec<String> = (0..10_000).map(|_| new_id()).collect();
        // Strictly increasing, so also unique, within a millisecond too.
        assert!(many.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn fields_and_dotted_metadata_resolve() {
        let r = MemoryRecord::new("u1", "hello")
            .with_session("s1")
            .with_metadata("place", json!({"city": "Paris", "tags": ["a", "b"]}));
        assert_eq!(r.field("tenant"), Some(json!("u1")));
        assert_eq!(r.field("kind"), Some(json!("conversation")));
        assert_eq!(r.field("place.city"), Some(json!("Paris")));
        assert_eq!(r.field("metadata.place.city"), Some(json!("Paris")));
        assert_eq!(r.field("place.tags.1"), Some(json!("b")));
        assert_eq!(r.field("missing"), None);
        assert!(r.in_scope(&Scope::tenant("u1")));
        assert!(r.in_scope(&Scope::session("u1", "s1")));
        assert!(!r.in_scope(&Scope::session("u1", "s2")));
        assert!(!r.in_scope(&Scope::tenant("u2")));
    }

    #[test]
    fn records_round_trip_through_json() {
        let r = MemoryRecord::new("u1", "x")
            .with_embedding(vec![0.5, -1.0])
            .with_kind(RecordKind::Knowledge);
        let back: MemoryRecord = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(back, r);
    }
}
