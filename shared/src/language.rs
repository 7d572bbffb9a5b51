//! Languages, and the priority lanes executions travel in.
//!
//! A `Language` is a handle on an entry of the language catalog (`catalog`): cheap to copy and
//! compare, and only ever built from the catalog, so a `Language` that exists is one the
//! installation knows.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::catalog::{registry, Definition};

/// A language of the catalog; its id is a subject token (lowercase ASCII).
#[derive(Clone, Copy)]
pub struct Language(&'static Definition);

impl Language {
    /// The handle on a catalog entry (only the catalog makes them).
    pub(crate) fn of(definition: &'static Definition) -> Language {
        Language(definition)
    }

    /// Every language of the catalog, in its order.
    pub fn all() -> &'static [Language] {
        &registry().1
    }

    /// The canonical name used in the API, in subjects and in configuration.
    pub fn as_str(self) -> &'static str {
        &self.0.id
    }

    /// Everything the catalog says about it.
    pub fn definition(self) -> &'static Definition {
        self.0
    }

    /// The name people know the language by.
    pub fn display_name(self) -> &'static str {
        &self.0.name
    }

    /// The version its image runs.
    pub fn version(self) -> &'static str {
        &self.0.version
    }

    /// The image that runs it unless a worker is told otherwise (`VOIDRUNNER_IMAGES`), as
    /// `scripts/build-images.sh` tags it.
    pub fn default_image(self) -> String {
        self.0.image_tag().to_owned()
    }

    /// The other names a request may give it by.
    pub fn aliases(self) -> impl Iterator<Item = &'static str> {
        self.0.aliases.iter().map(String::as_str)
    }

    /// The name of the program's main file in the sandbox's work directory; a program's
    /// further files may not take it.
    pub fn main_file(self) -> &'static str {
        &self.0.main_file
    }

    /// Whether its programs are compiled before they run (a failed build is a compile error).
    pub fn is_compiled(self) -> bool {
        self.0.compile.is_some()
    }

    /// The language whose main file has this extension (`py`, `js`, `sh`, `go`), so that a
    /// file's name can say what it is written in.
    pub fn for_extension(extension: &str) -> Option<Language> {
        Language::all().iter().copied().find(|language| {
            std::path::Path::new(language.main_file())
                .extension()
                .is_some_and(|own| own.eq_ignore_ascii_case(extension))
        })
    }

    /// Every name a request may give a language by, canonical names first, then aliases
    /// (lowercase, matched exactly, as the OpenAPI document's `enum` says).
    pub fn names() -> impl Iterator<Item = &'static str> {
        let all = Language::all();
        all.iter()
            .map(|language| language.as_str())
            .chain(all.iter().flat_map(|language| language.aliases()))
    }
}

impl PartialEq for Language {
    fn eq(&self, other: &Self) -> bool {
        self.0.id == other.0.id
    }
}

impl Eq for Language {}

impl std::hash::Hash for Language {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.id.hash(state)
    }
}

impl PartialOrd for Language {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Language {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.id.cmp(&other.0.id)
    }
}

impl fmt::Debug for Language {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Language({})", self.0.id)
    }
}

impl fmt::Display for Language {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error for a language name VoidRunner does not know.
#[derive(Debug, thiserror::Error)]
#[error("unknown language {name:?}: expected one of {}", known())]
pub struct UnknownLanguage {
    pub name: String,
}

fn known() -> String {
    Language::all()
        .iter()
        .map(|language| language.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

impl FromStr for Language {
    type Err = UnknownLanguage;

    /// Accepts the canonical names and the catalog's aliases (`py`, `js`, `node`, `sh`, ...).
    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Language::all()
            .iter()
            .copied()
            .find(|language| language.as_str() == name || language.aliases().any(|a| a == name))
            .ok_or_else(|| UnknownLanguage {
                name: name.to_owned(),
            })
    }
}

impl Serialize for Language {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Language {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = Cow::<'de, str>::deserialize(deserializer)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

/// On the wire a language is its id: a subject token, whatever the catalog of the reader holds
/// (a worker in another language need not know VoidRunner's catalog to read a dispatch).
impl JsonSchema for Language {
    fn schema_name() -> Cow<'static, str> {
        "Language".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A language of the catalog (languages/catalog.toml), by its id: a subject token, lowercase ASCII.",
            "type": "string",
            "pattern": "^[a-z0-9_-]+$"
        })
    }
}

/// In the REST API a language is one of the catalog's ids.
impl utoipa::PartialSchema for Language {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        let ids: Vec<&str> = Language::all().iter().map(|l| l.as_str()).collect();
        utoipa::openapi::schema::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .description(Some(
                "A language of the catalog, by its id (GET /api/v1/languages lists them)",
            ))
            .enum_values(Some(ids))
            .into()
    }
}

impl utoipa::ToSchema for Language {}

/// A language as a database column: its id, in a short string column.
#[cfg(feature = "sea-orm")]
mod column {
    use sea_orm::sea_query::{
        ArrayType, ColumnType, Nullable, StringLen, Value, ValueType, ValueTypeErr,
    };
    use sea_orm::{ColIdx, DbErr, QueryResult, TryGetError, TryGetable};

    use super::Language;

    impl From<Language> for Value {
        fn from(language: Language) -> Value {
            Value::String(Some(language.as_str().to_owned()))
        }
    }

    impl ValueType for Language {
        fn try_from(value: Value) -> Result<Self, ValueTypeErr> {
            match value {
                Value::String(Some(name)) => name.parse().map_err(|_| ValueTypeErr),
                _ => Err(ValueTypeErr),
            }
        }

        fn type_name() -> String {
            "Language".to_owned()
        }

        fn array_type() -> ArrayType {
            ArrayType::String
        }

        fn column_type() -> ColumnType {
            ColumnType::String(StringLen::N(16))
        }
    }

    impl Nullable for Language {
        fn null() -> Value {
            Value::String(None)
        }
    }

    impl TryGetable for Language {
        fn try_get_by<I: ColIdx>(res: &QueryResult, index: I) -> Result<Self, TryGetError> {
            let name = String::try_get_by(res, index)?;
            // A language a row names but the catalog no longer has (it was removed): the row
            // stays readable as data, but cannot become a `Language`.
            name.parse()
                .map_err(|e: super::UnknownLanguage| TryGetError::DbErr(DbErr::Type(e.to_string())))
        }
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
        for &language in Language::all() {
            let extension = language.main_file().rsplit('.').next().expect("extension");
            assert_eq!(Language::for_extension(extension), Some(language));
        }
        assert_eq!(
            Language::for_extension("PY").map(Language::as_str),
            Some("python")
        );
        assert_eq!(Language::for_extension("txt"), None);
    }

    #[test]
    fn names_and_aliases_find_their_language_and_nothing_else_does() {
        let python: Language = "py".parse().expect("alias");
        assert_eq!(python.as_str(), "python");
        assert_eq!(
            "node".parse::<Language>().expect("alias").as_str(),
            "javascript"
        );
        assert_eq!("c++".parse::<Language>().expect("alias").as_str(), "cpp");
        let unknown = "cobol".parse::<Language>().expect_err("not in the catalog");
        assert!(
            unknown.to_string().contains("expected one of python"),
            "{unknown}"
        );
        assert_eq!(
            Language::for_extension("java").map(Language::as_str),
            Some("java")
        );
        assert_eq!(
            Language::for_extension("rs").map(Language::as_str),
            Some("rust")
        );
    }

    #[test]
    fn a_language_travels_as_its_id() {
        let go: Language = "golang".parse().expect("alias");
        assert_eq!(serde_json::to_string(&go).expect("serialises"), "\"go\"");
        let back: Language = serde_json::from_str("\"go\"").expect("parses");
        assert_eq!(back, go);
        assert_eq!(go.default_image(), "voidrunner/go:1.24");
    }
}
