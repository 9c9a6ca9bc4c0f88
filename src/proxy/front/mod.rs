//! The two fronts, which differ only in how bytes move: the byte-level HTTP/1.1 fast path
//! ([`fast`]) and hyper's side ([`hyper`]: TLS with HTTP/2, h2c, upgrades, and what the fast
//! path leaves it), with hyper's request and response bodies ([`body`]). Both follow the one
//! request plan ([`super::plan`]).

pub mod auth;
pub mod body;
pub mod compress;
pub mod fast;
pub mod hyper;
