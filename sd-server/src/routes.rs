//! The HTTP routes and their handlers: each reads its body with [`ApiJson`], checks it, hands
//! generation and model loading to the [`Queue`] and awaits the answer.

use std::sync::{Arc, Mutex};

use axum::extract::{DefaultBodyLimit, FromRef, Query, State};
use axum::middleware;
use axum::response::{Html, IntoResponse};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use crate::a1111::{GenerationRequest, ImagesResponse, Mode, Plan};
use crate::api_error::ApiError;
use crate::auth::{self, Auth};
use crate::images::png_base64;
use crate::json::ApiJson;
use crate::limits::Limits;
use crate::loras::LoraEntry;
use crate::models::{ModelCatalog, ModelEntry};
use crate::openai::{self, ImageGenerationRequest, OpenAiError};
use crate::page::INDEX_HTML;
use crate::progress::ProgressResponse;
use crate::queue::{Done, Queue, Work};
use crate::samplers::{sampler_list, schedule_list};

/// The most text-encoder layers `CLIP_stop_at_last_layers` may skip (A1111's slider: 12).
const MAX_CLIP_SKIP: usize = 12;

/// Server settings requests can change (`POST /sdapi/v1/options`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// The default clip skip.
    pub clip_skip: usize,
}

/// What every handler sees.
#[derive(Clone)]
pub struct AppState {
    /// The job queue (and the resident model).
    pub queue: Arc<Queue>,
    /// The models that may be loaded.
    pub catalog: Arc<ModelCatalog>,
    /// The LoRAs loaded as side branches.
    pub loras: Arc<Vec<LoraEntry>>,
    /// Request caps.
    pub limits: Limits,
    /// Changeable settings.
    pub options: Arc<Mutex<Options>>,
    /// Credentials required.
    pub auth: Arc<Auth>,
}

impl FromRef<AppState> for Limits {
    fn from_ref(state: &AppState) -> Self {
        state.limits
    }
}

impl AppState {
    fn options(&self) -> Options {
        *self.options.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Every route, behind the credentials check and the body cap.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/sdapi/v1/txt2img", post(txt2img))
        .route("/sdapi/v1/img2img", post(img2img))
        .route("/sdapi/v1/progress", get(progress))
        .route("/sdapi/v1/interrupt", post(interrupt))
        .route("/sdapi/v1/sd-models", get(sd_models))
        .route("/sdapi/v1/options", get(get_options).post(set_options))
        .route("/sdapi/v1/samplers", get(samplers))
        .route("/sdapi/v1/schedulers", get(schedulers))
        .route("/sdapi/v1/loras", get(loras))
        .route("/v1/images/generations", post(openai_generations))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(state.limits.max_body))
        .layer(middleware::from_fn_with_state(
            state.auth.clone(),
            auth::require,
        ))
        .with_state(state)
}

async fn index() -> Html<&'static str> {
    Html(INDEX_HTML)
}

async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::NotFound(format!("no route {}", uri.path()))
}

/// Plans `request` off the async runtime (img2img decodes images), queues it and awaits it.
async fn run_generation(
    state: &AppState,
    request: GenerationRequest,
    mode: Mode,
) -> Result<ImagesResponse, ApiError> {
    let overridden = request
        .override_settings
        .as_ref()
        .and_then(|o| o.sd_model_checkpoint.as_deref());
    if let Some(name) = overridden {
        let field = "override_settings.sd_model_checkpoint";
        let wanted = state.catalog.find(field, name)?;
        let resident = state.queue.model().entry;
        if wanted != resident {
            return Err(ApiError::field(
                field,
                format!(
                    "{name} is not the loaded model ({}); switch with POST /sdapi/v1/options \
                     first (models are not switched per request)",
                    resident.title
                ),
            ));
        }
    }
    let clip_skip = state.options().clip_skip;
    let limits = state.limits;
    let plan: Plan = tokio::task::spawn_blocking(move || request.plan(mode, clip_skip, &limits))
        .await
        .map_err(|e| ApiError::Internal(format!("planning the request: {e}")))??;
    let label = plan.requests[0].prompt.clone();
    let ticket = state.queue.submit(Work::Generate {
        requests: plan.requests.clone(),
        label,
    })?;
    let batches = match ticket.wait().await? {
        Done::Images(batches) => batches,
        Done::Loaded(_) => return Err(ApiError::Internal("a generation loaded a model".into())),
    };
    let model = state.queue.model().entry.title;
    tokio::task::spawn_blocking(move || ImagesResponse::new(&plan, &batches, &model))
        .await
        .map_err(|e| ApiError::Internal(format!("encoding the images: {e}")))?
}

async fn txt2img(
    State(state): State<AppState>,
    ApiJson(request): ApiJson<GenerationRequest>,
) -> Result<Json<ImagesResponse>, ApiError> {
    run_generation(&state, request, Mode::Txt2Img)
        .await
        .map(Json)
}

async fn img2img(
    State(state): State<AppState>,
    ApiJson(request): ApiJson<GenerationRequest>,
) -> Result<Json<ImagesResponse>, ApiError> {
    run_generation(&state, request, Mode::Img2Img)
        .await
        .map(Json)
}

/// `GET /sdapi/v1/progress` query.
#[derive(Debug, Deserialize)]
struct ProgressQuery {
    skip_current_image: Option<bool>,
}

async fn progress(
    State(state): State<AppState>,
    Query(query): Query<ProgressQuery>,
) -> Result<Json<ProgressResponse>, ApiError> {
    let (running, interrupted, count) = state.queue.progress();
    let preview = running
        .as_ref()
        .and_then(|r| r.preview.clone())
        .filter(|_| !query.skip_current_image.unwrap_or(false));
    let current_image = match preview {
        None => None,
        Some(latents) => tokio::task::spawn_blocking(move || {
            let images = sd_pipeline::preview::latent_to_rgb(&latents).ok()?;
            png_base64(images.first()?, "").ok()
        })
        .await
        .map_err(|e| ApiError::Internal(format!("the preview: {e}")))?,
    };
    Ok(Json(ProgressResponse::new(
        running.as_ref(),
        interrupted,
        count,
        current_image,
    )))
}

async fn interrupt(State(state): State<AppState>) -> Json<serde_json::Value> {
    Json(serde_json::json!({ "interrupted": state.queue.interrupt() }))
}

async fn sd_models(State(state): State<AppState>) -> Result<Json<Vec<ModelEntry>>, ApiError> {
    state
        .catalog
        .list()
        .map(Json)
        .map_err(|m| ApiError::Internal(format!("--models-dir: {m}")))
}

/// The body of `GET /sdapi/v1/options`, and what `POST` accepts (other keys are ignored).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct OptionsBody {
    /// The resident model's title; setting it loads that model of `--models-dir`.
    pub sd_model_checkpoint: Option<String>,
    /// The default clip skip (1 = last layer, up to 12).
    #[serde(rename = "CLIP_stop_at_last_layers")]
    pub clip_stop_at_last_layers: Option<usize>,
}

fn options_body(state: &AppState) -> OptionsBody {
    OptionsBody {
        sd_model_checkpoint: Some(state.queue.model().entry.title),
        clip_stop_at_last_layers: Some(state.options().clip_skip),
    }
}

async fn get_options(State(state): State<AppState>) -> Json<OptionsBody> {
    Json(options_body(&state))
}

async fn set_options(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<OptionsBody>,
) -> Result<Json<OptionsBody>, ApiError> {
    if let Some(skip) = body.clip_stop_at_last_layers {
        if !(1..=MAX_CLIP_SKIP).contains(&skip) {
            return Err(ApiError::field(
                "CLIP_stop_at_last_layers",
                format!("{skip} is not in 1..={MAX_CLIP_SKIP} (1 = the last layer)"),
            ));
        }
    }
    if let Some(name) = &body.sd_model_checkpoint {
        let entry = state.catalog.find("sd_model_checkpoint", name)?;
        if entry != state.queue.model().entry {
            let ticket = state.queue.submit(Work::Load(entry))?;
            ticket.wait().await?;
        }
    }
    if let Some(skip) = body.clip_stop_at_last_layers {
        state
            .options
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clip_skip = skip;
    }
    Ok(Json(options_body(&state)))
}

async fn samplers() -> impl IntoResponse {
    Json(sampler_list())
}

async fn schedulers() -> impl IntoResponse {
    Json(schedule_list())
}

async fn loras(State(state): State<AppState>) -> Json<Vec<LoraEntry>> {
    Json(state.loras.as_ref().clone())
}

async fn openai_generations(
    State(state): State<AppState>,
    body: Result<ApiJson<ImageGenerationRequest>, ApiError>,
) -> Result<Json<openai::ImagesResponse>, OpenAiError> {
    let ApiJson(body) = body?;
    let request = body.to_a1111()?;
    let prompt = request.prompt.clone().unwrap_or_default();
    let answer = run_generation(&state, request, Mode::Txt2Img).await?;
    let created = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    Ok(Json(openai::ImagesResponse {
        created,
        data: answer
            .images
            .into_iter()
            .map(|b64_json| openai::ImageData {
                b64_json,
                revised_prompt: prompt.clone(),
            })
            .collect(),
    }))
}
