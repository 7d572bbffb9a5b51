//! `voidrunner config check`: the environment validated as a command would validate it when it
//! starts, without starting anything.

use serde_json::json;

use crate::commands::table::{self, Column, Format};
use crate::settings::{self, Target};

/// The configuration is invalid (sysexits' `EX_CONFIG`).
pub const CONFIG_ERROR: u8 = 78;

/// Prints the effective configuration of `target`, or says on stderr what each bad variable's
/// problem is and exits [`CONFIG_ERROR`].
pub fn check(target: Target, vars: &[(String, String)], format: Format) -> u8 {
    match settings::effective(target, vars) {
        Ok(settings) => {
            let rows = serde_json::to_value(&settings).unwrap_or_default();
            if format == Format::Json {
                table::print(&json!({ "valid": true, "settings": rows }), &[], format);
            } else {
                table::print(&rows, &COLUMNS, format);
            }
            0
        }
        Err(errors) => {
            if format == Format::Json {
                let errors: Vec<_> = errors
                    .0
                    .iter()
                    .map(|error| json!({ "variable": error.variable(), "message": error.to_string() }))
                    .collect();
                table::print(&json!({ "valid": false, "errors": errors }), &[], format);
            }
            for error in &errors.0 {
                eprintln!("voidrunner: {error}");
            }
            eprintln!(
                "voidrunner: {} configuration error(s); nothing was started",
                errors.0.len()
            );
            CONFIG_ERROR
        }
    }
}

const COLUMNS: [Column; 3] = [
    Column {
        heading: "VARIABLE",
        cell: |row| table::field(row, "variable"),
    },
    Column {
        heading: "VALUE",
        cell: |row| match &row["value"] {
            serde_json::Value::Null => "(unset)".into(),
            _ => table::field(row, "value"),
        },
    },
    Column {
        heading: "FROM",
        cell: |row| {
            if row["set"].as_bool() == Some(true) {
                "environment".into()
            } else {
                "default".into()
            }
        },
    },
];
