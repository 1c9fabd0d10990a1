//! The dashboard served at `/`, built from `app/` by the build script and
//! embedded in the binary, so that a single `atoll` file is all a node needs.

use axum::Router;
use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use rust_embed::Embed;

#[derive(Embed)]
#[folder = "$OUT_DIR/dist"]
struct Assets;

pub fn router() -> Router {
    Router::new()
        .route("/", get(index))
        .route("/assets/{*file}", get(asset))
        // Browsers ask for an icon on every page; `/favicon.ico` for those
        // that do not read the page's link.
        .route("/favicon.svg", get(favicon))
        .route("/favicon.ico", get(favicon))
}

async fn index() -> Response {
    serve("index.html", "no-cache")
}

async fn favicon() -> Response {
    serve("favicon.svg", "public, max-age=86400")
}

/// Asset names carry a content hash, so they may be cached for good.
async fn asset(Path(file): Path<String>) -> Response {
    serve(
        &format!("assets/{file}"),
        "public, max-age=31536000, immutable",
    )
}

fn serve(path: &str, cache: &'static str) -> Response {
    match Assets::get(path) {
        Some(file) => (
            [
                (header::CONTENT_TYPE, file.metadata.mimetype().to_string()),
                (header::CACHE_CONTROL, cache.to_string()),
            ],
            file.data,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "no such dashboard file").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_and_its_assets_are_embedded() {
        let index = Assets::get("index.html").expect("index.html embedded");
        let html = String::from_utf8_lossy(&index.data);
        if std::env::var_os("ATOLL_SKIP_UI").is_some() {
            return;
        }
        let scripts: Vec<&str> = html
            .split("src=\"/")
            .skip(1)
            .map(|s| s.split('"').next().unwrap())
            .collect();
        assert!(!scripts.is_empty(), "index.html names its script: {html}");
        for s in scripts {
            let file = Assets::get(s).unwrap_or_else(|| panic!("{s} embedded"));
            assert_eq!(file.metadata.mimetype(), "text/javascript");
        }
    }
}
