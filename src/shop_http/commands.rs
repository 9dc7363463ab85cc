//! The command endpoints: the caller's identity and idempotency key become
//! the command's metadata, and the outcome becomes a status and a body.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use cqrs_core::{IntoCommand, Metadata, Uuid};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::Shop;
use super::access::USER;
use super::problem::Problem;

/// The header that makes a retried request run its command once.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// The header set on the answer to a request whose command had already run.
pub const REPLAYED: &str = "idempotent-replayed";

/// The namespace of command ids derived from idempotency keys (UUIDv5 of
/// user, endpoint and key).
const KEYS: Uuid = Uuid::from_u128(0x6f0c_5d1e_8a4b_4c8e_9b1f_3e2d_7a6c_5b40);

/// What a command recorded: the body of a 200 or 201.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Accepted {
    pub aggregate_id: String,
    /// The aggregate's version after the command.
    pub version: u64,
    /// The log position of its last event, to wait for in a read model.
    pub position: Option<u64>,
}

/// Who sends a request, and the metadata its command will carry: the user
/// (`Authorization: Bearer <user>`; a real service verifies a token here),
/// the request id (`X-Request-Id`, or a new one) and the command id from
/// `Idempotency-Key`, the user and the endpoint.
#[derive(Debug, Clone)]
pub struct Caller(pub Metadata);

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Problem> {
        let text = |name| {
            parts
                .headers
                .get(name)
                .map(|value: &HeaderValue| {
                    value.to_str().map(str::to_owned).map_err(|_| {
                        Problem::new(
                            StatusCode::BAD_REQUEST,
                            "bad_header",
                            format!("header {name} is not text"),
                        )
                    })
                })
                .transpose()
        };
        let mut metadata = Metadata::default();
        if let Some(authorization) = text(header::AUTHORIZATION.as_str())? {
            let user = authorization
                .strip_prefix("Bearer ")
                .map(str::trim)
                .filter(|user| !user.is_empty())
                .ok_or_else(|| {
                    Problem::new(
                        StatusCode::UNAUTHORIZED,
                        "unauthenticated",
                        "send `Authorization: Bearer <user>`",
                    )
                })?;
            metadata.values.insert(USER.into(), user.to_owned());
        }
        let request_id = text("x-request-id")?.unwrap_or_else(|| Uuid::now_v7().to_string());
        metadata.values.insert("request_id".into(), request_id);
        if let Some(key) = text(IDEMPOTENCY_KEY)? {
            // The same key from another user, or on another endpoint, is
            // another command.
            let user = metadata.values.get(USER).map_or("", String::as_str);
            let scope = format!("{user}\n{} {}\n{key}", parts.method, parts.uri.path());
            metadata.command_id = Some(Uuid::new_v5(&KEYS, scope.as_bytes()));
        }
        Ok(Self(metadata))
    }
}

/// Runs a command and answers with what it recorded: for a retry of an
/// idempotency key, what the first request's command recorded, which the
/// app answers from its command index.
async fn run<C: IntoCommand>(
    shop: &Shop,
    aggregate_id: &str,
    command: C,
    Caller(metadata): Caller,
    status: StatusCode,
) -> Response {
    match shop.app.execute_with(aggregate_id, command, metadata).await {
        Ok(done) => {
            let accepted = Accepted {
                aggregate_id: done.aggregate_id.clone(),
                version: done.version,
                position: done.last_position(),
            };
            let mut response = (status, Json(accepted)).into_response();
            if done.duplicate {
                response
                    .headers_mut()
                    .insert(REPLAYED, HeaderValue::from_static("true"));
            }
            response
        }
        Err(error) => Problem::of_command(&error).into_response(),
    }
}

fn body<T>(body: Result<Json<T>, JsonRejection>) -> Result<T, Problem> {
    body.map(|Json(body)| body)
        .map_err(|rejection| Problem::bad_body(rejection.body_text()))
}

/// A command endpoint that creates its aggregate: `POST` with the
/// command's JSON, 201 with what it recorded.
pub async fn create<C: IntoCommand + DeserializeOwned>(
    State(shop): State<Shop>,
    Path(id): Path<String>,
    caller: Caller,
    command: Result<Json<C>, JsonRejection>,
) -> Response {
    match body(command) {
        Ok(command) => run(&shop, &id, command, caller, StatusCode::CREATED).await,
        Err(problem) => problem.into_response(),
    }
}

/// A command endpoint on an existing aggregate: 200 with what it recorded.
pub async fn change<C: IntoCommand + DeserializeOwned>(
    State(shop): State<Shop>,
    Path(id): Path<String>,
    caller: Caller,
    command: Result<Json<C>, JsonRejection>,
) -> Response {
    match body(command) {
        Ok(command) => run(&shop, &id, command, caller, StatusCode::OK).await,
        Err(problem) => problem.into_response(),
    }
}
