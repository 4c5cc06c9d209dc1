//! API errors: every failure is `{"error":{"code","message"}}` with its status (SPEC §3).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use herald_common::api::{ErrorBody, ErrorCode};

use crate::pipeline::AcceptError;

#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    pub retry_after_s: Option<u64>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
            retry_after_s: None,
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidRequest, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        let mut e = Self::new(ErrorCode::Unavailable, message);
        e.retry_after_s = Some(1);
        e
    }
}

impl From<herald_engine::StoreError> for ApiError {
    fn from(e: herald_engine::StoreError) -> Self {
        tracing::error!(error = %e, "store error");
        ApiError::unavailable("storage is unavailable; retry shortly")
    }
}

impl From<AcceptError> for ApiError {
    fn from(e: AcceptError) -> Self {
        match e {
            AcceptError::Invalid(m) => ApiError::invalid(m),
            AcceptError::Conflict => ApiError::new(ErrorCode::IdempotencyConflict, e.to_string()),
            AcceptError::InProgress => {
                let mut err = ApiError::new(ErrorCode::IdempotencyInProgress, e.to_string());
                err.retry_after_s = Some(1);
                err
            }
            AcceptError::Store(s) => s.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.code.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response =
            (status, axum::Json(ErrorBody::new(self.code, self.message))).into_response();
        if let Some(s) = self.retry_after_s
            && let Ok(v) = HeaderValue::from_str(&s.to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, v);
        }
        response
    }
}
