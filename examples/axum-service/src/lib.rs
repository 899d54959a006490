//! An axum service on flash, for operators to copy: one flash request scope
//! per HTTP request (a tower layer), and Prometheus metrics on `/metrics`.
//!
//! - `GET /events/{id}`, `GET /events/by-slug/{slug}`: cached lookups through
//!   the request's scope (lookups of one request started together are one
//!   cache read; each key is read once per request).
//! - `PUT /events/{id}/title` (the body is the title): a write through flash,
//!   which invalidates the event's keys.
//! - `GET /metrics`: flash's metrics in the Prometheus text format: lookups by
//!   class and outcome (hits are `outcome="hit"`), fills, invalidated keys,
//!   cache server errors (`flash_backend_errors_total`, and
//!   `flash_cache_errors_total{op,error}` from the first error on), the
//!   circuit breaker's state, and the lookup latency histogram flash records
//!   (`flash_lookup_seconds{class}`; a request scope's lookups are batched,
//!   so each is timed as its batch).

use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use flash::{by, CacheMeta, FlashDb, Registrar};
use flash_test_kit::entities::event;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use sea_orm::{DatabaseConnection, Set};
use std::sync::OnceLock;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    /// The flash handle (cheap to clone).
    pub fdb: FlashDb,
    /// Renders the metrics for `/metrics`.
    pub metrics: PrometheusHandle,
}

/// The process's Prometheus recorder (installed once: `metrics` has one
/// global recorder), with latency buckets from 10 µs to 100 ms.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full("flash_lookup_seconds".into()),
                    &[1e-5, 5e-5, 1e-4, 5e-4, 1e-3, 5e-3, 1e-2, 1e-1],
                )
                .expect("buckets are not empty")
                .install_recorder()
                .expect("no other metrics recorder is installed")
        })
        .clone()
}

/// The service's declarations on `db` and `backend`: events by id and slug.
pub async fn flash_db(
    db: DatabaseConnection,
    backend: std::sync::Arc<dyn flash::Backend>,
    prefix: String,
) -> Result<FlashDb, flash::Error> {
    // Present from the start, so that dashboards see a closed breaker and
    // no server errors as 0 (flash sets them on the first change).
    metrics::gauge!("flash_breaker_open", "backend" => backend.name()).set(0.0);
    metrics::counter!("flash_backend_errors_total", "backend" => backend.name()).absolute(0);
    let mut reg = Registrar::new(db).configure(|b| b.backend_arc(backend).prefix(prefix));
    reg.entity(
        CacheMeta::<event::Entity>::new()
            .get_key([event::Column::Id])
            .get_key([event::Column::Slug]),
    )?;
    reg.build().await
}

/// The router: the routes above, each request in a flash scope of its own.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/events/{id}", get(event_by_id))
        .route("/events/by-slug/{slug}", get(event_by_slug))
        .route("/events/{id}/title", axum::routing::put(set_title))
        .route("/metrics", get(render_metrics))
        .layer(middleware::from_fn_with_state(state.clone(), request_scope))
        .with_state(state)
}

/// The tower layer: a fresh [`flash::Request`] for every HTTP request, in
/// its extensions, dropped (with its memo) when the response is made.
async fn request_scope(State(s): State<AppState>, mut req: Request, next: Next) -> Response {
    req.extensions_mut().insert(s.fdb.request());
    next.run(req).await
}

/// A flash error as an HTTP answer.
struct Failed(flash::Error);

impl IntoResponse for Failed {
    fn into_response(self) -> Response {
        (StatusCode::INTERNAL_SERVER_ERROR, self.0.to_string()).into_response()
    }
}

fn found(row: Option<event::Model>) -> Response {
    match row {
        Some(e) => Json(e).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn event_by_id(
    Extension(req): Extension<flash::Request>,
    Path(id): Path<i32>,
) -> Result<Response, Failed> {
    let lookup = req
        .cache::<event::Entity>()
        .get_or_none(by(event::Column::Id, id));
    Ok(found(lookup.await.map_err(Failed)?))
}

async fn event_by_slug(
    Extension(req): Extension<flash::Request>,
    Path(slug): Path<String>,
) -> Result<Response, Failed> {
    let lookup = req
        .cache::<event::Entity>()
        .get_or_none(by(event::Column::Slug, slug));
    Ok(found(lookup.await.map_err(Failed)?))
}

async fn set_title(
    State(s): State<AppState>,
    Path(id): Path<i32>,
    title: String,
) -> Result<Response, Failed> {
    let row = s
        .fdb
        .update(event::ActiveModel {
            id: Set(id),
            title: Set(title),
            ..Default::default()
        })
        .await
        .map_err(Failed)?;
    Ok(Json(row).into_response())
}

async fn render_metrics(State(s): State<AppState>) -> String {
    s.metrics.render()
}
