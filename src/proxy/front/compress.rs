//! A backend's response body as hyper's side relays it ([`Upstreamed`]), and `compress`: that
//! body encoded with gzip, br or zstd as it streams (the choice of encoding and of which
//! answers to compress is `middleware::compress`'s).

use std::pin::Pin;
use std::task::{Context, Poll};

use async_compression::tokio::bufread::{BrotliEncoder, GzipEncoder, ZstdEncoder};
use bytes::Bytes;
use futures_util::TryStreamExt as _;
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use http_body_util::BodyExt as _;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::io::AsyncRead;
use tokio_util::io::{ReaderStream, StreamReader};

use crate::middleware::compress::{self, Encoding};
use crate::proxy::upstream::exchange::RawBody;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Quality levels that keep a proxy's CPU per byte near gzip -6's (br's and zstd's defaults
/// are far slower, or far faster, than what a client waits for).
const BR_QUALITY: i32 = 4;
const ZSTD_LEVEL: i32 = 3;
const GZIP_LEVEL: i32 = 6;

/// The encoding to apply to this answer, if any: the client takes one, the answer is a
/// compressible type of at least [`compress::MIN_SIZE`] bytes (or of unknown size), and
/// nothing encoded it already.
pub fn decide(
    accept: Option<&HeaderValue>,
    method: &Method,
    status: StatusCode,
    headers: &HeaderMap,
    size: Option<u64>,
) -> Option<Encoding> {
    if method == Method::HEAD
        || !status.is_success()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::PARTIAL_CONTENT
        || headers.contains_key(header::CONTENT_ENCODING)
        || headers.contains_key(header::CONTENT_RANGE)
        || size.is_some_and(|n| n < compress::MIN_SIZE)
    {
        return None;
    }
    if !headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|ct| compress::compressible(ct.as_bytes()))
    {
        return None;
    }
    // `Cache-Control: no-transform` forbids changing the representation.
    if headers.get_all(header::CACHE_CONTROL).iter().any(|v| {
        v.to_str()
            .is_ok_and(|v| v.to_ascii_lowercase().contains("no-transform"))
    }) {
        return None;
    }
    compress::choose(accept?.as_bytes())
}

/// Say so in the head: the encoding, no length (it is not known yet), `Vary`, and a weak
/// ETag (the bytes differ from the identity's).
pub fn mark(headers: &mut HeaderMap, enc: Encoding) {
    headers.insert(
        header::CONTENT_ENCODING,
        HeaderValue::from_static(enc.token()),
    );
    headers.remove(header::CONTENT_LENGTH);
    headers.remove(header::ACCEPT_RANGES);
    headers.append(header::VARY, HeaderValue::from_static("accept-encoding"));
    if let Some(tag) = headers.get(header::ETAG)
        && !tag.as_bytes().starts_with(b"W/")
    {
        let mut weak = b"W/".to_vec();
        weak.extend_from_slice(tag.as_bytes());
        if let Ok(v) = HeaderValue::from_bytes(&weak) {
            headers.insert(header::ETAG, v);
        }
    }
}

/// A body encoded as it is read.
pub struct Encoded {
    inner: ReaderStream<Pin<Box<dyn AsyncRead + Send>>>,
}

impl Encoded {
    pub fn new(body: Upstreamed, enc: Encoding) -> Encoded {
        let data = body
            .into_data_stream()
            .map_err(|e| std::io::Error::other(e.to_string()));
        let reader = StreamReader::new(data);
        let encoder: Pin<Box<dyn AsyncRead + Send>> = match enc {
            Encoding::Gzip => Box::pin(GzipEncoder::with_quality(
                reader,
                async_compression::Level::Precise(GZIP_LEVEL),
            )),
            Encoding::Br => Box::pin(BrotliEncoder::with_quality(
                reader,
                async_compression::Level::Precise(BR_QUALITY),
            )),
            Encoding::Zstd => Box::pin(ZstdEncoder::with_quality(
                reader,
                async_compression::Level::Precise(ZSTD_LEVEL),
            )),
        };
        Encoded {
            inner: ReaderStream::new(encoder),
        }
    }
}

impl Body for Encoded {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        use futures_util::Stream as _;
        match Pin::new(&mut self.get_mut().inner).poll_next(cx) {
            Poll::Ready(Some(Ok(b))) => Poll::Ready(Some(Ok(Frame::data(b)))),
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

/// A backend's response body: from hyper's client, or read off a raw connection by the fast
/// path's exchange.
pub enum Upstreamed {
    Hyper(Incoming),
    Raw(RawBody),
    /// Either, encoded by the service's `compress`.
    Encoded(Box<Encoded>),
}

impl Body for Upstreamed {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            Upstreamed::Hyper(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            Upstreamed::Raw(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            Upstreamed::Encoded(b) => Pin::new(&mut **b).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Upstreamed::Hyper(b) => b.is_end_stream(),
            Upstreamed::Raw(b) => b.is_end_stream(),
            Upstreamed::Encoded(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Upstreamed::Hyper(b) => b.size_hint(),
            Upstreamed::Raw(b) => b.size_hint(),
            Upstreamed::Encoded(b) => b.size_hint(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_compressible_answers_of_some_size_are_compressed() {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
        let gzip = HeaderValue::from_static("gzip");
        let ok = StatusCode::OK;
        assert_eq!(
            decide(Some(&gzip), &Method::GET, ok, &h, Some(5000)),
            Some(Encoding::Gzip)
        );
        assert_eq!(decide(Some(&gzip), &Method::GET, ok, &h, Some(100)), None);
        assert_eq!(decide(Some(&gzip), &Method::HEAD, ok, &h, None), None);
        assert_eq!(decide(None, &Method::GET, ok, &h, None), None);
        let not_modified = StatusCode::NOT_MODIFIED;
        assert_eq!(
            decide(Some(&gzip), &Method::GET, not_modified, &h, None),
            None
        );
        let mut done = h.clone();
        done.insert(header::CONTENT_ENCODING, HeaderValue::from_static("br"));
        assert_eq!(decide(Some(&gzip), &Method::GET, ok, &done, None), None);
        let mut kept = h.clone();
        kept.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("public, no-transform"),
        );
        assert_eq!(decide(Some(&gzip), &Method::GET, ok, &kept, None), None);
        let mut png = HeaderMap::new();
        png.insert(header::CONTENT_TYPE, HeaderValue::from_static("image/png"));
        assert_eq!(decide(Some(&gzip), &Method::GET, ok, &png, None), None);
        let mut marked = h.clone();
        marked.insert(header::ETAG, HeaderValue::from_static("\"abc\""));
        marked.insert(header::CONTENT_LENGTH, HeaderValue::from_static("5000"));
        mark(&mut marked, Encoding::Gzip);
        assert_eq!(marked[header::ETAG], "W/\"abc\"");
        assert!(!marked.contains_key(header::CONTENT_LENGTH));
        assert_eq!(marked[header::CONTENT_ENCODING], "gzip");
    }
}
