//! The demo pages and browser SDK, embedded in the binary at build time so
//! `serve` needs no files on disk.

use axum::extract::Path;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use rust_embed::RustEmbed;

#[derive(RustEmbed)]
#[folder = "../../web/"]
struct Assets;

fn content_type(path: &str) -> &'static str {
    match path.rsplit('.').next().unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "ts" => "text/plain; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "json" => "application/json",
        _ => "application/octet-stream",
    }
}

/// Serves one embedded file, or 404.
pub fn file(path: &str) -> Response {
    match Assets::get(path) {
        Some(f) => (
            [
                (header::CONTENT_TYPE, content_type(path)),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            f.data,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "not found\n").into_response(),
    }
}

pub async fn sdk(Path(rest): Path<String>) -> Response {
    file(&format!("sdk/{rest}"))
}

pub async fn assets(Path(rest): Path<String>) -> Response {
    file(&format!("assets/{rest}"))
}

pub fn page(name: &'static str) -> impl Fn() -> std::future::Ready<Response> + Clone {
    move || std::future::ready(file(&format!("pages/{name}.html")))
}
