//! The browser UI: `frontend/dist` (built by `npm run build`), embedded in release builds and
//! read from disk in debug builds, served at `/` with a fallback to `index.html` for the app's
//! own routes. Hashed assets are cached for a year; `index.html` is revalidated every time, so a
//! new release is picked up on the next load. A build made without `frontend/dist` serves a page
//! saying how to build it. `build.rs` sets `QUORUM_FRONTEND_DIST` to the folder.

use axum::http::{HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};

use super::error::ApiError;

#[derive(rust_embed::Embed)]
#[folder = "$QUORUM_FRONTEND_DIST/"]
#[allow_missing = true]
struct Dist;

const NOT_BUILT: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Quorum</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{font:16px/1.5 system-ui,sans-serif;max-width:40rem;margin:4rem auto;padding:0 1rem;color:#1d2330}code{background:#eef1f5;padding:.1rem .3rem;border-radius:3px}</style>
</head><body>
<h1>Quorum is running, without its browser UI</h1>
<p>This build of the portal was made without <code>frontend/dist</code>. The HTTP API works
(<a href="/api/v1/openapi.json">/api/v1/openapi.json</a>).</p>
<p>To get the UI, run <code>cargo xtask run</code>, or build it yourself with
<code>cd frontend &amp;&amp; npm ci &amp;&amp; npm run build</code> and rebuild <code>quorum</code>
(release builds embed it).</p>
</body></html>"#;

fn file(path: &str, cache: &'static str) -> Option<Response> {
    let f = Dist::get(path)?;
    let mime = f.metadata.mimetype().to_owned();
    let mut r = f.data.into_owned().into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(&mime)
            .unwrap_or(HeaderValue::from_static("application/octet-stream")),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    Some(r)
}

/// Everything that is not an API route or an operational endpoint.
pub async fn serve(method: Method, uri: Uri) -> Response {
    let path = uri.path().trim_start_matches('/');
    if path.starts_with("api/") || path == "api" {
        return super::not_found().await.into_response();
    }
    if method != Method::GET && method != Method::HEAD {
        return super::method_not_allowed().await.into_response();
    }
    // Vite names every file under assets/ by its content hash.
    let cache = if path.starts_with("assets/") {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    if !path.is_empty()
        && let Some(r) = file(path, cache)
    {
        return r;
    }
    // A missing asset is a 404, not the app: the browser asked for a file.
    if path.starts_with("assets/") {
        return ApiError::not_found("file").into_response();
    }
    file("index.html", "no-cache").unwrap_or_else(|| {
        (
            StatusCode::OK,
            [
                (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            NOT_BUILT,
        )
            .into_response()
    })
}
