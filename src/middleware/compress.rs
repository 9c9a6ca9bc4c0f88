//! `compress`: which encoding a client takes, and which answers are worth compressing. The
//! body encoders themselves run in the proxy (`proxy::front::compress`).

/// An encoding quayside can apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    Br,
    Zstd,
    Gzip,
}

impl Encoding {
    pub fn token(self) -> &'static str {
        match self {
            Encoding::Br => "br",
            Encoding::Zstd => "zstd",
            Encoding::Gzip => "gzip",
        }
    }
}

/// Answers smaller than this are sent as they are: compressing them gains little.
pub const MIN_SIZE: u64 = 1024;

/// The encoding to use for a request's `Accept-Encoding`: the one with the highest q, ties
/// going to br, then zstd, then gzip; `*` stands for any not named. `None`: identity.
pub fn choose(accept: &[u8]) -> Option<Encoding> {
    let text = std::str::from_utf8(accept).ok()?;
    let mut q_of = [None::<f32>; 3];
    let mut star = None;
    for item in text.split(',') {
        let mut parts = item.split(';');
        let name = parts.next().unwrap_or("").trim();
        let mut q = 1.0f32;
        for p in parts {
            if let Some(v) = p
                .trim()
                .strip_prefix("q=")
                .or_else(|| p.trim().strip_prefix("Q="))
            {
                q = v.trim().parse().unwrap_or(0.0);
            }
        }
        let slot = match name.to_ascii_lowercase().as_str() {
            "br" => 0,
            "zstd" => 1,
            "gzip" | "x-gzip" => 2,
            "*" => {
                star = Some(q);
                continue;
            }
            _ => continue,
        };
        q_of[slot] = Some(q);
    }
    let all = [Encoding::Br, Encoding::Zstd, Encoding::Gzip];
    let mut best: Option<(Encoding, f32)> = None;
    for (i, e) in all.into_iter().enumerate() {
        let q = q_of[i].or(star).unwrap_or(0.0);
        if q > 0.0 && best.is_none_or(|(_, b)| q > b) {
            best = Some((e, q));
        }
    }
    best.map(|(e, _)| e)
}

/// Whether a `Content-Type` names text-like content that compresses well (not images,
/// video, archives, or event streams, which must not be held back).
pub fn compressible(content_type: &[u8]) -> bool {
    let Ok(ct) = std::str::from_utf8(content_type) else {
        return false;
    };
    let mime = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if mime == "text/event-stream" {
        return false;
    }
    mime.starts_with("text/")
        || mime.ends_with("+json")
        || mime.ends_with("+xml")
        || matches!(
            mime.as_str(),
            "application/json"
                | "application/javascript"
                | "application/x-javascript"
                | "application/xml"
                | "application/wasm"
                | "application/graphql-response+json"
                | "application/x-ndjson"
                | "image/svg+xml"
                | "font/ttf"
                | "font/otf"
                | "application/vnd.ms-fontobject"
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clients_preference_wins_then_ours() {
        assert_eq!(choose(b"gzip, deflate, br, zstd"), Some(Encoding::Br));
        assert_eq!(choose(b"gzip"), Some(Encoding::Gzip));
        assert_eq!(choose(b"gzip;q=1, br;q=0.5"), Some(Encoding::Gzip));
        assert_eq!(choose(b"zstd, gzip;q=0.9"), Some(Encoding::Zstd));
        assert_eq!(choose(b"br;q=0, gzip;q=0"), None);
        assert_eq!(choose(b"identity"), None);
        assert_eq!(choose(b""), None);
        assert_eq!(choose(b"*"), Some(Encoding::Br));
        assert_eq!(choose(b"br;q=0, *;q=0.5"), Some(Encoding::Zstd));
    }

    #[test]
    fn text_compresses_and_media_does_not() {
        assert!(compressible(b"text/html; charset=utf-8"));
        assert!(compressible(b"application/json"));
        assert!(compressible(b"application/problem+json"));
        assert!(compressible(b"image/svg+xml"));
        assert!(!compressible(b"image/png"));
        assert!(!compressible(b"application/zip"));
        assert!(!compressible(b"text/event-stream"));
    }
}
