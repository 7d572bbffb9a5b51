//! The API reference page at `/docs`: Scalar renders `/openapi.json` with a script built into
//! the binary (see `build.rs`), served from this api, so the page works on a host without
//! internet and loads nothing from anywhere else (its content security policy says so).

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;

/// Scalar's version, part of the script's path, so that a new build is a new URL.
pub const SCALAR_VERSION: &str = env!("VOIDRUNNER_SCALAR_VERSION");

/// Where the page's script is served.
pub const SCRIPT_PATH: &str = concat!(
    "/docs/assets/api-reference-",
    env!("VOIDRUNNER_SCALAR_VERSION"),
    ".js"
);

/// The script, gzip-compressed at build time.
static SCRIPT_GZIP: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/api-reference.js.gz"));

/// Only this origin: the page, its script, the document and the "try it" requests. Scalar
/// injects its styles inline; its default fonts (from its CDN) are turned off.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
                      font-src 'self' data:; img-src 'self' data:; connect-src 'self'; \
                      frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// `/docs` and its assets.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/docs", get(page))
        .route(SCRIPT_PATH, get(script))
}

async fn page() -> Response {
    let page = format!(
        r#"<!doctype html>
<html lang="en">
  <head>
    <title>VoidRunner API</title>
    <meta charset="utf-8" />
    <meta name="viewport" content="width=device-width, initial-scale=1" />
  </head>
  <body>
    <noscript>The interactive reference needs JavaScript; the document itself is at <a href="/openapi.json">/openapi.json</a>.</noscript>
    <script id="api-reference" data-url="/openapi.json" data-configuration='{{"withDefaultFonts":false,"hideClientButton":true,"telemetry":false}}'></script>
    <script src="{SCRIPT_PATH}"></script>
  </body>
</html>"#
    );
    let mut response = Html(page).into_response();
    response.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(POLICY),
    );
    response
}

/// The script as built, compressed for clients that take gzip (every browser), else expanded.
async fn script(headers: HeaderMap) -> Response {
    let takes_gzip = headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|coding| {
            let mut parts = coding.split(';').map(str::trim);
            parts
                .next()
                .is_some_and(|name| name == "gzip" || name == "*")
                && !parts.any(|param| param.replace(' ', "") == "q=0")
        });
    let common = [
        (
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/javascript; charset=utf-8"),
        ),
        // The path changes with the version: what a browser keeps never goes stale.
        (
            header::CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=31536000, immutable"),
        ),
        (header::VARY, HeaderValue::from_static("accept-encoding")),
    ];
    if takes_gzip {
        let mut response = (common, SCRIPT_GZIP).into_response();
        response
            .headers_mut()
            .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        return response;
    }
    let mut script = Vec::new();
    match std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(SCRIPT_GZIP), &mut script) {
        Ok(_) => (common, script).into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}
