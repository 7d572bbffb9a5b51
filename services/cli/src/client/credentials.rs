//! What `voidrunner login` keeps: per server, the session's tokens, in the user's config
//! directory (`$XDG_CONFIG_HOME/voidrunner/credentials.json`, else `~/.config/voidrunner/`),
//! readable by its owner only.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// A logged-in session's tokens for one server.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Session {
    pub email: String,
    pub access_token: String,
    pub refresh_token: String,
    /// When the access token stops working.
    pub expires_at: DateTime<Utc>,
}

/// The credentials file: sessions by server URL.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Stored {
    #[serde(default)]
    sessions: BTreeMap<String, Session>,
}

/// Where the sessions live.
#[derive(Debug, Clone)]
pub struct Credentials {
    path: PathBuf,
}

impl Credentials {
    /// The file in the user's config directory, from the environment given.
    pub fn from_env(vars: &[(String, String)]) -> anyhow::Result<Credentials> {
        let var = |name: &str| {
            vars.iter()
                .find(|(key, value)| key == name && !value.is_empty())
                .map(|(_, value)| PathBuf::from(value))
        };
        let dir = var("XDG_CONFIG_HOME")
            .or_else(|| var("HOME").map(|home| home.join(".config")))
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "neither XDG_CONFIG_HOME nor HOME is set: no place to keep the login"
                )
            })?;
        Ok(Credentials {
            path: dir.join("voidrunner").join("credentials.json"),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn read(&self) -> anyhow::Result<Stored> {
        match std::fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|error| {
                anyhow::anyhow!(
                    "{} is not a credentials file ({error}): remove it and log in again",
                    self.path.display()
                )
            }),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(Stored::default()),
            Err(error) => Err(anyhow::anyhow!("reading {}: {error}", self.path.display())),
        }
    }

    /// Written whole to a new file (mode 0600 from its creation) that replaces the old one.
    fn write(&self, stored: &Stored) -> anyhow::Result<()> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)?;
        let temporary = dir.join(format!(".credentials.{}.tmp", std::process::id()));
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&temporary)?;
        file.write_all(&serde_json::to_vec_pretty(stored)?)?;
        file.sync_all()?;
        std::fs::rename(&temporary, &self.path)?;
        Ok(())
    }

    /// The session kept for `server`, if any.
    pub fn session(&self, server: &str) -> anyhow::Result<Option<Session>> {
        Ok(self.read()?.sessions.remove(server))
    }

    pub fn save(&self, server: &str, session: Session) -> anyhow::Result<()> {
        let mut stored = self.read()?;
        stored.sessions.insert(server.to_owned(), session);
        self.write(&stored)
    }

    /// Forgets `server`'s session; whether there was one.
    pub fn forget(&self, server: &str) -> anyhow::Result<bool> {
        let mut stored = self.read()?;
        let had = stored.sessions.remove(server).is_some();
        if had {
            self.write(&stored)?;
        }
        Ok(had)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_saved_session_is_read_back_per_server_from_a_file_only_its_owner_reads() {
        let dir = tempfile::tempdir().expect("tempdir");
        let vars = vec![(
            "XDG_CONFIG_HOME".to_owned(),
            dir.path().display().to_string(),
        )];
        let credentials = Credentials::from_env(&vars).expect("credentials");
        let session = Session {
            email: "ada@example.com".into(),
            access_token: "a".into(),
            refresh_token: "r".into(),
            expires_at: Utc::now(),
        };
        credentials
            .save("http://one", session.clone())
            .expect("save");
        assert_eq!(
            credentials.session("http://one").expect("read"),
            Some(session)
        );
        assert_eq!(credentials.session("http://two").expect("read"), None);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(credentials.path())
                .expect("metadata")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(credentials.forget("http://one").expect("forget"));
        assert!(!credentials.forget("http://one").expect("forget"));
    }
}
