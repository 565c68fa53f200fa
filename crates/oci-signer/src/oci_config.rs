//! Credentials from a profile of an OCI config file (`~/.oci/config`): an API key
//! (`tenancy/user/fingerprint`) or a session token (`security_token_file`), as the OCI CLI writes.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use super::session::{SessionCache, SessionSpec, Source};
use super::{
    CredentialError, CredentialKind, Credentials, CredentialsProvider, KeyId, PrivateKey, Secret,
};

const DEFAULT_PROFILE: &str = "DEFAULT";

/// `<home>/.oci/config`, where the OCI CLI and SDKs look by default.
pub fn default_oci_config_path(home: Option<&Path>) -> Option<PathBuf> {
    home.map(|h| h.join(".oci").join("config"))
}

/// Credentials from one profile of an OCI config file.
pub struct ApiKeyProvider {
    profile: String,
    /// The profile's `region`, if it names one.
    region: Option<String>,
    config_path: PathBuf,
    mode: Mode,
}

enum Mode {
    /// `key_file` + `fingerprint` + `tenancy` + `user`.
    ApiKey {
        key_id: KeyId,
        key_file: PathBuf,
        passphrase: Option<Secret>,
        current: RwLock<Arc<Credentials>>,
    },
    /// `security_token_file` + `key_file` (from `oci session authenticate`).
    SessionToken(SessionCache),
}

impl ApiKeyProvider {
    /// Loads `profile` from the config file at `path`; keys missing in the profile come from
    /// `[DEFAULT]`. `home` expands a leading `~` in file paths.
    pub fn from_oci_config(
        path: &Path,
        profile: &str,
        home: Option<&Path>,
    ) -> Result<Self, CredentialError> {
        let text = std::fs::read_to_string(path).map_err(|source| CredentialError::ReadFile {
            what: "OCI config file".to_owned(),
            path: path.to_owned(),
            source,
        })?;
        let ini = parse_ini(&text, path)?;
        let view = ProfileView::new(&ini, path, profile)?;

        let key_file = view.path("key_file", home)?;
        let passphrase = view.get("pass_phrase").map(Secret::from);
        let key_what = format!(
            "key_file of profile [{profile}] in {} ({})",
            path.display(),
            key_file.display()
        );

        let mode = if view.get("security_token_file").is_some() {
            let token_file = view.path("security_token_file", home)?;
            let token_what = format!(
                "security_token_file of profile [{profile}] in {} ({})",
                path.display(),
                token_file.display()
            );
            Mode::SessionToken(SessionCache::load(SessionSpec {
                token: Source::File(token_file),
                token_what,
                key: Source::File(key_file),
                key_what,
                passphrase: passphrase.map(Source::Content),
                passphrase_what: format!("pass_phrase of profile [{profile}]"),
            })?)
        } else {
            let fingerprint = view.require("fingerprint")?;
            if !is_fingerprint(fingerprint) {
                return Err(CredentialError::InvalidConfigValue {
                    path: path.to_owned(),
                    profile: profile.to_owned(),
                    key: "fingerprint",
                    reason: "expected the API key's fingerprint as the console shows it: 16 pairs of hex digits separated by colons (aa:bb:...)",
                });
            }
            let tenancy = view.require("tenancy")?;
            let user = view.require("user")?;
            let key_id = KeyId::new(format!("{tenancy}/{user}/{fingerprint}"));
            let key = load_key_file(&key_file, passphrase.as_ref(), &key_what)?;
            let current = RwLock::new(Arc::new(Credentials {
                key_id: key_id.clone(),
                key,
            }));
            Mode::ApiKey {
                key_id,
                key_file,
                passphrase,
                current,
            }
        };
        Ok(ApiKeyProvider {
            region: view.get("region").map(|r| r.trim().to_owned()),
            profile: profile.to_owned(),
            config_path: path.to_owned(),
            mode,
        })
    }
}

impl ApiKeyProvider {
    /// The profile's `region` (e.g. `us-ashburn-1`), as the OCI CLI uses it for service endpoints.
    pub fn region(&self) -> Option<&str> {
        self.region.as_deref()
    }
}

fn load_key_file(
    key_file: &Path,
    passphrase: Option<&Secret>,
    what: &str,
) -> Result<Arc<dyn super::RsaSha256Signer>, CredentialError> {
    let pem = std::fs::read_to_string(key_file)
        .map(Secret::new)
        .map_err(|source| CredentialError::ReadFile {
            what: what.to_owned(),
            path: key_file.to_owned(),
            source,
        })?;
    let key =
        PrivateKey::from_pem(pem.expose(), passphrase).map_err(|source| CredentialError::Key {
            what: what.to_owned(),
            source,
        })?;
    Ok(Arc::new(key))
}

/// An API key fingerprint: the MD5 of the public key as 16 colon-separated pairs of hex digits.
fn is_fingerprint(value: &str) -> bool {
    let pairs: Vec<&str> = value.split(':').collect();
    pairs.len() == 16
        && pairs
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()))
}

impl CredentialsProvider for ApiKeyProvider {
    fn credentials(&self, now: SystemTime) -> Result<Arc<Credentials>, CredentialError> {
        match &self.mode {
            Mode::ApiKey { current, .. } => current
                .read()
                .map(|c| Arc::clone(&c))
                .map_err(|_| CredentialError::Poisoned),
            Mode::SessionToken(cache) => cache.credentials(now),
        }
    }

    /// API key: re-reads the key file (it may have been rotated). Session token: re-reads token
    /// and key.
    fn refresh(&self, _now: SystemTime) -> Result<Arc<Credentials>, CredentialError> {
        match &self.mode {
            Mode::ApiKey {
                key_id,
                key_file,
                passphrase,
                current,
            } => {
                let what = format!("key_file of profile [{}]", self.profile);
                let key = load_key_file(key_file, passphrase.as_ref(), &what)?;
                let fresh = Arc::new(Credentials {
                    key_id: key_id.clone(),
                    key,
                });
                let mut guard = current.write().map_err(|_| CredentialError::Poisoned)?;
                *guard = Arc::clone(&fresh);
                Ok(fresh)
            }
            Mode::SessionToken(cache) => cache.refresh(),
        }
    }

    fn describe(&self) -> String {
        match &self.mode {
            Mode::ApiKey { .. } => format!("api key (profile {})", self.profile),
            Mode::SessionToken(_) => format!("session token (profile {})", self.profile),
        }
    }

    fn kind(&self) -> CredentialKind {
        match &self.mode {
            Mode::ApiKey { .. } => CredentialKind::ApiKey,
            Mode::SessionToken(_) => CredentialKind::SessionToken,
        }
    }
}

impl fmt::Debug for ApiKeyProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = f.debug_struct("ApiKeyProvider");
        s.field("config", &self.config_path)
            .field("profile", &self.profile);
        match &self.mode {
            Mode::ApiKey {
                key_id, key_file, ..
            } => s.field("key_id", key_id).field("key_file", key_file),
            Mode::SessionToken(cache) => {
                let (token, key) = cache.describe_sources();
                s.field("security_token", &token).field("key", &key)
            }
        };
        s.finish()
    }
}

/// Section name → (lower-cased key → value).
type Ini = HashMap<String, HashMap<String, String>>;

/// The INI dialect of OCI config files: `[NAME]` sections, `key=value`, whole-line `#`/`;`
/// comments, whitespace trimmed, keys case-insensitive (as Python's configparser).
/// Duplicates are errors, as with configparser's default strict mode.
pub(super) fn parse_ini(text: &str, path: &Path) -> Result<Ini, CredentialError> {
    let syntax = |line: usize, reason| CredentialError::ConfigSyntax {
        path: path.to_owned(),
        line,
        reason,
    };
    let mut ini = Ini::new();
    let mut section: Option<String> = None;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    for (index, raw) in text.lines().enumerate() {
        let line_no = index + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(inner) = line.strip_prefix('[') {
            let name = inner
                .strip_suffix(']')
                .ok_or_else(|| syntax(line_no, "section header has no closing `]`"))?
                .trim();
            if name.is_empty() {
                return Err(syntax(line_no, "empty section name"));
            }
            if ini.contains_key(name) {
                return Err(syntax(line_no, "section appears twice"));
            }
            ini.insert(name.to_owned(), HashMap::new());
            section = Some(name.to_owned());
            continue;
        }
        // Values are not echoed: a malformed line may hold a passphrase.
        let (key, value) = line
            .split_once('=')
            .ok_or_else(|| syntax(line_no, "expected `key=value`, `[section]` or a comment"))?;
        let key = key.trim().to_ascii_lowercase();
        if key.is_empty() {
            return Err(syntax(line_no, "empty key before `=`"));
        }
        let current = section
            .as_ref()
            .and_then(|s| ini.get_mut(s))
            .ok_or_else(|| syntax(line_no, "key before the first `[section]`"))?;
        if current.contains_key(&key) {
            return Err(syntax(line_no, "key appears twice in this section"));
        }
        current.insert(key, value.trim().to_owned());
    }
    Ok(ini)
}

/// One profile with `[DEFAULT]` as the fallback for missing keys.
struct ProfileView<'a> {
    own: &'a HashMap<String, String>,
    default: Option<&'a HashMap<String, String>>,
    path: &'a Path,
    profile: &'a str,
}

impl<'a> ProfileView<'a> {
    fn new(ini: &'a Ini, path: &'a Path, profile: &'a str) -> Result<Self, CredentialError> {
        let own = ini
            .get(profile)
            .ok_or_else(|| CredentialError::MissingProfile {
                path: path.to_owned(),
                profile: profile.to_owned(),
            })?;
        Ok(ProfileView {
            own,
            default: ini.get(DEFAULT_PROFILE),
            path,
            profile,
        })
    }

    /// A non-empty value from the profile, else from `[DEFAULT]`.
    fn get(&self, key: &str) -> Option<&'a str> {
        let non_empty = |m: &'a HashMap<String, String>| {
            m.get(key).map(String::as_str).filter(|v| !v.is_empty())
        };
        non_empty(self.own).or_else(|| self.default.and_then(non_empty))
    }

    fn require(&self, key: &'static str) -> Result<&'a str, CredentialError> {
        self.get(key)
            .ok_or_else(|| CredentialError::MissingConfigKey {
                path: self.path.to_owned(),
                profile: self.profile.to_owned(),
                key,
            })
    }

    /// A file path with `~` expanded against `home`.
    fn path(&self, key: &'static str, home: Option<&Path>) -> Result<PathBuf, CredentialError> {
        let value = self.require(key)?;
        let rest = if value == "~" {
            Some("")
        } else {
            value.strip_prefix("~/")
        };
        match rest {
            None => Ok(PathBuf::from(value)),
            Some(rest) => {
                let home = home.ok_or_else(|| CredentialError::NoHomeDirectory {
                    path: self.path.to_owned(),
                    profile: self.profile.to_owned(),
                    key,
                })?;
                Ok(home.join(rest))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Ini, CredentialError> {
        parse_ini(text, Path::new("/cfg"))
    }

    #[test]
    fn sections_keys_comments_and_whitespace() {
        let ini = parse(
            "\u{feff}# top comment\n[DEFAULT]\n  User = ocid1.user.x \n; another\n\n[other]\nkey_file=~/k.pem\npass_phrase = a=b#c\n",
        )
        .unwrap();
        assert_eq!(ini["DEFAULT"]["user"], "ocid1.user.x");
        assert_eq!(ini["other"]["key_file"], "~/k.pem");
        assert_eq!(ini["other"]["pass_phrase"], "a=b#c");
    }

    #[test]
    fn syntax_errors_name_the_line_without_echoing_it() {
        for (text, line) in [
            ("key=value\n", 1),
            ("[a]\nno equals sign here\n", 2),
            ("[a\n", 1),
            ("[a]\nx=1\nx=2\n", 3),
            ("[a]\n[a]\n", 2),
            ("[]\n", 1),
            ("[a]\n=v\n", 2),
        ] {
            let err = parse(text).unwrap_err();
            match &err {
                CredentialError::ConfigSyntax { line: l, .. } => assert_eq!(*l, line, "{text}"),
                other => panic!("{other:?}"),
            }
            assert!(!err.to_string().contains("no equals sign"));
        }
    }

    #[test]
    fn profile_falls_back_to_default_and_expands_home() {
        let ini = parse("[DEFAULT]\ntenancy=t\nkey_file=~/.oci/key.pem\n[p]\nuser=u\ntenancy=\n")
            .unwrap();
        let path = Path::new("/cfg");
        let view = ProfileView::new(&ini, path, "p").unwrap();
        assert_eq!(view.get("user"), Some("u"));
        // An empty value in the profile does not hide DEFAULT's.
        assert_eq!(view.get("tenancy"), Some("t"));
        assert_eq!(
            view.path("key_file", Some(Path::new("/home/me"))).unwrap(),
            PathBuf::from("/home/me/.oci/key.pem")
        );
        assert!(matches!(
            view.path("key_file", None),
            Err(CredentialError::NoHomeDirectory { .. })
        ));
        assert!(is_fingerprint(
            "20:3b:97:13:55:1c:5b:0d:d3:37:d8:50:4e:c5:3a:34"
        ));
        for bad in [
            "",
            "20:3b:97",
            "20-3b-97-13-55-1c-5b-0d-d3-37-d8-50-4e-c5-3a-34",
            "zz:3b:97:13:55:1c:5b:0d:d3:37:d8:50:4e:c5:3a:34",
            "20:3b:97:13:55:1c:5b:0d:d3:37:d8:50:4e:c5:3a:34:",
        ] {
            assert!(!is_fingerprint(bad), "{bad}");
        }
        let err = view.require("fingerprint").unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("/cfg") && msg.contains("[p]") && msg.contains("fingerprint"),
            "{msg}"
        );
        let err = ProfileView::new(&ini, path, "nope").err().unwrap();
        assert!(err.to_string().contains("[nope]"));
    }

    #[test]
    fn default_path_is_under_home() {
        assert_eq!(
            default_oci_config_path(Some(Path::new("/home/me"))),
            Some(PathBuf::from("/home/me/.oci/config"))
        );
        assert_eq!(default_oci_config_path(None), None);
    }
}
