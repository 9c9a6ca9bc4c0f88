//! Why a request could not be forwarded, classified for the status code and for retries.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::Full;

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The service has no routable backend (none registered, or all drained/disabled).
    #[error("no backend available for service {service}")]
    NoBackend { service: String },
    /// The service has backends but none is available (all unhealthy or ejected).
    #[error("all backends of service {service} are down")]
    AllDown { service: String },
    /// TCP connect failed (refused, unreachable): the request never left quayside.
    #[error("could not connect to backend {no}")]
    Connect { no: String },
    /// TCP connect did not finish in time: the request never left quayside.
    #[error("timed out connecting to backend {no}")]
    ConnectTimeout { no: String },
    /// The backend accepted the request but sent no response head in time.
    #[error("backend {no} did not answer within {timeout:?}")]
    ResponseTimeout { no: String, timeout: Duration },
    /// The backend answered nothing for `waited` while the request waited on it and other
    /// backends of its service answered: given up on, to go elsewhere.
    #[error("backend {no} answered nothing for {waited:?} while its peers answered")]
    Stalled { no: String, waited: Duration },
    /// The connection failed after the request was (maybe partly) sent.
    #[error("backend {no} closed the connection or sent an invalid response")]
    Upstream { no: String },
    /// The request body is over `--max-body-size`.
    #[error("request body over the limit of {limit} bytes")]
    TooLarge { limit: u64 },
    /// The request could not be turned into an upstream request.
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    /// A middleware of the service answered instead of the backend (redirect, 401, 403,
    /// 429, or forward auth's own answer).
    #[error("answered by the service's middleware with {}", .0.status.as_u16())]
    Answered(Box<crate::middleware::Answer>),
}

impl ProxyError {
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::NoBackend { .. } | ProxyError::AllDown { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ProxyError::Connect { .. } | ProxyError::Upstream { .. } => StatusCode::BAD_GATEWAY,
            ProxyError::ConnectTimeout { .. }
            | ProxyError::ResponseTimeout { .. }
            | ProxyError::Stalled { .. } => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ProxyError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::Answered(a) => a.status,
        }
    }

    /// True when the backend never saw the request, so sending it elsewhere is safe for any
    /// method.
    pub fn never_reached_backend(&self) -> bool {
        matches!(
            self,
            ProxyError::Connect { .. } | ProxyError::ConnectTimeout { .. }
        )
    }

    /// A failure that counts against the backend's passive health.
    pub fn is_backend_failure(&self) -> bool {
        matches!(
            self,
            ProxyError::Connect { .. }
                | ProxyError::ConnectTimeout { .. }
                | ProxyError::ResponseTimeout { .. }
                | ProxyError::Stalled { .. }
        )
    }

    /// A wait for the backend that came to nothing: an ejection for it ends by a check, not
    /// by clients' requests (which would wait again).
    pub fn unanswered(&self) -> bool {
        matches!(
            self,
            ProxyError::ConnectTimeout { .. }
                | ProxyError::ResponseTimeout { .. }
                | ProxyError::Stalled { .. }
        )
    }

    /// A failure after which an idempotent request may go to another backend: the connection
    /// failed before any answer, or the backend was given up on as stalled.
    pub fn retryable_when_idempotent(&self) -> bool {
        matches!(
            self,
            ProxyError::Upstream { .. } | ProxyError::Stalled { .. }
        )
    }

    /// 503 for a service with no backend to pick: none routable, or all down.
    pub fn unavailable(service: &crate::routing::ServiceRoute) -> ProxyError {
        let name = service.name.clone();
        if service.backends.is_empty() {
            ProxyError::NoBackend { service: name }
        } else {
            ProxyError::AllDown { service: name }
        }
    }

    /// The short text body of the error's response.
    pub fn body(&self) -> String {
        if let ProxyError::Answered(a) = self {
            return String::from_utf8_lossy(&a.body).into_owned();
        }
        let status = self.status();
        format!(
            "{} {}: {}\n",
            status.as_u16(),
            status.canonical_reason().unwrap_or(""),
            self
        )
    }

    /// The whole HTTP/1.1 response, for the fast path (with `Connection: close` if `close`).
    pub fn to_http1(&self, close: bool) -> Vec<u8> {
        self.to_http1_with_id(close, None)
    }

    /// The same, with the request's `X-Request-Id` when it has one.
    pub fn to_http1_with_id(&self, close: bool, request_id: Option<&[u8]>) -> Vec<u8> {
        let status = self.status();
        let (body, extra) = self.parts();
        let mut head = format!(
            "HTTP/1.1 {} {}\r\ncontent-length: {}\r\n{}",
            status.as_u16(),
            status.canonical_reason().unwrap_or(""),
            body.len(),
            if close { "connection: close\r\n" } else { "" },
        );
        if !extra.iter().any(|(n, _)| n == header::CONTENT_TYPE) {
            head.push_str("content-type: text/plain; charset=utf-8\r\n");
        }
        for (name, value) in extra {
            if let Ok(v) = value.to_str() {
                head.push_str(&format!("{name}: {v}\r\n"));
            }
        }
        if let Some(id) = request_id.and_then(|id| std::str::from_utf8(id).ok()) {
            head.push_str(&format!("x-request-id: {id}\r\n"));
        }
        head.push_str(&format!(
            "date: {}\r\n\r\n",
            httpdate::fmt_http_date(std::time::SystemTime::now())
        ));
        let mut out = head.into_bytes();
        out.extend_from_slice(&body);
        out
    }

    /// The body, and the headers of a middleware's answer.
    fn parts(&self) -> (Bytes, &[(http::HeaderName, HeaderValue)]) {
        match self {
            ProxyError::Answered(a) => (a.body.clone(), &a.headers),
            _ => (Bytes::from(self.body()), &[]),
        }
    }

    /// The body's length.
    pub fn body_len(&self) -> usize {
        match self {
            ProxyError::Answered(a) => a.body.len(),
            _ => self.body().len(),
        }
    }

    pub fn into_response(self) -> Response<Full<Bytes>> {
        let status = self.status();
        let (body, extra) = self.parts();
        let mut resp = Response::new(Full::new(body));
        *resp.status_mut() = status;
        if !extra.iter().any(|(n, _)| n == header::CONTENT_TYPE) {
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
        }
        for (name, value) in extra {
            resp.headers_mut().append(name.clone(), value.clone());
        }
        resp
    }
}
