//! The language catalog (`languages/catalog.toml`, built into every binary): which languages
//! exist, which image runs each, and how a program is compiled and run. `Language` (in
//! `language`) is a handle on one of its entries.

use std::collections::{BTreeMap, HashSet};
use std::sync::OnceLock;

use serde::Deserialize;

use crate::Language;

/// The catalog every binary carries.
const BUILT_IN: &str = include_str!("../../languages/catalog.toml");

/// The language catalog: the images and the languages they run.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Catalog {
    images: BTreeMap<String, ImageDefinition>,
    languages: Vec<Definition>,
}

/// How one image is built (read by `scripts/build-images.sh`; the worker needs its tag).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageDefinition {
    pub version: String,
    #[serde(default)]
    pub packages: Vec<String>,
    pub check: String,
    pub expect: String,
    #[serde(default)]
    pub env: Vec<String>,
    #[serde(default)]
    pub files: BTreeMap<String, String>,
    #[serde(default)]
    pub setup: Option<String>,
}

/// One language of the catalog.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Definition {
    pub id: String,
    #[serde(default)]
    pub aliases: Vec<String>,
    pub name: String,
    pub version: String,
    pub image: String,
    pub main_file: String,
    #[serde(default)]
    pub compile: Option<String>,
    pub run: String,
    /// Starts the language's runtime with the sandbox, before its program arrives, and then
    /// runs the program as `run` would (see `languages/catalog.toml`).
    #[serde(default)]
    pub prestart: Option<String>,
    #[serde(default)]
    pub memory_mb: Option<u32>,
    #[serde(default)]
    pub timeout_seconds: Option<u32>,
    pub checks: Checks,
    /// `voidrunner/<image>:<image version>`, filled in when the catalog loads.
    #[serde(skip)]
    image_tag: String,
}

impl Definition {
    /// The image the catalog runs it in.
    pub fn image_tag(&self) -> &str {
        &self.image_tag
    }
}

/// The programs every language of the catalog must pass in the sandbox (the test suite runs
/// them): `hello` prints `hello, world`, `greet` reads a name from stdin and prints
/// `hello, <name>`, `exit` ends with code 3, `compile_error` does not compile.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checks {
    pub hello: String,
    pub greet: String,
    pub exit: String,
    #[serde(default)]
    pub compile_error: Option<String>,
}

/// Why a catalog was refused.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("the language catalog is not valid TOML for a catalog: {0}")]
    Syntax(#[from] toml::de::Error),
    #[error("the language catalog is inconsistent: {0}")]
    Inconsistent(String),
}

impl Catalog {
    /// Parses and checks a catalog document.
    pub fn parse(document: &str) -> Result<Catalog, CatalogError> {
        let mut catalog: Catalog = toml::from_str(document)?;
        let wrong = |what: String| Err(CatalogError::Inconsistent(what));
        let mut names = HashSet::new();
        for language in &mut catalog.languages {
            if !is_subject_token(&language.id) {
                return wrong(format!(
                    "language id {:?} must be lowercase letters, digits, '-' or '_' (it is a NATS subject token)",
                    language.id
                ));
            }
            for name in std::iter::once(&language.id).chain(&language.aliases) {
                if name.is_empty()
                    || name
                        .chars()
                        .any(|c| c.is_ascii_uppercase() || c.is_whitespace())
                {
                    return wrong(format!(
                        "language name {name:?} must be lowercase, without spaces"
                    ));
                }
                if !names.insert(name.clone()) {
                    return wrong(format!("language name {name:?} is given twice"));
                }
            }
            let main = std::path::Path::new(&language.main_file);
            if main.components().count() != 1 || main.extension().is_none() {
                return wrong(format!(
                    "{}: main_file {:?} must be a plain file name with an extension",
                    language.id, language.main_file
                ));
            }
            let Some(image) = catalog.images.get(&language.image) else {
                return wrong(format!(
                    "{}: no image {:?} in the catalog",
                    language.id, language.image
                ));
            };
            if language.compile.is_some() != language.checks.compile_error.is_some() {
                return wrong(format!(
                    "{}: a compiled language has a compile_error check, and only a compiled one",
                    language.id
                ));
            }
            if language.compile.is_some() && language.prestart.is_some() {
                return wrong(format!(
                    "{}: prestart is for languages that run their source (no compile step)",
                    language.id
                ));
            }
            language.image_tag = format!("voidrunner/{}:{}", language.image, image.version);
        }
        if catalog.languages.is_empty() {
            return wrong("it has no languages".into());
        }
        Ok(catalog)
    }

    /// The catalog built into this binary.
    pub fn built_in() -> &'static Catalog {
        registry().0
    }

    /// Its images by name.
    pub fn images(&self) -> &BTreeMap<String, ImageDefinition> {
        &self.images
    }
}

fn is_subject_token(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// The built-in catalog and its languages, loaded once per process.
pub(crate) fn registry() -> &'static (&'static Catalog, Vec<Language>) {
    static REGISTRY: OnceLock<(&'static Catalog, Vec<Language>)> = OnceLock::new();
    REGISTRY.get_or_init(|| {
        // A unit test parses the same document, so a catalog that does not load fails the build's
        // tests long before it reaches a service.
        let catalog: &'static Catalog = Box::leak(Box::new(
            Catalog::parse(BUILT_IN).unwrap_or_else(|e| panic!("the built-in {e}")),
        ));
        let languages = catalog.languages.iter().map(Language::of).collect();
        (catalog, languages)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_catalog_loads_with_at_least_sixteen_languages() {
        let catalog = Catalog::parse(BUILT_IN).expect("the built-in catalog is valid");
        assert!(catalog.languages.len() >= 16, "{}", catalog.languages.len());
        for id in [
            "python",
            "javascript",
            "typescript",
            "bash",
            "go",
            "rust",
            "c",
            "cpp",
            "java",
            "ruby",
            "php",
            "perl",
            "lua",
        ] {
            assert!(id.parse::<Language>().is_ok(), "{id} is in the catalog");
        }
    }

    #[test]
    fn an_inconsistent_catalog_is_refused_with_what_is_wrong() {
        let document = BUILT_IN.replacen("image = \"python\"", "image = \"pyhton\"", 1);
        let error = Catalog::parse(&document).expect_err("refused");
        assert!(error.to_string().contains("no image \"pyhton\""), "{error}");
        let document = BUILT_IN.replacen("id = \"ruby\"", "id = \"Ruby.3\"", 1);
        let error = Catalog::parse(&document).expect_err("refused");
        assert!(error.to_string().contains("subject token"), "{error}");
        let document = BUILT_IN.replacen(
            "run = \"node /tmp/.voidrunner-out/main.js\"",
            "run = \"node /tmp/.voidrunner-out/main.js\"\nprestart = \"node\"",
            1,
        );
        let error = Catalog::parse(&document).expect_err("refused");
        assert!(
            error.to_string().contains("typescript: prestart is for"),
            "{error}"
        );
    }
}
