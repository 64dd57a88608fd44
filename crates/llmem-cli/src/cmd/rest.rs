//! The memory REST API of `llmem serve` (`/v1/memories`), the key administration routes
//! (`/v1/admin/keys`) and the OpenAPI document generated from them (`/openapi.json`,
//! committed as docs/openapi.json).
//!
//! Every handler gets the caller's [`Principal`] from the authentication layer of
//! [`super::serve`] and reaches only that caller's tenant.

use std::sync::Arc;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{FromRequest, Path, Query, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Extension, Json, Router};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};
use utoipa::OpenApi;

use super::keys::{KeyInfo, KeyStore, check_tenant};
use super::memapi::{ApiError, MemApi, MemoryOut, Principal};

/// What the REST handlers share.
#[derive(Debug, Clone)]
pub struct RestState {
    pub api: Arc<MemApi>,
    pub keys: Option<Arc<KeyStore>>,
}

type Reply = Result<Response, ApiError>;

/// A JSON body, with every way it can be wrong (too large, not JSON, wrong shape) answered as
/// an OpenAI-style error that says what to fix.
pub struct Body<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|r| {
                if r.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::new(
                        r.status(),
                        "invalid_request_error",
                        "the request body is larger than server.max_body_bytes allows",
                    )
                } else {
                    ApiError::bad(format!(
                        "could not read the request body: {}",
                        r.body_text()
                    ))
                }
            })?;
        let value: Value = serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::bad(format!("the body is not valid JSON: {e}")))?;
        serde_json::from_value(value)
            .map(Body)
            .map_err(|e| ApiError::bad(format!("the body: {e}")))
    }
}

fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    q.map(|Query(t)| t)
        .map_err(|e| ApiError::bad(format!("the query string: {}", e.body_text())))
}

fn path<T>(p: Result<Path<T>, PathRejection>) -> Result<T, ApiError> {
    p.map(|Path(t)| t)
        .map_err(|e| ApiError::bad(format!("the path: {}", e.body_text())))
}

/// A filter sent in a query string: a JSON object, URL-encoded.
fn query_filter(s: Option<&str>) -> Result<Option<Value>, ApiError> {
    s.filter(|s| !s.trim().is_empty())
        .map(|s| {
            serde_json::from_str(s)
                .map_err(|e| ApiError::bad(format!("`filter` is not a JSON object: {e}")))
        })
        .transpose()
}

/// A chat message given to `add`: its content is remembered.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct MessageIn {
    /// `user`, `assistant`, …
    #[serde(default)]
    pub role: Option<String>,
    pub content: String,
}

/// `POST /v1/memories`: a text, or chat messages (one memory per message with content).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct AddRequest {
    #[serde(default)]
    pub text: Option<String>,
    #[serde(default)]
    pub messages: Option<Vec<MessageIn>>,
    /// The end user inside your tenant.
    #[serde(default)]
    pub user_id: Option<String>,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub metadata: Option<Map<String, Value>>,
    /// `knowledge` (default), `conversation`, `episode` or `summary`.
    #[serde(default)]
    pub kind: Option<String>,
}

/// `POST /v1/memories/search`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct SearchIn {
    pub query: String,
    #[serde(default)]
    pub user_id: Option<String>,
    /// How many results (default 10; `k` and `top_k` are accepted too).
    #[serde(default, alias = "k", alias = "top_k")]
    pub limit: Option<usize>,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub filter: Option<Value>,
}

/// `PUT /v1/memories/{id}`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct UpdateIn {
    pub text: String,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub metadata: Option<Map<String, Value>>,
    #[serde(default)]
    pub user_id: Option<String>,
}

/// The query of `GET /v1/memories` and of the deletes.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// The end user inside your tenant.
    #[serde(default)]
    pub user_id: Option<String>,
    /// At most this many (default 100, at most 1000).
    #[serde(default)]
    pub limit: Option<usize>,
    /// A filter on metadata, as URL-encoded JSON (`{"topic": "food"}`).
    #[serde(default)]
    pub filter: Option<String>,
    /// `DELETE` without a filter deletes everything of the user only with `all=true`.
    #[serde(default)]
    pub all: Option<bool>,
}

/// The query naming the end user of a single-memory route.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UserParam {
    #[serde(default)]
    pub user_id: Option<String>,
}

/// A list of memories.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Results {
    pub results: Vec<MemoryOut>,
}

/// How many memories a delete removed.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Deleted {
    pub deleted: usize,
}

/// `POST /v1/admin/keys`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct KeyIn {
    pub tenant: String,
    #[serde(default)]
    pub admin: bool,
}

/// A new key: shown in this answer only.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct NewKey {
    pub id: String,
    pub key: String,
    pub tenant: String,
    pub admin: bool,
    pub created_at: String,
}

/// The keys.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct KeyList {
    pub data: Vec<KeyInfo>,
}

/// An error: always this shape.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    pub message: String,
    /// `invalid_request_error`, `authentication_error`, `permission_error`,
    /// `not_found_error`, `upstream_error`, `temporarily_unavailable`, `no_upstream`,
    /// `budget_exceeded`, `unsupported`, `server_error`.
    #[serde(rename = "type")]
    pub kind: String,
    pub code: u16,
}

#[utoipa::path(post, path = "/v1/memories", tag = "memories", request_body = AddRequest,
    responses((status = 200, description = "The memories made", body = Results),
              (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn add(
    State(s): State<RestState>,
    Extension(p): Extension<Principal>,
    Body(req): Body<AddRequest>,
) -> Reply {
    let mut texts: Vec<String> = req.text.into_iter().collect();
    for m in req.messages.unwrap_or_default() {
        if m.role.as_deref() == Some("system") {
            continue;
        }
        texts.push(m.content);
    }
    let out = s
        .api
        .add(
            &p,
            req.user_id.as_deref(),
            texts,
            req.kind.as_deref(),
            req.metadata.unwrap_or_default(),
        )
        .await?;
    Ok(Json(Results { results: out }).into_response())
}

#[utoipa::path(get, path = "/v1/memories/{id}", tag = "memories",
    params(("id" = String, Path, description = "The memory's id"), UserParam),
    responses((status = 200, body = MemoryOut), (status = 404, body = ErrorBody)))]
async fn get_one(
    State(s): State<RestState>,
    Extension(p): Extension<Principal>,
    id: Result<Path<String>, PathRejection>,
    q: Result<Query<UserParam>, QueryRejection>,
) -> Reply {
    let (id, q) = (path(id)?, query(q)?);
    Ok(Json(s.api.get(&p, q.user_id.as_deref(), &id).await?).into_response())
}

#[utoipa::path(get, path = "/v1/memories", tag = "memories", params(ListParams),
    responses((status = 200, body = Results), (status = 400, body = ErrorBody)))]
async fn list(
    State(s): State<RestState>,
    Extension(p): Extension<Principal>,
    q: Result<Query<ListParams>, QueryRejection>,
) -> Reply {
    let q = query(q)?;
    let filter = query_filter(q.filter.as_deref())?;
    let out = s
        .api
        .list(&p, q.user_id.as_deref(), filter.as_ref(), q.limit)
        .await?;
    Ok(Json(Results { results: out }).into_response())
}

#[utoipa::path(post, path = "/v1/memories/search", tag = "memories", request_body = SearchIn,
    responses((status = 200, description = "Best first", body = Results),
              (status = 400, body = ErrorBody)))]
async fn search(
    State(s): State<RestState>,
    Extension(p): Extension<Principal>,
    Body(req): Body<SearchIn>,
) -> Reply {
    let out = s
        .api
        .search(
            &p,
            req.user_id.as_deref(),
            &req.query,
            req.limit.unwrap_or(10),
            req.filter.as_ref(),
        )
        .await?;
    Ok(Json(Results { results: out }).into_response())
}

#[utoipa::path(put, path = "/v1/memories/{id}", tag = "memories", request_body = UpdateIn,
    params(("id" = String, Path, description = "The memory's id")),
    responses((status = 200, body = MemoryOut), (status = 404, body = ErrorBody)))]
async fn update(
    State(s): State<RestState>,
    Extension(p): Extension<Principal>,
    id: Result<Path<String>, PathRejection>,
    Body(req): Body<UpdateIn>,
) -> Reply {
    let id = path(id)?;
    let out = s
        .api
        .update(&p, req.user_id.as_deref(), &id, &req.text, req.metadata)
        .await?;
    Ok(Json(out).into_response())
}

#[utoipa::path(delete, path = "/v1/memories/{id}", tag = "memories",
    params(("id" = String, Path, description = "The memory's id"), UserParam),
    responses((status = 200, body = Deleted), (status = 404, body = ErrorBody)))]
async fn delete_one(
    State(s): State<RestState>,
    Extension(p): Extension<Principal>,
    id: Result<Path<String>, PathRejection>,
    q: Result<Query<UserParam>, QueryRejection>,
) -> Reply {
    let (id, q) = (path(id)?, query(q)?);
    s.api.delete(&p, q.user_id.as_deref(), &id).await?;
    Ok(Json(Deleted { deleted: 1 }).into_response())
}

#[utoipa::path(delete, path = "/v1/memories", tag = "memories", params(ListParams),
    responses((status = 200, body = Deleted), (status = 400, body = ErrorBody)))]
async fn delete_where(
    State(s): State<RestState>,
    Extension(p): Extension<Principal>,
    q: Result<Query<ListParams>, QueryRejection>,
) -> Reply {
    let q = query(q)?;
    let filter = query_filter(q.filter.as_deref())?;
    if filter.is_none() && q.all != Some(true) {
        return Err(ApiError::bad(
            "deleting without a filter deletes all of the user's memories: pass `filter`, \
             or `all=true` to mean it",
        ));
    }
    let n = s
        .api
        .delete_where(&p, q.user_id.as_deref(), filter.as_ref())
        .await?;
    Ok(Json(Deleted { deleted: n }).into_response())
}

fn admin_keys(s: &RestState, p: &Principal) -> Result<Arc<KeyStore>, ApiError> {
    if !p.admin {
        return Err(ApiError::forbidden(
            "this key may not manage keys: use an admin key (`llmem keys add --admin`)",
        ));
    }
    s.keys.clone().ok_or_else(|| {
        ApiError::bad("this server has no keys file: set tiers.dir or server.keys_file")
    })
}

fn internal(e: anyhow::Error) -> ApiError {
    ApiError::new(
        axum::http::StatusCode::INTERNAL_SERVER_ERROR,
        "server_error",
        format!("{e:#}"),
    )
}

#[utoipa::path(post, path = "/v1/admin/keys", tag = "admin", request_body = KeyIn,
    responses((status = 200, body = NewKey), (status = 403, body = ErrorBody)))]
async fn add_key(
    State(s): State<RestState>,
    Extension(p): Extension<Principal>,
    Body(req): Body<KeyIn>,
) -> Reply {
    let keys = admin_keys(&s, &p)?;
    check_tenant(&req.tenant)?;
    let (info, key) = keys.add(&req.tenant, req.admin).map_err(internal)?;
    tracing::info!(id = %info.id, tenant = %info.tenant, admin = info.admin, "key made");
    Ok(Json(NewKey {
        id: info.id,
        key,
        tenant: info.tenant,
        admin: info.admin,
        created_at: info.created_at,
    })
    .into_response())
}

#[utoipa::path(get, path = "/v1/admin/keys", tag = "admin",
    responses((status = 200, body = KeyList), (status = 403, body = ErrorBody)))]
async fn list_keys(State(s): State<RestState>, Extension(p): Extension<Principal>) -> Reply {
    let keys = admin_keys(&s, &p)?;
    Ok(Json(KeyList { data: keys.list() }).into_response())
}

#[utoipa::path(delete, path = "/v1/admin/keys/{id}", tag = "admin",
    params(("id" = String, Path, description = "The key's id")),
    responses((status = 200, description = "Revoked"), (status = 404, body = ErrorBody)))]
async fn revoke_key(
    State(s): State<RestState>,
    Extension(p): Extension<Principal>,
    id: Result<Path<String>, PathRejection>,
) -> Reply {
    let keys = admin_keys(&s, &p)?;
    let id = path(id)?;
    if !keys.revoke(&id).map_err(internal)? {
        return Err(ApiError::new(
            axum::http::StatusCode::NOT_FOUND,
            "not_found_error",
            format!("no key `{id}`"),
        ));
    }
    tracing::info!(%id, "key revoked");
    Ok(Json(json!({"id": id, "revoked": true})).into_response())
}

/// The OpenAPI document of the memory and key routes.
#[derive(OpenApi)]
#[openapi(
    info(title = "llmem memory API", description = "Long-term memory over HTTP: add, get, \
        list, search, update and delete memories, each key reaching only its own tenant. \
        Every route needs `Authorization: Bearer <key>`."),
    paths(add, get_one, list, search, update, delete_one, delete_where, add_key, list_keys,
        revoke_key),
    components(schemas(MemoryOut, Results, Deleted, AddRequest, MessageIn, SearchIn, UpdateIn,
        KeyIn, NewKey, KeyList, KeyInfo, ErrorBody, ErrorDetail)),
    tags((name = "memories", description = "A tenant's memories"),
         (name = "admin", description = "API keys (admin keys only)"))
)]
pub struct ApiDoc;

/// The OpenAPI document as pretty JSON (what docs/openapi.json holds).
pub fn openapi_json() -> String {
    ApiDoc::openapi()
        .to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}

/// The routes, to be placed behind the authentication layer.
pub fn router(state: RestState) -> Router {
    Router::new()
        .route("/v1/memories", post(add).get(list).delete(delete_where))
        .route("/v1/memories/search", post(search))
        .route(
            "/v1/memories/{id}",
            get(get_one).put(update).delete(delete_one),
        )
        .route("/v1/admin/keys", post(add_key).get(list_keys))
        .route("/v1/admin/keys/{id}", delete(revoke_key))
        .with_state(state)
}
