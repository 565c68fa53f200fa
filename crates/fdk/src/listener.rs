//! The socket half of the Fn `http-stream` contract: where to listen and how to announce readiness.
//!
//! The platform watches its socket directory for a file named after `FN_LISTENER` and connects as soon as
//! it appears, so the socket is bound and listening under a sibling name first and the announced name is
//! created last, as a same-directory relative symlink (the platform rejects any other link target).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use tokio::net::UnixListener;

/// `sun_path` holds 108 bytes including the terminating NUL.
pub const MAX_SOCKET_PATH_BYTES: usize = 107;

/// Why the function refuses to start. Each renders as one line for the platform's log.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// `FN_LISTENER` is not set.
    #[error("FN_LISTENER is not set: this command must be started by the Fn platform (or a harness that plays it)")]
    MissingListener,
    /// `FN_LISTENER` is not a `unix:` address.
    #[error("FN_LISTENER must start with 'unix:' followed by an absolute socket path, got {0:?}")]
    NotUnix(String),
    /// The socket path is relative.
    #[error("FN_LISTENER path must be absolute, got {0:?}")]
    NotAbsolute(String),
    /// The socket path is longer than a Unix socket address allows.
    #[error("FN_LISTENER path is {0} bytes; a Unix socket path is at most {MAX_SOCKET_PATH_BYTES} bytes")]
    TooLong(usize),
    /// The socket path ends in `/`.
    #[error("FN_LISTENER path {0:?} has no file name")]
    NoFileName(String),
    /// `FN_FORMAT` names a protocol other than `http-stream`.
    #[error("FN_FORMAT is {0:?}; only 'http-stream' is supported")]
    UnsupportedFormat(String),
    /// A file-system step of binding the socket failed.
    #[error("cannot {action} {path}")]
    Io {
        /// The step (`bind`, `chmod`, `symlink`, `remove stale`).
        action: &'static str,
        /// The file it acted on.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
}

impl StartError {
    fn io(action: &'static str, path: &Path, source: std::io::Error) -> Self {
        StartError::Io {
            action,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Where the platform expects the function to listen, validated from the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerSpec {
    /// The announced name (`FN_LISTENER` without `unix:`), e.g. `/tmp/iofs/lsnr.sock`.
    announced: PathBuf,
    /// The socket actually bound, beside the announced name.
    bound: PathBuf,
}

impl ListenerSpec {
    /// Validates `FN_FORMAT` and `FN_LISTENER` as read through `lookup`.
    pub fn from_lookup(lookup: &dyn Fn(&str) -> Option<String>) -> Result<Self, StartError> {
        if let Some(format) = lookup("FN_FORMAT") {
            // An empty value is what some platforms set now that the variable is deprecated.
            if !format.is_empty() && format != "http-stream" {
                return Err(StartError::UnsupportedFormat(format));
            }
        }
        let listener = lookup("FN_LISTENER").ok_or(StartError::MissingListener)?;
        Self::parse(&listener)
    }

    /// Parses an `FN_LISTENER` value. The prefix is stripped literally: a URL parser would read
    /// `unix://tmp/x.sock` as host `tmp`.
    pub fn parse(value: &str) -> Result<Self, StartError> {
        let path = value
            .strip_prefix("unix:")
            .ok_or_else(|| StartError::NotUnix(value.to_string()))?;
        if !path.starts_with('/') {
            return Err(StartError::NotAbsolute(path.to_string()));
        }
        if path.len() > MAX_SOCKET_PATH_BYTES {
            return Err(StartError::TooLong(path.len()));
        }
        let announced = PathBuf::from(path);
        let name = announced
            .file_name()
            .filter(|_| !path.ends_with('/'))
            .ok_or_else(|| StartError::NoFileName(path.to_string()))?;
        let mut bound_name = std::ffi::OsString::from("phony");
        bound_name.push(name);
        let bound = announced.with_file_name(bound_name);
        if bound.as_os_str().len() > MAX_SOCKET_PATH_BYTES {
            return Err(StartError::TooLong(bound.as_os_str().len()));
        }
        Ok(ListenerSpec { announced, bound })
    }

    /// The announced name (`FN_LISTENER` without `unix:`), e.g. `/tmp/iofs/lsnr.sock`.
    pub fn announced(&self) -> &Path {
        &self.announced
    }

    /// The socket actually bound, beside the announced name.
    pub fn bound(&self) -> &Path {
        &self.bound
    }

    /// Binds and listens on the sibling name, opens it to the platform's user (0666) and announces it with
    /// the relative symlink, in that order. Stale files of both names are removed independently first.
    pub fn bind(&self) -> Result<UnixListener, StartError> {
        remove_if_present(&self.announced)?;
        remove_if_present(&self.bound)?;
        let listener =
            UnixListener::bind(&self.bound).map_err(|e| StartError::io("bind", &self.bound, e))?;
        std::fs::set_permissions(&self.bound, std::fs::Permissions::from_mode(0o666))
            .map_err(|e| StartError::io("chmod", &self.bound, e))?;
        let target = self.bound.file_name().unwrap_or_default();
        std::os::unix::fs::symlink(target, &self.announced)
            .map_err(|e| StartError::io("symlink", &self.announced, e))?;
        Ok(listener)
    }

    /// Removes both files; used on orderly shutdown. Errors are ignored: the platform discards the
    /// directory with the container anyway.
    pub fn cleanup(&self) {
        let _ = std::fs::remove_file(&self.announced);
        let _ = std::fs::remove_file(&self.bound);
    }
}

fn remove_if_present(path: &Path) -> Result<(), StartError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StartError::io("remove stale", path, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_the_prefix_literally() {
        let spec = ListenerSpec::parse("unix:/tmp/iofs/lsnr.sock").unwrap();
        assert_eq!(spec.announced, PathBuf::from("/tmp/iofs/lsnr.sock"));
        assert_eq!(spec.bound, PathBuf::from("/tmp/iofs/phonylsnr.sock"));
    }

    #[test]
    fn double_slash_form_is_still_a_path() {
        let spec = ListenerSpec::parse("unix://tmp/x.sock").unwrap();
        assert_eq!(spec.announced, PathBuf::from("//tmp/x.sock"));
    }

    #[test]
    fn refuses_bad_values() {
        assert!(matches!(
            ListenerSpec::parse("tcp:/x"),
            Err(StartError::NotUnix(_))
        ));
        assert!(matches!(
            ListenerSpec::parse("/tmp/x"),
            Err(StartError::NotUnix(_))
        ));
        assert!(matches!(
            ListenerSpec::parse("unix:relative.sock"),
            Err(StartError::NotAbsolute(_))
        ));
        assert!(matches!(
            ListenerSpec::parse("unix:/tmp/dir/"),
            Err(StartError::NoFileName(_))
        ));
        let long = format!("unix:/{}", "a".repeat(107));
        assert!(matches!(
            ListenerSpec::parse(&long),
            Err(StartError::TooLong(108))
        ));
    }

    #[test]
    fn format_must_be_http_stream_when_set() {
        let env = |k: &str| match k {
            "FN_FORMAT" => Some("json".to_string()),
            "FN_LISTENER" => Some("unix:/tmp/a.sock".to_string()),
            _ => None,
        };
        assert!(matches!(
            ListenerSpec::from_lookup(&env),
            Err(StartError::UnsupportedFormat(_))
        ));
        let missing = |_: &str| None;
        assert!(matches!(
            ListenerSpec::from_lookup(&missing),
            Err(StartError::MissingListener)
        ));
    }
}
