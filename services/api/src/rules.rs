//! The rules a request's fields keep, each stated once: the validators check values against
//! them, and the OpenAPI document states them on the fields they govern (`openapi::served`),
//! so that a generated client refuses what the server refuses, and nothing more.
//!
//! Patterns are written in the subset of regular expressions that JSON Schema's ECMA-262
//! dialect, Python's `re` and Rust's `regex` read alike: explicit character classes, no `\s`
//! or `\w` (whose meanings differ), no look-around.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};

use regex::Regex;
use serde_json::{json, Value};

/// Not blank: holds a character other than ASCII whitespace. (Anchored and matching the whole
/// value: schemathesis reads a one-class pattern as the whole value's shape.)
const NOT_BLANK: &str = "^[\\t\\n\\x0b\\x0c\\r ]*[^\\x00\\t\\n\\x0b\\x0c\\r ][^\\x00]*$";

/// No U+0000, which PostgreSQL cannot store in text (the other patterns exclude it too).
pub const NO_NUL: &str = "^[^\\x00]*$";

/// The ASCII whitespace a name or description is trimmed of.
pub fn is_blank(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\x0b' | '\x0c' | '\r' | ' ')
}

/// A rule for a text field: its length in characters, and a pattern it matches.
#[derive(Debug, Clone, Copy)]
pub struct Text {
    pub min_chars: usize,
    pub max_chars: usize,
    pub pattern: Option<&'static str>,
    /// What a value that does not match the pattern is told.
    pub pattern_problem: &'static str,
}

impl Text {
    /// Why `value` breaks the rule, if it does.
    pub fn check(&self, value: &str) -> Result<(), String> {
        let chars = value.chars().count();
        if chars < self.min_chars || chars > self.max_chars {
            return Err(if self.min_chars == 0 {
                format!("must be at most {} characters, got {chars}", self.max_chars)
            } else {
                format!(
                    "must be {} to {} characters, got {chars}",
                    self.min_chars, self.max_chars
                )
            });
        }
        match self.pattern {
            Some(pattern) if !matches(pattern, value) => Err(self.pattern_problem.to_owned()),
            _ => Ok(()),
        }
    }

    /// The rule as JSON Schema keywords.
    pub fn schema(&self) -> Value {
        let mut schema = json!({ "minLength": self.min_chars, "maxLength": self.max_chars });
        if let Some(pattern) = self.pattern {
            schema["pattern"] = json!(pattern);
        }
        schema
    }
}

fn matches(pattern: &'static str, value: &str) -> bool {
    static COMPILED: LazyLock<Mutex<HashMap<&'static str, Regex>>> =
        LazyLock::new(Default::default);
    let mut compiled = COMPILED
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    compiled
        .entry(pattern)
        .or_insert_with(|| Regex::new(pattern).expect("the rules' patterns are valid"))
        .is_match(value)
}

/// A rule for a number: the closed range it lies in.
#[derive(Debug, Clone, Copy)]
pub struct Range<T> {
    pub min: T,
    pub max: T,
}

impl<T: PartialOrd + Copy + std::fmt::Display + serde::Serialize> Range<T> {
    pub fn check(&self, value: T) -> Result<(), String> {
        if value < self.min || value > self.max {
            return Err(format!(
                "must be between {} and {}, got {value}",
                self.min, self.max
            ));
        }
        Ok(())
    }

    pub fn schema(&self) -> Value {
        json!({ "minimum": self.min, "maximum": self.max })
    }
}

/// A task's name.
pub const TASK_NAME: Text = Text {
    min_chars: 1,
    max_chars: 255,
    pattern: Some(NOT_BLANK),
    pattern_problem: "must not be blank",
};

/// An API key's name.
pub const API_KEY_NAME: Text = Text {
    min_chars: 1,
    max_chars: 100,
    pattern: Some(NOT_BLANK),
    pattern_problem: "must not be blank",
};

/// A task's description (blank means none).
pub const DESCRIPTION: Text = Text {
    min_chars: 0,
    max_chars: 1000,
    pattern: None,
    pattern_problem: "",
};

/// An account's email: something, `@`, a domain with a dot; no spaces.
pub const EMAIL: Text = Text {
    min_chars: 3,
    max_chars: 320,
    pattern: Some(
        "^[^@\\x00\\t\\n\\x0b\\x0c\\r ]+@[^@.\\x00\\t\\n\\x0b\\x0c\\r ][^@\\x00\\t\\n\\x0b\\x0c\\r ]*\\.[^@\\x00\\t\\n\\x0b\\x0c\\r ]+$",
    ),
    pattern_problem: "must be an email address like user@example.com",
};

/// A new account's password.
pub const PASSWORD: Text = Text {
    min_chars: 8,
    max_chars: 1024,
    pattern: None,
    pattern_problem: "",
};

/// A program file's path: relative, plain characters, no `.` or `..` parts.
pub const FILE_PATH: Text = Text {
    min_chars: 1,
    max_chars: 128,
    pattern: Some(
        "^(?:[A-Za-z0-9_-][A-Za-z0-9._-]*|\\.[A-Za-z0-9_-][A-Za-z0-9._-]*|\\.\\.[A-Za-z0-9._-]+)(?:/(?:[A-Za-z0-9_-][A-Za-z0-9._-]*|\\.[A-Za-z0-9_-][A-Za-z0-9._-]*|\\.\\.[A-Za-z0-9._-]+))*$",
    ),
    pattern_problem: "must be relative, from A-Z a-z 0-9 . _ - /, without empty, . or .. parts",
};

/// A webhook's URL: http(s), a host name or an IPv4 address, an optional port, then anything
/// visible; empty means none. (Loopback and private addresses are refused unless the
/// deployment allows them: that takes a lookup, not a pattern.)
pub const CALLBACK_URL: Text = Text {
    min_chars: 0,
    max_chars: 2048,
    pattern: Some(
        "^$|^[Hh][Tt][Tt][Pp][Ss]?://(?:(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\\.)*[A-Za-z](?:[A-Za-z0-9-]*[A-Za-z0-9])?|(?:(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])\\.){3}(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9]))(?::(?:6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[0-9]{1,4}))?(?:[/?#][!-~]*)?$",
    ),
    pattern_problem: "must be an absolute http(s) URL with a host name, like https://example.com/hook, without credentials",
};

/// Files a program may have besides its main file.
pub const MAX_FILES: usize = 32;
/// Bytes of a task's metadata as JSON.
pub const MAX_METADATA_BYTES: usize = 16 * 1024;
/// Runs a batch holds.
pub const BATCH_RUNS: Range<usize> = Range { min: 1, max: 100 };
/// A task's retries after the first run.
pub const RETRIES: Range<i64> = Range { min: 0, max: 10 };

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_patterns_accept_and_refuse_what_their_rules_say() {
        for good in ["a@b.co", "Ada.Lovelace+x@example.com", "ü@ex.ample"] {
            assert!(EMAIL.check(good).is_ok(), "{good}");
        }
        for bad in [
            "", "a@b", "@b.co", "a@.b.co", "a b@c.de", " a@b.co", "a@b@c.de", "a@b.",
        ] {
            assert!(EMAIL.check(bad).is_err(), "{bad:?}");
        }
        for good in ["a", "lib/util.py", ".hidden", "..x", "...", "a-b_c.d/e"] {
            assert!(FILE_PATH.check(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "/etc/passwd",
            ".",
            "..",
            "a/../b",
            "a//b",
            "a/",
            "ü",
            "a b",
        ] {
            assert!(FILE_PATH.check(bad).is_err(), "{bad:?}");
        }
        for good in [
            "",
            "https://example.com/hook?x=1",
            "http://a:8080",
            "HTTP://hooks.example.org",
            "http://10.0.0.5/x",
            "http://127.0.0.1:43567/hook",
            "https://hooks.example:65535",
        ] {
            assert!(CALLBACK_URL.check(good).is_ok(), "{good}");
        }
        for bad in [
            "ftp://example.com",
            "https://u:p@example.com",
            "https://a.0",
            "http://256.1.1.1",
            "http://hooks.example:65536/x",
            "example.com",
            " ",
        ] {
            assert!(CALLBACK_URL.check(bad).is_err(), "{bad:?}");
        }
        assert!(TASK_NAME.check(" \t").is_err());
        assert!(TASK_NAME.check(" x ").is_ok());
        assert!(TASK_NAME.check(&"x".repeat(256)).is_err());
        assert_eq!(
            RETRIES.check(11).expect_err("11 is past the bound"),
            "must be between 0 and 10, got 11"
        );
    }
}
