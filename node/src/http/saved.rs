//! `/v1/saved`: the dashboard's saved views and boards, cluster-wide
//! (`atoll_cluster::saved`). Any unscoped query or admin key may read and
//! change them: they are the team's shared views, and they name tables.

use std::sync::Arc;

use atoll_auth::{Caller, Need};
use atoll_cluster::saved::{Item, Kind, Saved};
use atoll_errors::ErrorKind;
use axum::extract::{Path, State};
use axum::routing::{get, put};
use axum::{Extension, Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiError, DoorError};

/// A body larger than any valid one (a view's state is at most 8 KiB).
const MAX_BODY: usize = 64 * 1024;

pub fn router(saved: Arc<Saved>) -> Router {
    Router::new()
        .route("/v1/saved", get(list))
        .route("/v1/saved/{kind}/{name}", put(save).delete(remove))
        .with_state(saved)
}

fn shown(i: &Item) -> Value {
    let updated = atoll_store::rfc3339(i.updated);
    match i.kind {
        Kind::View => json!({"name": i.name, "state": i.state, "updated": updated, "by": i.by}),
        Kind::Board => json!({"name": i.name, "views": i.views, "updated": updated, "by": i.by}),
    }
}

async fn list(
    State(saved): State<Arc<Saved>>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<Value>, ApiError> {
    caller.may(Need::Saved)?;
    let items = saved.list();
    let of = |k: Kind| {
        items
            .iter()
            .filter(|i| i.kind == k)
            .map(shown)
            .collect::<Vec<_>>()
    };
    Ok(Json(
        json!({"views": of(Kind::View), "boards": of(Kind::Board)}),
    ))
}

/// `views` or `boards` in the path.
fn kind_of(path: &str) -> Result<Kind, DoorError> {
    match path {
        "views" => Ok(Kind::View),
        "boards" => Ok(Kind::Board),
        other => Err(DoorError::new(
            ErrorKind::NotFound,
            format!("/v1/saved/{other}/...: saved things are views or boards"),
        )),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ViewBody {
    state: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BoardBody {
    views: Vec<String>,
}

fn parse<T: serde::de::DeserializeOwned>(body: &[u8], shape: &str) -> Result<T, DoorError> {
    if body.len() > MAX_BODY {
        return Err(DoorError::new(
            ErrorKind::TooLarge,
            format!(
                "the body has {} bytes, at most {MAX_BODY} are read here",
                body.len()
            ),
        ));
    }
    serde_json::from_slice(body).map_err(|e| {
        DoorError::new(
            ErrorKind::BadInput,
            format!("the body must be {shape}: {e}"),
        )
    })
}

async fn save(
    State(saved): State<Arc<Saved>>,
    Extension(caller): Extension<Caller>,
    Path((kind, name)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    caller.may(Need::Saved)?;
    let item = match kind_of(&kind)? {
        Kind::View => {
            let b: ViewBody = parse(&body, r#"{"state": "the dashboard's URL query string"}"#)?;
            saved.save_view(&name, &b.state).await?
        }
        Kind::Board => {
            let b: BoardBody = parse(&body, r#"{"views": ["a saved view's name", ...]}"#)?;
            saved.save_board(&name, &b.views).await?
        }
    };
    tracing::info!(kind = item.kind.name(), name = %item.name, by = %caller.name, "saved");
    Ok(Json(shown(&item)))
}

async fn remove(
    State(saved): State<Arc<Saved>>,
    Extension(caller): Extension<Caller>,
    Path((kind, name)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    caller.may(Need::Saved)?;
    let gone = saved.delete(kind_of(&kind)?, &name).await?;
    tracing::info!(kind = gone.kind.name(), name = %gone.name, by = %caller.name, "saved item deleted");
    Ok(Json(
        json!({"deleted": gone.name, "kind": gone.kind.name()}),
    ))
}
