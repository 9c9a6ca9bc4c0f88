//! The state file: manual entries, overrides (drain/disable) and service settings as JSON.
//!
//! Saved atomically before the API answers: write a temporary file beside it, fsync it, rename
//! it over the old one, fsync the directory. A file that cannot be read or parsed is never
//! overwritten: quayside refuses to start and names the file and the problem.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{AdminState, BackendSpec, Registry, ServiceConfig, validate};

pub const VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error(
        "cannot read state file {path}: {source}; fix its permissions or point --state elsewhere"
    )]
    Read { path: PathBuf, source: io::Error },
    #[error(
        "state file {path} is not valid: {reason}; it was left untouched: repair or move it, then start again"
    )]
    Corrupt { path: PathBuf, reason: String },
    #[error("cannot save state file {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileBackend {
    no: String,
    address: String,
    port: u64,
    #[serde(default = "one")]
    weight: u64,
    #[serde(default = "default_service")]
    service: String,
    #[serde(default)]
    state: AdminState,
}

fn one() -> u64 {
    1
}
fn default_service() -> String {
    validate::DEFAULT_SERVICE.to_owned()
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileOverride {
    no: String,
    state: AdminState,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileService {
    name: String,
    #[serde(flatten)]
    config: ServiceConfig,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateFile {
    version: u32,
    #[serde(default)]
    backends: Vec<FileBackend>,
    #[serde(default)]
    overrides: Vec<FileOverride>,
    #[serde(default)]
    services: Vec<FileService>,
}

/// Serialise the parts of the registry that the state file keeps.
pub fn encode(reg: &Registry) -> Vec<u8> {
    let file = StateFile {
        version: VERSION,
        backends: reg
            .manual()
            .values()
            .map(|b| FileBackend {
                no: b.no.clone(),
                address: b.addr.to_string(),
                port: b.port as u64,
                weight: b.weight as u64,
                service: b.service.clone(),
                state: b.state,
            })
            .collect(),
        overrides: reg
            .overrides()
            .iter()
            .map(|(no, state)| FileOverride {
                no: no.clone(),
                state: *state,
            })
            .collect(),
        services: reg
            .services()
            .iter()
            .map(|(name, config)| FileService {
                name: name.clone(),
                config: config.clone(),
            })
            .collect(),
    };
    // Compact: with thousands of entries, bytes written per change matter.
    let mut out = serde_json::to_vec(&file).expect("state serialises");
    out.push(b'\n');
    out
}

/// Parse a state file's bytes into a registry, validating every value as the API would.
pub fn decode(bytes: &[u8]) -> Result<Registry, String> {
    let file: StateFile = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    if file.version != VERSION {
        return Err(format!(
            "version {} is not supported (this quayside reads version {VERSION})",
            file.version
        ));
    }
    let mut manual = Vec::with_capacity(file.backends.len());
    for (i, b) in file.backends.into_iter().enumerate() {
        let spec = (|| {
            Ok::<_, validate::FieldError>(BackendSpec {
                no: validate::no(&b.no)?,
                addr: validate::ip(&b.address)?,
                port: validate::port_number(b.port)?,
                weight: validate::weight(&b.weight.to_string())?,
                service: validate::service(&b.service)?,
                state: b.state,
            })
        })()
        .map_err(|e| format!("backends[{i}]: {e}"))?;
        manual.push(spec);
    }
    let overrides = file
        .overrides
        .into_iter()
        .map(|o| Ok((validate::no(&o.no)?, o.state)))
        .collect::<Result<Vec<_>, validate::FieldError>>()
        .map_err(|e| format!("overrides: {e}"))?;
    let services = file
        .services
        .into_iter()
        .map(|s| (s.name, s.config))
        .collect();
    Registry::from_parts(manual, overrides, services).map_err(|e| e.to_string())
}

/// Load the registry from `path`. A missing file is an empty registry.
pub fn load(path: &Path) -> Result<Option<Registry>, StateError> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(StateError::Read {
                path: path.to_owned(),
                source,
            });
        }
    };
    decode(&bytes)
        .map(Some)
        .map_err(|reason| StateError::Corrupt {
            path: path.to_owned(),
            reason,
        })
}

/// Write `bytes` to `path` atomically and durably.
pub fn save(path: &Path, bytes: &[u8]) -> Result<(), StateError> {
    let wrap = |source| StateError::Write {
        path: path.to_owned(),
        source,
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&dir).map_err(wrap)?;
    let name = path
        .file_name()
        .ok_or_else(|| wrap(io::Error::other("the path names no file")))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(".tmp");
    let tmp = dir.join(tmp_name);
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .map_err(wrap)?;
    f.write_all(bytes).map_err(wrap)?;
    f.sync_all().map_err(wrap)?;
    drop(f);
    fs::rename(&tmp, path).map_err(wrap)?;
    File::open(&dir).and_then(|d| d.sync_all()).map_err(wrap)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Command;

    #[test]
    fn round_trip() {
        let mut r = Registry::new();
        r.apply(Command::Upsert(BackendSpec {
            no: "1".into(),
            addr: "::1".parse().unwrap(),
            port: 8081,
            weight: 3,
            service: "api".into(),
            state: AdminState::Draining,
        }))
        .unwrap();
        r.apply(Command::PutService {
            name: "api".into(),
            config: ServiceConfig {
                hosts: vec!["api.example.com".into()],
                path_prefix: Some("/v1".into()),
                strip_prefix: true,
                ..Default::default()
            },
        })
        .unwrap();
        assert_eq!(decode(&encode(&r)).unwrap(), r);
    }

    #[test]
    fn bad_files_are_named() {
        assert!(decode(b"{").is_err());
        assert!(
            decode(br#"{"version":2}"#)
                .unwrap_err()
                .contains("version 2")
        );
        let e = decode(br#"{"version":1,"backends":[{"no":"1","address":"1.2.3.4","port":0}]}"#)
            .unwrap_err();
        assert!(e.contains("backends[0]: port"), "{e}");
    }
}
