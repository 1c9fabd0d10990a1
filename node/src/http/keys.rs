//! `/v1/keys`: making, listing and revoking the cluster's API keys (admin
//! keys only). A key's secret is answered once, when it is made.

use std::collections::BTreeSet;
use std::sync::Arc;

use atoll_auth::{Caller, Need, Role};
use atoll_cluster::api_keys::KeySync;
use atoll_errors::ErrorKind;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::{Extension, Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiError, DoorError};

#[derive(Clone)]
pub struct KeysState {
    pub auth: Arc<atoll_auth::Auth>,
    pub sync: Arc<KeySync>,
}

pub fn router(state: KeysState) -> Router {
    Router::new()
        .route("/v1/keys", get(list).post(create))
        .route("/v1/keys/{name}", delete(revoke))
        .with_state(state)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewKey {
    name: String,
    role: Role,
    tables: Option<BTreeSet<String>>,
}

async fn create(
    State(st): State<KeysState>,
    Extension(caller): Extension<Caller>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    caller.may(Need::Admin)?;
    let asked: NewKey = serde_json::from_slice(&body).map_err(|e| {
        DoorError::new(
            ErrorKind::BadInput,
            format!(
                "the body must be {{\"name\": \"...\", \"role\": \"ingest\"|\"query\"|\"admin\", \"tables\": [...]}} (tables optional): {e}"
            ),
        )
    })?;
    for t in asked.tables.iter().flatten() {
        atoll_store::validate_table_name(t)?;
    }
    let now_ms = atoll_store::now_micros() / 1000;
    let made = st
        .auth
        .registry()
        .write()
        .create(&asked.name, asked.role, asked.tables, now_ms)?;
    st.sync
        .changed()
        .await
        .map_err(|e| DoorError::new(ErrorKind::Internal, format!("cannot keep the key: {e}")))?;
    tracing::info!(name = %made.record.name, role = made.record.role.name(), by = %caller.name, "API key made");
    let r = &made.record;
    let body = json!({
        "name": r.name, "role": r.role, "tables": r.tables, "key": made.key, "created": r.created,
    });
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// Active keys, never their secrets.
async fn list(
    State(st): State<KeysState>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<Value>, ApiError> {
    caller.may(Need::Admin)?;
    let used = st.sync.last_used().await;
    let keys: Vec<Value> = st
        .auth
        .registry()
        .read()
        .records()
        .filter(|r| r.active())
        .map(|r| {
            json!({
                "name": r.name, "role": r.role, "tables": r.tables,
                "created": r.created, "last_used": used.get(&r.id),
            })
        })
        .collect();
    Ok(Json(json!({ "keys": keys })))
}

async fn revoke(
    State(st): State<KeysState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.may(Need::Admin)?;
    let now_ms = atoll_store::now_micros() / 1000;
    let gone = st.auth.registry().write().revoke(&name, now_ms)?;
    st.sync.changed().await.map_err(|e| {
        DoorError::new(
            ErrorKind::Internal,
            format!("cannot keep the revocation: {e}"),
        )
    })?;
    tracing::info!(name = %gone.name, by = %caller.name, "API key revoked");
    Ok(Json(json!({ "revoked": gone.name, "at": gone.revoked })))
}
