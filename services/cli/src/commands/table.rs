//! How the client commands print: aligned tables for people, JSON for scripts, colour only on
//! a terminal and never with `NO_COLOR` set.

use std::io::{IsTerminal, Write};

use serde_json::Value;

/// `--output`: a table for people or the api's JSON for scripts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Format {
    #[default]
    Table,
    Json,
}

/// A column: its heading and how a row's cell is read from the item.
pub struct Column {
    pub heading: &'static str,
    pub cell: fn(&Value) -> String,
}

/// Whether stdout gets colour: a terminal, and no `NO_COLOR` (https://no-color.org).
pub fn colour() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Prints a line on stdout. A closed stdout (`| head`) ends the output, not the command.
pub fn out(line: std::fmt::Arguments<'_>) {
    let _ = writeln!(std::io::stdout().lock(), "{line}");
}

/// Prints text on stdout as it is; a closed stdout is no error.
pub fn write_out(text: &str) {
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
}

/// A status word, coloured by what it means when colour is on.
pub fn status(status: &str, colour: bool) -> String {
    if !colour {
        return status.to_owned();
    }
    let code = match status {
        "completed" | "delivered" => "32",
        "failed" | "error" | "timeout" => "31",
        "cancelled" => "33",
        "running" | "queued" | "pending" => "36",
        _ => return status.to_owned(),
    };
    format!("\x1b[{code}m{status}\x1b[0m")
}

/// Prints `items` as `format` says: the JSON as the api sent it, or a table of `columns`.
pub fn print(items: &Value, columns: &[Column], format: Format) {
    if format == Format::Json {
        out(format_args!(
            "{}",
            serde_json::to_string_pretty(items).unwrap_or_default()
        ));
        return;
    }
    let rows: Vec<Vec<String>> = items
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|item| columns.iter().map(|column| (column.cell)(item)).collect())
                .collect()
        })
        .unwrap_or_default();
    write_out(&render(columns, &rows, colour()));
}

/// The table's text; widths count characters, not the colour codes around a status.
fn render(columns: &[Column], rows: &[Vec<String>], colour: bool) -> String {
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(index, column)| {
            rows.iter()
                .map(|row| row[index].chars().count())
                .chain([column.heading.len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: Vec<String>| {
        let mut text = String::new();
        for (index, cell) in cells.iter().enumerate() {
            let last = index + 1 == cells.len();
            let pad = widths[index].saturating_sub(cell.chars().count());
            let shown = if columns[index].heading == "STATUS" {
                status(cell, colour)
            } else {
                cell.clone()
            };
            text.push_str(&shown);
            if !last {
                text.push_str(&" ".repeat(pad + 2));
            }
        }
        text.push('\n');
        text
    };
    let mut text = line(columns.iter().map(|c| c.heading.to_owned()).collect());
    for row in rows {
        text.push_str(&line(row.clone()));
    }
    text
}

/// A field as a cell: strings bare, null as `-`, anything else as JSON.
pub fn field(item: &Value, name: &str) -> String {
    match &item[name] {
        Value::Null => "-".into(),
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// A timestamp as a cell, to the second.
pub fn time(item: &Value, name: &str) -> String {
    item[name]
        .as_str()
        .and_then(|text| chrono::DateTime::parse_from_rfc3339(text).ok())
        .map(|at| at.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|| "-".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_table_aligns_its_columns_and_colours_only_the_status_when_asked() {
        let columns = [
            Column {
                heading: "ID",
                cell: |item| field(item, "id"),
            },
            Column {
                heading: "STATUS",
                cell: |item| field(item, "status"),
            },
            Column {
                heading: "EXIT",
                cell: |item| field(item, "exit_code"),
            },
        ];
        let rows = vec![
            vec!["a".into(), "completed".into(), "0".into()],
            vec!["bbbb".into(), "failed".into(), "-".into()],
        ];
        assert_eq!(
            render(&columns, &rows, false),
            "ID    STATUS     EXIT\na     completed  0\nbbbb  failed     -\n"
        );
        let coloured = render(&columns, &rows, true);
        assert!(coloured.contains("\x1b[32mcompleted\x1b[0m  0"));
        assert_eq!(field(&json!({"exit_code": null}), "exit_code"), "-");
    }
}
