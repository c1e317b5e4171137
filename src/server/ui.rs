//! The chat page at `/`: plain HTML, CSS and JavaScript (ui/) compiled into
//! the binary, so it works offline and nothing is fetched from elsewhere.
//! It streams replies from `/v1/chat/completions`, keeps conversations in
//! the browser's localStorage, and renders the model's text as Markdown by
//! building the elements itself (headings, emphasis, code, lists, quotes,
//! http(s) links), every piece of text through `textContent`, never as
//! HTML; the Content-Security-Policy allows
//! scripts, styles and connections from this server alone. The page and its
//! two files are served without the API key (a browser cannot send one
//! when it opens a page); the page asks for the key when the API answers
//! 401. Tested in headless Chromium by tests/solo/server_ui.rs.

use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

const INDEX: &str = include_str!("ui/index.html");
const SCRIPT: &str = include_str!("ui/app.js");
const STYLE: &str = include_str!("ui/app.css");

/// Paths of the page's files (served to anyone: they hold no data).
pub const PATHS: [&str; 3] = ["/", "/ui/app.js", "/ui/app.css"];

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                   connect-src 'self'; img-src 'self' data:; base-uri 'none'; \
                   form-action 'none'; frame-ancestors 'none'";

fn file(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// The page's routes.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route(
            "/",
            get(|| async { file("text/html; charset=utf-8", INDEX) }),
        )
        .route(
            "/ui/app.js",
            get(|| async { file("text/javascript; charset=utf-8", SCRIPT) }),
        )
        .route(
            "/ui/app.css",
            get(|| async { file("text/css; charset=utf-8", STYLE) }),
        )
}
