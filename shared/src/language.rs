//! Languages a sandbox can run and the priority lanes executions travel in.

use std::fmt;
use std::str::FromStr;

use schemars::JsonSchema;
#[cfg(feature = "sea-orm")]
use sea_orm::sea_query::StringLen;
use serde::{Deserialize, Serialize};

/// A language VoidRunner can run; its name is a subject token, so it is lowercase ASCII.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema, utoipa::ToSchema,
)]
#[cfg_attr(
    feature = "sea-orm",
    derive(sea_orm::EnumIter, sea_orm::DeriveActiveEnum)
)]
#[cfg_attr(
    feature = "sea-orm",
    sea_orm(rs_type = "String", db_type = "String(StringLen::N(16))")
)]
#[serde(rename_all = "lowercase")]
pub enum Language {
    #[cfg_attr(feature = "sea-orm", sea_orm(string_value = "python"))]
    Python,
    #[cfg_attr(feature = "sea-orm", sea_orm(string_value = "javascript"))]
    Javascript,
    #[cfg_attr(feature = "sea-orm", sea_orm(string_value = "bash"))]
    Bash,
    #[cfg_attr(feature = "sea-orm", sea_orm(string_value = "go"))]
    Go,
}

impl Language {
    /// Every supported language, in the order documentation lists them.
    pub const ALL: [Language; 4] = [
        Language::Python,
        Language::Javascript,
        Language::Bash,
        Language::Go,
    ];

    /// The canonical name used in the API, in subjects and in configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Language::Python => "python",
            Language::Javascript => "javascript",
            Language::Bash => "bash",
            Language::Go => "go",
        }
    }
}

impl Language {
    /// The name people know the language by.
    pub fn display_name(self) -> &'static str {
        match self {
            Language::Python => "Python",
            Language::Javascript => "JavaScript (Node.js)",
            Language::Bash => "Bash",
            Language::Go => "Go",
        }
    }

    /// The version its image runs (the image's tag).
    pub fn version(self) -> &'static str {
        match self {
            Language::Python => "3.11",
            Language::Javascript => "18",
            Language::Bash => "5.2",
            Language::Go => "1.19",
        }
    }

    /// The image that runs it unless a worker is told otherwise (`VOIDRUNNER_IMAGE_*`), as
    /// `scripts/build-images.sh` tags it.
    pub fn default_image(self) -> String {
        let name = match self {
            Language::Javascript => "node",
            other => other.as_str(),
        };
        format!("voidrunner/{name}:{}", self.version())
    }

    /// The other names a request may give it by.
    pub fn aliases(self) -> impl Iterator<Item = &'static str> {
        Language::NAMES
            .into_iter()
            .filter(move |(name, language)| *language == self && *name != self.as_str())
            .map(|(name, _)| name)
    }

    /// The name of the program's main file in the sandbox's work directory; a program's
    /// further files may not take it.
    pub fn main_file(self) -> &'static str {
        match self {
            Language::Python => "main.py",
            Language::Javascript => "main.js",
            Language::Bash => "main.sh",
            Language::Go => "main.go",
        }
    }

    /// The language whose main file has this extension (`py`, `js`, `sh`, `go`), so that a
    /// file's name can say what it is written in.
    pub fn for_extension(extension: &str) -> Option<Language> {
        Language::ALL.into_iter().find(|language| {
            std::path::Path::new(language.main_file())
                .extension()
                .is_some_and(|own| own.eq_ignore_ascii_case(extension))
        })
    }
}

impl fmt::Display for Language {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error for a language name VoidRunner does not know.
#[derive(Debug, thiserror::Error)]
#[error("unknown language {0:?}: expected one of python, javascript, bash, go")]
pub struct UnknownLanguage(pub String);

impl Language {
    /// Every name a request may give a language by, canonical names first, then aliases
    /// (lowercase, matched exactly, as the OpenAPI document's `enum` says).
    pub const NAMES: [(&'static str, Language); 12] = [
        ("python", Language::Python),
        ("javascript", Language::Javascript),
        ("bash", Language::Bash),
        ("go", Language::Go),
        ("python3", Language::Python),
        ("py", Language::Python),
        ("js", Language::Javascript),
        ("node", Language::Javascript),
        ("nodejs", Language::Javascript),
        ("sh", Language::Bash),
        ("shell", Language::Bash),
        ("golang", Language::Go),
    ];
}

impl FromStr for Language {
    type Err = UnknownLanguage;

    /// Accepts the canonical names and the usual aliases (`py`, `js`, `node`, `sh`).
    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Language::NAMES
            .iter()
            .find(|(known, _)| *known == name)
            .map(|(_, language)| *language)
            .ok_or_else(|| UnknownLanguage(name.to_owned()))
    }
}

/// A priority lane: each has its own durable consumer, and workers drain `High` first.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Lane {
    High,
    Normal,
    Low,
}

impl Lane {
    /// Lanes in the order a worker serves them.
    pub const BY_PRECEDENCE: [Lane; 3] = [Lane::High, Lane::Normal, Lane::Low];

    /// The highest priority a task may ask for.
    pub const MAX_PRIORITY: u8 = 10;

    /// Maps a task priority (0–10) onto a lane: 7–10 high, 4–6 normal, 0–3 low.
    pub fn for_priority(priority: u8) -> Lane {
        match priority {
            7.. => Lane::High,
            4..=6 => Lane::Normal,
            _ => Lane::Low,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Lane::High => "high",
            Lane::Normal => "normal",
            Lane::Low => "low",
        }
    }
}

impl fmt::Display for Lane {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priorities_map_onto_lanes_at_the_documented_boundaries() {
        let lanes: Vec<Lane> = (0..=10).map(Lane::for_priority).collect();
        assert_eq!(&lanes[0..4], &[Lane::Low; 4]);
        assert_eq!(&lanes[4..7], &[Lane::Normal; 3]);
        assert_eq!(&lanes[7..], &[Lane::High; 4]);
    }

    #[test]
    fn a_main_file_extension_names_its_language_and_an_unknown_one_none() {
        for language in Language::ALL {
            let extension = language.main_file().rsplit('.').next().expect("extension");
            assert_eq!(Language::for_extension(extension), Some(language));
        }
        assert_eq!(Language::for_extension("PY"), Some(Language::Python));
        assert_eq!(Language::for_extension("txt"), None);
    }

    #[test]
    fn language_aliases_parse_to_the_canonical_language() {
        assert_eq!("py".parse::<Language>().ok(), Some(Language::Python));
        assert_eq!("node".parse::<Language>().ok(), Some(Language::Javascript));
        assert!(
            "Node".parse::<Language>().is_err(),
            "names are matched exactly"
        );
        assert_eq!("sh".parse::<Language>().ok(), Some(Language::Bash));
        assert!("cobol".parse::<Language>().is_err());
    }
}
