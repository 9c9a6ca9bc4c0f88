//! The backend side: per-worker keepalive pools ([`pool`]), raw HTTP/1.1 exchanges on them
//! ([`raw`]), and those exchanges decoded for hyper's side ([`exchange`]).

pub mod exchange;
pub mod pool;
pub mod raw;
