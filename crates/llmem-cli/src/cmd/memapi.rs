//! The memory operations `llmem serve` offers over REST (`/v1/memories`) and MCP, on the
//! long-term store the chat sessions share: add, get, list, search, update, delete and delete
//! by filter, each inside one caller's scope.
//!
//! A caller is a [`Principal`]: the tenant its API key belongs to. The `user_id` a request
//! names is an end user inside that tenant; records are stored under the scope
//! `<tenant>/<user_id>` (or `<tenant>` alone), so no request can name its way into another
//! tenant's records: an id of another tenant is simply not found.

use std::sync::Arc;

use axum::Json;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use llmem::core::{
    Embedder, Filter, MemoryRecord, MemoryStore, RecordKind, Scope, ScoredRecord, SearchRequest,
};
use serde::Serialize;
use serde_json::{Map, Value, json};

/// The most records one list, search or add may touch.
pub const MAX_RESULTS: usize = 1000;
/// The longest memory text accepted, in bytes.
pub const MAX_TEXT: usize = 64 * 1024;

/// Who is calling: the tenant its key maps to, and whether the key may manage keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The tenant every record of this caller lives under.
    pub tenant: String,
    pub admin: bool,
    /// In open mode (no keys configured) `user_id` is the whole scope, as before keys existed.
    pub open: bool,
}

impl Principal {
    /// A caller of a server without keys: whatever user it names is its scope.
    pub fn open() -> Self {
        Principal {
            tenant: String::new(),
            admin: false,
            open: true,
        }
    }

    /// The caller of a tenant key.
    pub fn tenant(tenant: impl Into<String>, admin: bool) -> Self {
        Principal {
            tenant: tenant.into(),
            admin,
            open: false,
        }
    }

    /// The store scope of `user_id` inside this caller's tenant.
    pub fn user_scope(&self, user_id: Option<&str>) -> Result<String, ApiError> {
        let user = match user_id.map(str::trim) {
            Some("") | None => None,
            Some(u) => Some(u),
        };
        if let Some(u) = user {
            check_name("user_id", u)?;
        }
        Ok(match (self.open, user) {
            (true, Some(u)) => u.to_owned(),
            (true, None) => "default".to_owned(),
            (false, Some(u)) => format!("{}/{u}", self.tenant),
            (false, None) => self.tenant.clone(),
        })
    }
}

/// A user, session or tenant name: 1–128 printable characters, no `/` (which separates a
/// tenant from its users) and no control characters.
pub fn check_name(what: &str, name: &str) -> Result<(), ApiError> {
    if name.is_empty() || name.len() > 128 {
        return Err(ApiError::bad(format!(
            "`{what}` must be 1 to 128 characters long"
        )));
    }
    if name.contains('/') || name.chars().any(char::is_control) {
        return Err(ApiError::bad(format!(
            "`{what}` may not contain `/` or control characters"
        )));
    }
    Ok(())
}

/// An error as the HTTP API answers it: a status, an OpenAI-style type and a message that says
/// what to change.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub kind: &'static str,
    pub message: String,
    /// Seconds a client should wait before retrying (503 answers).
    pub retry_after: Option<u64>,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ApiError {}

impl ApiError {
    pub fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            kind,
            message: message.into(),
            retry_after: None,
        }
    }

    /// 400: the request is wrong.
    pub fn bad(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", message)
    }

    /// 404, worded the same whether the id exists in another tenant or nowhere.
    pub fn not_found(id: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found_error",
            format!("no memory `{id}` for this user"),
        )
    }

    /// 401: no key, a wrong key or a revoked one.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "authentication_error", message)
    }

    /// 403: a valid key that may not do this.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "permission_error", message)
    }

    /// The HTTP answer to an llmem error, by kind: the caller's mistakes are 4xx, an upstream
    /// model's final errors 502 with its message, temporary failures (rate limits, timeouts,
    /// a storage backend that may come back) 503 with `retry-after`, the rest 500.
    pub fn from_llmem(e: &llmem::Error) -> Self {
        use llmem::Error as E;
        let msg = e.to_string();
        let mut out = match e {
            E::InvalidInput { .. } | E::Serde { .. } | E::TokenLimit { .. } => Self::bad(msg),
            E::NotFound { .. } => Self::new(StatusCode::NOT_FOUND, "not_found_error", msg),
            E::BudgetExceeded { .. } => {
                Self::new(StatusCode::TOO_MANY_REQUESTS, "budget_exceeded", msg)
            }
            _ if e.is_temporary() => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                msg,
            ),
            E::Provider { .. } => Self::new(StatusCode::BAD_GATEWAY, "upstream_error", msg),
            E::Unsupported { .. } | E::FeatureDisabled { .. } => {
                Self::new(StatusCode::NOT_IMPLEMENTED, "unsupported", msg)
            }
            _ => Self::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", msg),
        };
        if out.status == StatusCode::SERVICE_UNAVAILABLE {
            out.retry_after = Some(e.retry_after().map_or(1, |d| d.as_secs().max(1)));
        }
        out
    }
}

impl From<llmem::Error> for ApiError {
    fn from(e: llmem::Error) -> Self {
        ApiError::from_llmem(&e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {
            "message": self.message,
            "type": self.kind,
            "code": self.status.as_u16(),
        }});
        let mut r = (self.status, Json(body)).into_response();
        if let Some(s) = self.retry_after
            && let Ok(v) = HeaderValue::from_str(&s.to_string())
        {
            r.headers_mut().insert("retry-after", v);
        }
        r
    }
}

/// One memory as the API shows it (mem0's field names: `memory` is the text).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct MemoryOut {
    pub id: String,
    /// The remembered text.
    pub memory: String,
    /// The end user inside the caller's tenant, when the memory has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// `conversation`, `knowledge`, `episode` or `summary`.
    pub kind: String,
    #[schema(value_type = Object)]
    pub metadata: Map<String, Value>,
    /// RFC 3339, UTC.
    pub created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<String>,
    /// The search score (search results only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub score: Option<f32>,
    /// `ADD`, `UPDATE` or `DELETE` (answers to changes only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
}

/// The metadata key that holds a memory's last update time.
const UPDATED_AT: &str = "updated_at";

impl MemoryOut {
    fn of(p: &Principal, r: MemoryRecord) -> Self {
        let user_id = if p.open {
            Some(r.tenant.clone())
        } else {
            r.tenant
                .strip_prefix(&p.tenant)
                .and_then(|rest| rest.strip_prefix('/'))
                .map(str::to_owned)
        };
        let mut metadata = r.metadata;
        let updated_at = metadata
            .remove(UPDATED_AT)
            .and_then(|v| v.as_str().map(str::to_owned));
        MemoryOut {
            id: r.id,
            memory: r.text,
            user_id,
            kind: r.kind.as_str().to_owned(),
            metadata,
            created_at: millis_rfc3339(&r.created_at.to_rfc3339()),
            updated_at: updated_at.as_deref().map(millis_rfc3339),
            score: None,
            event: None,
        }
    }

    fn event(mut self, e: &str) -> Self {
        self.event = Some(e.to_owned());
        self
    }
}

/// RFC 3339 with exactly three fraction digits (`…:05.120Z`), so that times sort as text and
/// every ISO parser reads them.
fn millis_rfc3339(t: &str) -> String {
    let Some(body) = t.strip_suffix('Z') else {
        return t.to_owned();
    };
    let (whole, frac) = match body.rsplit_once('.') {
        Some((w, f)) if w.contains('T') => (w, f),
        _ => (body, ""),
    };
    let mut digits: String = frac.chars().take(3).collect();
    while digits.len() < 3 {
        digits.push('0');
    }
    format!("{whole}.{digits}Z")
}

/// A filter given as JSON (an object in the Mongo-style language of `llmem_core::filter`).
pub fn parse_filter(v: Option<&Value>) -> Result<Filter, ApiError> {
    match v {
        None | Some(Value::Null) => Ok(Filter::All),
        Some(v) => Filter::parse(v).map_err(|e| ApiError::bad(format!("`filter`: {e}"))),
    }
}

/// The memory operations, on one store and (when configured) one embedder.
#[derive(Debug, Clone)]
pub struct MemApi {
    store: Arc<dyn MemoryStore>,
    embedder: Option<Arc<dyn Embedder>>,
    /// The server's open sessions, scrubbed by a forget together with their files.
    sessions: Option<Arc<llmem::Sessions>>,
    /// Where sessions are saved, when no [`llmem::Sessions`] is given (MCP over stdio).
    sessions_dir: Option<std::path::PathBuf>,
    /// The store embeds what it is given without a vector (`retrieval.deferred_embedding`).
    deferred: bool,
}

impl MemApi {
    pub fn new(store: Arc<dyn MemoryStore>, embedder: Option<Arc<dyn Embedder>>) -> Self {
        MemApi {
            store,
            embedder,
            sessions: None,
            sessions_dir: None,
            deferred: false,
        }
    }

    /// Memories are stored without waiting for their vectors: the store (an
    /// [`llmem::DeferredStore`]) embeds them in the background.
    pub fn deferring(mut self, on: bool) -> Self {
        self.deferred = on;
        self
    }

    /// A forget also scrubs these sessions (open and saved) of what it forgets.
    pub fn with_sessions(mut self, sessions: Arc<llmem::Sessions>) -> Self {
        self.sessions = Some(sessions);
        self
    }

    /// A forget also scrubs the sessions saved under `tiers.dir` of what it forgets.
    pub fn with_sessions_in(mut self, tiers: &llmem::TierSettings) -> Self {
        self.sessions_dir = tiers.dir.as_ref().map(|d| d.join("sessions"));
        self
    }

    /// Forgets the user's memories that pass `filter`, for good (see `llmem::forget_user`).
    async fn forget(&self, user: &str, filter: &Filter) -> Result<llmem::Forgotten, ApiError> {
        Ok(match &self.sessions {
            Some(s) => s.forget(user, filter).await?,
            None => {
                llmem::forget_user(&*self.store, self.sessions_dir.as_deref(), user, filter).await?
            }
        })
    }

    async fn embed(&self, texts: &[String]) -> Result<Vec<Option<Vec<f32>>>, ApiError> {
        match &self.embedder {
            None => Ok(vec![None; texts.len()]),
            Some(e) => Ok(e.embed(texts).await?.into_iter().map(Some).collect()),
        }
    }

    /// Stores each text as one memory of `kind` (default `knowledge`) with `metadata`.
    pub async fn add(
        &self,
        p: &Principal,
        user_id: Option<&str>,
        texts: Vec<String>,
        kind: Option<&str>,
        metadata: Map<String, Value>,
    ) -> Result<Vec<MemoryOut>, ApiError> {
        let tenant = p.user_scope(user_id)?;
        let kind = kind
            .map(RecordKind::parse)
            .transpose()
            .map_err(|e| ApiError::bad(format!("`kind`: {e}")))?
            .unwrap_or(RecordKind::Knowledge);
        let texts: Vec<String> = texts
            .into_iter()
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty())
            .collect();
        if texts.is_empty() {
            return Err(ApiError::bad(
                "nothing to remember: send `text`, or `messages` with some content",
            ));
        }
        if texts.len() > MAX_RESULTS {
            return Err(ApiError::bad(format!(
                "{} memories in one request: send at most {MAX_RESULTS}",
                texts.len()
            )));
        }
        if let Some(t) = texts.iter().find(|t| t.len() > MAX_TEXT) {
            return Err(ApiError::bad(format!(
                "a memory of {} bytes: the most is {MAX_TEXT}",
                t.len()
            )));
        }
        let vectors = if self.deferred {
            vec![None; texts.len()]
        } else {
            self.embed(&texts).await?
        };
        let records: Vec<MemoryRecord> = texts
            .into_iter()
            .zip(vectors)
            .map(|(t, v)| {
                let mut r = MemoryRecord::new(tenant.clone(), t).with_kind(kind);
                r.metadata = metadata.clone();
                r.embedding = v;
                r
            })
            .collect();
        self.store.put(records.clone()).await?;
        Ok(records
            .into_iter()
            .map(|r| MemoryOut::of(p, r).event("ADD"))
            .collect())
    }

    async fn record(
        &self,
        p: &Principal,
        user_id: Option<&str>,
        id: &str,
    ) -> Result<MemoryRecord, ApiError> {
        let scope = Scope::tenant(p.user_scope(user_id)?);
        self.store
            .get(&scope, &[id.to_owned()])
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| ApiError::not_found(id))
    }

    pub async fn get(
        &self,
        p: &Principal,
        user_id: Option<&str>,
        id: &str,
    ) -> Result<MemoryOut, ApiError> {
        Ok(MemoryOut::of(p, self.record(p, user_id, id).await?))
    }

    /// The user's memories that pass `filter`, oldest first, at most `limit` (default 100);
    /// earlier versions of updated memories are left out.
    pub async fn list(
        &self,
        p: &Principal,
        user_id: Option<&str>,
        filter: Option<&Value>,
        limit: Option<usize>,
    ) -> Result<Vec<MemoryOut>, ApiError> {
        let scope = Scope::tenant(p.user_scope(user_id)?);
        let filter = parse_filter(filter)?;
        let limit = limit.unwrap_or(100).clamp(1, MAX_RESULTS);
        // Earlier versions of updated memories are history, not memories to list.
        let mut records = self.store.query(&scope, &filter, Some(limit)).await?;
        if records.iter().any(MemoryRecord::is_superseded) {
            records = self.store.query(&scope, &filter, None).await?;
            records.retain(|r| !r.is_superseded());
            records.truncate(limit);
        }
        Ok(records.into_iter().map(|r| MemoryOut::of(p, r)).collect())
    }

    /// The `k` best memories for `query` (hybrid when an embedder is configured), best first.
    pub async fn search(
        &self,
        p: &Principal,
        user_id: Option<&str>,
        query: &str,
        k: usize,
        filter: Option<&Value>,
    ) -> Result<Vec<MemoryOut>, ApiError> {
        let scope = Scope::tenant(p.user_scope(user_id)?);
        if query.trim().is_empty() {
            return Err(ApiError::bad("`query` is empty: say what to search for"));
        }
        if query.len() > MAX_TEXT {
            return Err(ApiError::bad(format!(
                "a query of {} bytes: the most is {MAX_TEXT}",
                query.len()
            )));
        }
        let k = k.clamp(1, MAX_RESULTS);
        let mut request = SearchRequest::text(query, k).with_filter(parse_filter(filter)?);
        if let Some(v) = self.embed(&[query.to_owned()]).await?.pop().flatten() {
            request = request.with_vector(v);
        }
        let hits: Vec<ScoredRecord> = self.store.search(&scope, &request).await?;
        Ok(hits
            .into_iter()
            .map(|h| {
                let mut m = MemoryOut::of(p, h.record);
                m.score = Some(h.score);
                m
            })
            .collect())
    }

    /// Replaces a memory's text (and, when given, its metadata); its id and creation time stay,
    /// and its previous version is kept as an earlier version (`llmem::update_memory`).
    pub async fn update(
        &self,
        p: &Principal,
        user_id: Option<&str>,
        id: &str,
        text: &str,
        metadata: Option<Map<String, Value>>,
    ) -> Result<MemoryOut, ApiError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(ApiError::bad("`text` is empty: send the memory's new text"));
        }
        if text.len() > MAX_TEXT {
            return Err(ApiError::bad(format!(
                "a memory of {} bytes: the most is {MAX_TEXT}",
                text.len()
            )));
        }
        let user = p.user_scope(user_id)?;
        let r = llmem::update_memory(
            &self.store,
            self.embedder.as_ref(),
            &user,
            id,
            text,
            metadata,
            None,
        )
        .await
        .map_err(|e| match e {
            llmem::Error::NotFound { .. } => ApiError::not_found(id),
            e => e.into(),
        })?;
        Ok(MemoryOut::of(p, r).event("UPDATE"))
    }

    pub async fn delete(
        &self,
        p: &Principal,
        user_id: Option<&str>,
        id: &str,
    ) -> Result<(), ApiError> {
        let user = p.user_scope(user_id)?;
        let only = Filter::parse(&json!({ "id": id }))
            .map_err(|e| ApiError::bad(format!("memory id `{id}`: {e}")))?;
        match self.forget(&user, &only).await?.memories {
            0 => Err(ApiError::not_found(id)),
            _ => Ok(()),
        }
    }

    /// Forgets the user's memories that pass `filter` in every tier, for good, with their
    /// earlier versions and the quotes of their text in sessions; returns how many went.
    pub async fn delete_where(
        &self,
        p: &Principal,
        user_id: Option<&str>,
        filter: Option<&Value>,
    ) -> Result<usize, ApiError> {
        let user = p.user_scope(user_id)?;
        Ok(self.forget(&user, &parse_filter(filter)?).await?.memories)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenant_key_cannot_name_its_way_into_another_tenant() {
        let p = Principal::tenant("acme", false);
        assert_eq!(p.user_scope(None).unwrap(), "acme");
        assert_eq!(p.user_scope(Some("bob")).unwrap(), "acme/bob");
        assert!(p.user_scope(Some("../globex")).is_err());
        assert!(p.user_scope(Some("globex/bob")).is_err());
        assert!(p.user_scope(Some(&"x".repeat(129))).is_err());
        assert_eq!(Principal::open().user_scope(Some("bob")).unwrap(), "bob");
    }

    #[test]
    fn times_have_three_fraction_digits() {
        assert_eq!(
            millis_rfc3339("2026-12-04T08:00:25.12Z"),
            "2026-12-04T08:00:25.120Z"
        );
        assert_eq!(
            millis_rfc3339("2026-12-04T08:00:25Z"),
            "2026-12-04T08:00:25.000Z"
        );
        assert_eq!(
            millis_rfc3339("2026-12-04T08:00:25.107Z"),
            "2026-12-04T08:00:25.107Z"
        );
    }

    #[test]
    fn errors_map_to_statuses_by_kind() {
        let provider = |status| llmem::Error::Provider {
            provider: "up".into(),
            status,
            message: "m".into(),
            retry_after: None,
        };
        assert_eq!(ApiError::from_llmem(&provider(Some(401))).status, 502);
        let busy = ApiError::from_llmem(&provider(Some(429)));
        assert_eq!((busy.status.as_u16(), busy.retry_after), (503, Some(1)));
        assert_eq!(
            ApiError::from_llmem(&llmem::Error::invalid("x")).status,
            400
        );
    }
}
