//! HTTP/1.1 as bytes, pure (no I/O): request and response heads parsed and rewritten
//! ([`parse`]), the one body decoder every path uses to find where a body ends
//! ([`body::Remaining`]), a connection's requests followed through the bytes hyper reads
//! ([`follow`]), and the header rules for `http::HeaderMap`s on hyper's side ([`headers`]).

pub mod body;
pub mod follow;
pub mod headers;
pub mod parse;
