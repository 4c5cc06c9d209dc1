//! `/v1/templates` (SPEC §8): stored, versioned templates and their preview.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use herald_common::api::{
    ErrorBody, PreviewRequest, PreviewResponse, TemplateList, TemplateSaved, TemplateSpec,
    TemplateView, sms_length, validate_locale, validate_template_name, validate_timezone,
};
use herald_common::time::{now_ms, rfc3339};

use super::{JsonBody, St, path_param};
use crate::error::ApiError;
use crate::pipeline::Render;
use crate::stages::templates::{Compiled, Recipient, text_of_html};

fn name_param(p: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    let name = path_param(p)?;
    validate_template_name(&name).map_err(ApiError::invalid)?;
    Ok(name)
}

fn render_error(e: Render) -> ApiError {
    match e {
        Render::Unavailable(e) => e.into(),
        Render::Failed(why) => ApiError::invalid(why),
    }
}

#[utoipa::path(put, path = "/v1/templates/{name}", tag = "templates",
    request_body = TemplateSpec,
    params(("name" = String, Path, description = "Template name, [A-Za-z0-9._-]")),
    responses(
        (status = 200, description = "Stored as a new version", body = TemplateSaved),
        (status = 400, description = "Invalid template (syntax errors name part, line and column)", body = ErrorBody),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 429, description = "Rate limited", body = ErrorBody),
        (status = 503, description = "Storage unavailable; retry", body = ErrorBody),
        (status = 413, description = "Body over 256 KiB", body = ErrorBody),
        (status = 415, description = "Not application/json", body = ErrorBody),
    ))]
pub(super) async fn put_template(
    State(state): St,
    name: Result<Path<String>, PathRejection>,
    JsonBody(spec): JsonBody<TemplateSpec>,
) -> Result<Response, ApiError> {
    let name = name_param(name)?;
    spec.validate().map_err(ApiError::invalid)?;
    // Syntax, and a trial render within the limits: a template that cannot be rendered is
    // refused now, not when a message needs it.
    Compiled::compile(&name, 0, &spec, true).map_err(|e| ApiError::invalid(e.to_string()))?;
    let version = state
        .pipeline
        .templates()
        .put_template(&name, &spec, now_ms())
        .await?;
    state.pipeline.template_changed(&name);
    Ok(axum::Json(TemplateSaved { name, version }).into_response())
}

#[utoipa::path(get, path = "/v1/templates/{name}", tag = "templates",
    params(("name" = String, Path, description = "Template name")),
    responses(
        (status = 200, description = "The latest version", body = TemplateView),
        (status = 404, description = "No such template", body = ErrorBody),
        (status = 400, description = "Invalid request", body = ErrorBody),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 429, description = "Rate limited", body = ErrorBody),
        (status = 503, description = "Storage unavailable; retry", body = ErrorBody),
    ))]
pub(super) async fn get_template(
    State(state): St,
    name: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let name = name_param(name)?;
    match state.pipeline.templates().template(&name, None).await? {
        Some(t) => Ok(axum::Json(TemplateView {
            name: t.name,
            version: t.version,
            created_at: rfc3339(t.created_at),
            spec: t.spec,
        })
        .into_response()),
        None => Err(ApiError::not_found(format!("no template named '{name}'"))),
    }
}

#[utoipa::path(delete, path = "/v1/templates/{name}", tag = "templates",
    params(("name" = String, Path, description = "Template name")),
    responses(
        (status = 204, description = "Deleted (messages accepted earlier still render it)"),
        (status = 404, description = "No such template", body = ErrorBody),
        (status = 400, description = "Invalid request", body = ErrorBody),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 429, description = "Rate limited", body = ErrorBody),
        (status = 503, description = "Storage unavailable; retry", body = ErrorBody),
    ))]
pub(super) async fn delete_template(
    State(state): St,
    name: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let name = name_param(name)?;
    let deleted = state.pipeline.templates().delete_template(&name).await?;
    state.pipeline.template_changed(&name);
    if deleted {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(ApiError::not_found(format!("no template named '{name}'")))
    }
}

#[utoipa::path(get, path = "/v1/templates", tag = "templates",
    responses(
        (status = 200, description = "Every template, with its latest version", body = TemplateList),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 429, description = "Rate limited", body = ErrorBody),
        (status = 503, description = "Storage unavailable; retry", body = ErrorBody),
    ))]
pub(super) async fn list_templates(State(state): St) -> Result<Response, ApiError> {
    let templates = state
        .pipeline
        .templates()
        .templates()
        .await?
        .into_iter()
        .map(|(name, version)| TemplateSaved { name, version })
        .collect();
    Ok(axum::Json(TemplateList { templates }).into_response())
}

#[utoipa::path(post, path = "/v1/templates/{name}/preview", tag = "templates",
    request_body = PreviewRequest,
    params(("name" = String, Path, description = "Template name")),
    responses(
        (status = 200, description = "The rendered parts, and the SMS length", body = PreviewResponse),
        (status = 404, description = "No such template (or version)", body = ErrorBody),
        (status = 400, description = "Missing variables, or a render error", body = ErrorBody),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 429, description = "Rate limited", body = ErrorBody),
        (status = 503, description = "Storage unavailable; retry", body = ErrorBody),
        (status = 413, description = "Body over 256 KiB", body = ErrorBody),
        (status = 415, description = "Not application/json", body = ErrorBody),
    ))]
pub(super) async fn preview_template(
    State(state): St,
    name: Result<Path<String>, PathRejection>,
    JsonBody(req): JsonBody<PreviewRequest>,
) -> Result<Response, ApiError> {
    let name = name_param(name)?;
    if let Some(l) = &req.locale {
        validate_locale(l).map_err(|e| ApiError::invalid(format!("locale: {e}")))?;
    }
    if let Some(tz) = &req.timezone {
        validate_timezone(tz).map_err(|e| ApiError::invalid(format!("timezone: {e}")))?;
    }
    let compiled = match &req.draft {
        Some(draft) => {
            draft.validate().map_err(ApiError::invalid)?;
            let c = Compiled::compile(&name, 0, draft, true)
                .map_err(|e| ApiError::invalid(e.to_string()))?;
            std::sync::Arc::new(c)
        }
        None => state
            .pipeline
            .compiled(&name, req.version)
            .await
            .map_err(render_error)?
            .ok_or_else(|| {
                ApiError::not_found(match req.version {
                    Some(v) => format!("template '{name}' has no version {v}"),
                    None => format!("no template named '{name}'"),
                })
            })?,
    };
    let vars = req.vars.unwrap_or_default();
    compiled.check_vars(&vars).map_err(ApiError::invalid)?;
    let locale = compiled.pick_locale(&[req.locale.as_deref()]).to_string();
    let timezone = req.timezone.as_deref().unwrap_or("UTC");
    let rendered = compiled
        .render(
            &locale,
            &vars,
            &Recipient {
                user_id: "preview",
                timezone,
            },
        )
        .map_err(|e| ApiError::invalid(e.to_string()))?;
    let sms = rendered.get("sms.text").map(sms_length);
    let mut rendered = rendered;
    if let Some(html) = rendered.get("email.html")
        && rendered.get("email.text").is_none()
    {
        // What the mail's text part will be.
        let text = text_of_html(html);
        rendered.parts.insert("email.text", text);
    }
    Ok(axum::Json(PreviewResponse {
        name,
        version: compiled.version,
        locale: rendered.locale.clone(),
        parts: rendered
            .parts
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
        sms,
    })
    .into_response())
}
