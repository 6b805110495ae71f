//! The HTTP client behind the CLI (`berth job …`, `berth task …`).

use crate::api_types::ApiError;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an error.
    #[error("{status}: {}{}", .error.message, .error.field.as_ref().map(|f| format!(" (field {f})")).unwrap_or_default())]
    Api { status: u16, error: ApiError },
    #[error("cannot reach {server}: {message}")]
    Transport { server: String, message: String },
}

pub struct Client {
    server: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl Client {
    pub fn new(server: &str, token: Option<String>) -> Client {
        Client {
            server: server.trim_end_matches('/').to_string(),
            token,
            http: reqwest::Client::new(),
        }
    }

    fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let r = self
            .http
            .request(method, format!("{}{path}", self.server))
            .timeout(Duration::from_secs(30));
        match &self.token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    async fn send(&self, r: reqwest::RequestBuilder) -> Result<reqwest::Response, ClientError> {
        let resp = r.send().await.map_err(|e| ClientError::Transport {
            server: self.server.clone(),
            message: e.to_string(),
        })?;
        let status = resp.status().as_u16();
        if resp.status().is_success() {
            return Ok(resp);
        }
        let text = resp.text().await.unwrap_or_default();
        let error = serde_json::from_str::<ApiError>(&text)
            .unwrap_or_else(|_| ApiError::new(status, "http", text));
        Err(ClientError::Api { status, error })
    }

    async fn json<T: DeserializeOwned>(
        &self,
        r: reqwest::RequestBuilder,
    ) -> Result<T, ClientError> {
        let resp = self.send(r).await?;
        resp.json().await.map_err(|e| ClientError::Transport {
            server: self.server.clone(),
            message: format!("bad answer: {e}"),
        })
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.json(self.req(reqwest::Method::GET, path)).await
    }

    pub async fn get_text(&self, path: &str) -> Result<String, ClientError> {
        let resp = self.send(self.req(reqwest::Method::GET, path)).await?;
        resp.text().await.map_err(|e| ClientError::Transport {
            server: self.server.clone(),
            message: e.to_string(),
        })
    }

    pub async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        self.json(self.req(reqwest::Method::POST, path).json(body))
            .await
    }

    /// A POST whose answer has no body (202, 204).
    pub async fn post_empty<B: Serialize>(&self, path: &str, body: &B) -> Result<(), ClientError> {
        self.send(self.req(reqwest::Method::POST, path).json(body))
            .await
            .map(|_| ())
    }
}
