//! The languages this installation runs, and how many live workers serve each.

use axum::extract::State;
use serde::Serialize;
use voidrunner_shared::Language;

use crate::error::{ApiError, Json};
use crate::http::AuthUser;
use crate::openapi::{Common, Malformed};
use crate::routes::workers::live_workers;
use crate::state::AppState;

#[derive(Serialize, utoipa::ToSchema)]
pub struct LanguageResponse {
    /// The name tasks and runs give (`script_type`, `language`).
    id: Language,
    /// Other names accepted for it.
    aliases: Vec<&'static str>,
    name: &'static str,
    version: &'static str,
    /// The main file's name; `voidrunner run` picks the language by its extension.
    main_file: &'static str,
    /// Whether programs are compiled first (a failed build ends as a compile error, exit
    /// code 242).
    compiled: bool,
    /// The image the catalog runs it in (a worker may be configured with another).
    image: String,
    /// Memory and time a program gets when it does not ask, if the language needs more than
    /// the installation's defaults (compilers and virtual machines do).
    default_memory_mb: Option<u32>,
    default_timeout_seconds: Option<u32>,
    /// Live workers, not draining, whose sandbox can run it. With none, its executions wait
    /// in their lane until a worker that can comes.
    workers: u32,
}

/// `GET /api/v1/languages`.
#[utoipa::path(
    operation_id = "language_list",
    get,
    path = "/languages",
    tag = "fleet",
    responses((status = 200, description = "Every language, with the live workers that serve it", body = Vec<LanguageResponse>), Malformed, Common),
    security(("bearer" = []), ("api_key" = []))
)]
pub async fn list(
    State(state): State<AppState>,
    AuthUser(_): AuthUser,
) -> Result<Json<Vec<LanguageResponse>>, ApiError> {
    let workers = live_workers(&state).await?;
    let serving = |language: Language| {
        let count = workers
            .iter()
            .filter(|worker| !worker.is_draining() && worker.serves(language))
            .count();
        u32::try_from(count).unwrap_or(u32::MAX)
    };
    Ok(Json(
        Language::all()
            .iter()
            .map(|&language| LanguageResponse {
                id: language,
                aliases: language.aliases().collect(),
                name: language.display_name(),
                version: language.version(),
                main_file: language.main_file(),
                compiled: language.is_compiled(),
                image: language.default_image(),
                default_memory_mb: language.definition().memory_mb,
                default_timeout_seconds: language.definition().timeout_seconds,
                workers: serving(language),
            })
            .collect(),
    ))
}
