//! HTTP plumbing for the API tests: serve a router on a free local port, and a
//! client that calls it with or without the admin token and reads JSON.
#![allow(dead_code)]

use reqwest::{Method, RequestBuilder, Response};
use serde_json::Value;

/// Serves `router` on 127.0.0.1 (a free port) for the rest of the test;
/// returns its base URL, `http://127.0.0.1:PORT`.
pub async fn serve(router: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    format!("http://{addr}")
}

/// A local port nothing listens on (just now): for a daemon to bind, or to be refused.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A reqwest client (with rustls' ring provider installed, as the daemon does).
pub fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

/// Calls to one server: `path`s are appended to `base`; mutating calls carry
/// the admin token.
#[derive(Clone)]
pub struct Api {
    pub base: String,
    pub http: reqwest::Client,
    pub token: String,
}

impl Api {
    pub fn new(base: &str, token: &str) -> Api {
        Api {
            base: base.to_string(),
            http: client(),
            token: token.to_string(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A request without the token.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http.request(method, self.url(path))
    }

    /// A request with the admin token.
    pub fn authed(&self, method: Method, path: &str) -> RequestBuilder {
        self.request(method, path).bearer_auth(&self.token)
    }

    /// GET `path` (reads need no token).
    pub async fn get(&self, path: &str) -> Response {
        send(self.request(Method::GET, path)).await
    }

    /// GET `path`: the status and the body as JSON.
    pub async fn get_status_json(&self, path: &str) -> (u16, Value) {
        let r = self.get(path).await;
        let status = r.status().as_u16();
        (status, r.json().await.unwrap())
    }

    /// GET `path`: the body as JSON.
    pub async fn get_json(&self, path: &str) -> Value {
        self.get(path).await.json().await.unwrap()
    }

    /// POST `body` as JSON to `path` with the token.
    pub async fn post(&self, path: &str, body: &Value) -> Response {
        send(self.authed(Method::POST, path).json(body)).await
    }

    /// POST `body` as JSON to `path` without the token.
    pub async fn post_anonymous(&self, path: &str, body: &Value) -> Response {
        send(self.request(Method::POST, path).json(body)).await
    }

    /// POST a raw `body` declared as JSON (for malformed JSON) with the token.
    pub async fn post_raw(&self, path: &str, body: &'static str) -> Response {
        let declared = self
            .authed(Method::POST, path)
            .header("content-type", "application/json");
        send(declared.body(body)).await
    }

    /// DELETE `path` with the token.
    pub async fn delete(&self, path: &str) -> Response {
        send(self.authed(Method::DELETE, path)).await
    }
}

/// Sends `request`; a transport error fails the test.
async fn send(request: RequestBuilder) -> Response {
    request.send().await.unwrap()
}
