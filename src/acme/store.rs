//! Where automatic HTTPS keeps what it obtained: beside the state file, in `acme/<CA>/`, the
//! account's credentials (`account.json`) and each name's certificate chain and key
//! (`<name>.crt`, `<name>.key`), and the rate limits' ledger (`limits.json`). Files are written whole (a temporary file renamed over the
//! old one) and readable by their owner only (0600, directories 0700): the keys are secrets.
//! One directory per ACME server, so a staging account or certificate is never used for
//! production.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct DiskError {
    pub path: String,
    pub reason: String,
}

fn disk_error(path: &Path, e: impl std::fmt::Display) -> DiskError {
    DiskError {
        path: path.display().to_string(),
        reason: e.to_string(),
    }
}

/// A certificate chain and its key, as PEM.
pub type Pem = (Vec<u8>, Vec<u8>);

#[derive(Clone, Debug)]
pub struct Disk {
    dir: PathBuf,
}

/// A directory name for an ACME server: its URL's host, port and path, with anything but
/// letters, digits, `-` and `.` as `_`.
fn server_dir(directory: &str) -> String {
    let rest = directory
        .strip_prefix("https://")
        .or_else(|| directory.strip_prefix("http://"))
        .unwrap_or(directory);
    rest.trim_end_matches('/')
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

impl Disk {
    /// The directory for `directory`'s certificates beside `state` (the state file).
    pub fn beside(state: &Path, directory: &str) -> Disk {
        Disk::beside_for(state, directory, None)
    }

    /// The same for `--instance` `instance`: `acme-<instance>`, so two instances whose state
    /// files share a folder keep their certificates and ledgers apart.
    pub fn beside_for(state: &Path, directory: &str, instance: Option<&str>) -> Disk {
        let parent = state
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let folder = match instance {
            Some(n) => format!("acme-{n}"),
            None => "acme".to_owned(),
        };
        Disk {
            dir: parent.join(folder).join(server_dir(directory)),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn read(&self, file: &str) -> Result<Option<Vec<u8>>, DiskError> {
        let path = self.dir.join(file);
        match std::fs::read(&path) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(disk_error(&path, e)),
        }
    }

    fn write(&self, file: &str, bytes: &[u8]) -> Result<(), DiskError> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(|e| disk_error(&self.dir, e))?;
        let path = self.dir.join(file);
        let tmp = self.dir.join(format!(".{file}.tmp"));
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| disk_error(&tmp, e))?;
        f.write_all(bytes)
            .and_then(|()| f.sync_all())
            .map_err(|e| disk_error(&tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| disk_error(&path, e))
    }

    /// The account's credentials (instant-acme's JSON), if one was made.
    pub fn account(&self) -> Result<Option<Vec<u8>>, DiskError> {
        self.read("account.json")
    }

    pub fn save_account(&self, json: &[u8]) -> Result<(), DiskError> {
        self.write("account.json", json)
    }

    /// A name's certificate chain and key (PEM), if one was obtained.
    pub fn cert(&self, name: &str) -> Result<Option<Pem>, DiskError> {
        match (
            self.read(&format!("{name}.crt"))?,
            self.read(&format!("{name}.key"))?,
        ) {
            (Some(c), Some(k)) => Ok(Some((c, k))),
            _ => Ok(None),
        }
    }

    /// The rate limits' ledger (JSON), if one was kept.
    pub fn ledger(&self) -> Result<Option<Vec<u8>>, DiskError> {
        self.read("limits.json")
    }

    pub fn save_ledger(&self, json: &[u8]) -> Result<(), DiskError> {
        self.write("limits.json", json)
    }

    /// The key first: a chain on disk always has its key.
    pub fn save_cert(&self, name: &str, chain: &[u8], key: &[u8]) -> Result<(), DiskError> {
        self.write(&format!("{name}.key"), key)?;
        self.write(&format!("{name}.crt"), chain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn one_directory_per_server_beside_the_state_file() {
        let d = Disk::beside(
            Path::new("/var/lib/quayside/state.json"),
            "https://acme-v02.api.letsencrypt.org/directory",
        );
        assert_eq!(
            d.dir(),
            Path::new("/var/lib/quayside/acme/acme-v02.api.letsencrypt.org_directory")
        );
        let d = Disk::beside(Path::new("state.json"), "https://127.0.0.1:14000/dir");
        assert_eq!(d.dir(), Path::new("./acme/127.0.0.1_14000_dir"));
    }

    #[test]
    fn files_are_written_whole_and_private() {
        let base = std::env::temp_dir().join(format!("qs-acme-disk-{}", std::process::id()));
        let d = Disk::beside(&base.join("state.json"), "https://ca.test/dir");
        assert_eq!(d.cert("a.test").unwrap(), None);
        assert_eq!(d.account().unwrap(), None);
        d.save_cert("a.test", b"chain", b"key").unwrap();
        d.save_account(b"{}").unwrap();
        assert_eq!(
            d.cert("a.test").unwrap(),
            Some((b"chain".to_vec(), b"key".to_vec()))
        );
        for f in ["a.test.crt", "a.test.key", "account.json"] {
            let mode = std::fs::metadata(d.dir().join(f))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{f}");
        }
        let mode = std::fs::metadata(d.dir()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        std::fs::remove_dir_all(&base).unwrap();
    }
}
