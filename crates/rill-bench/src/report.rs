//! The result table every scenario prints at the end (`--json` prints the report instead).

use std::fmt;

/// Rows of (what, value) with an optional heading, printed as two aligned columns.
#[derive(Debug, Default)]
pub struct Table {
    title: String,
    rows: Vec<(String, String)>,
}

impl Table {
    /// An empty table headed `title`.
    pub fn new(title: impl Into<String>) -> Self {
        Table {
            title: title.into(),
            rows: Vec::new(),
        }
    }

    /// Adds a row.
    pub fn row(&mut self, name: impl Into<String>, value: impl fmt::Display) -> &mut Self {
        self.rows.push((name.into(), value.to_string()));
        self
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let width = self
            .rows
            .iter()
            .map(|(name, _)| name.len())
            .max()
            .unwrap_or(0);
        writeln!(f, "{}", self.title)?;
        for (name, value) in &self.rows {
            writeln!(f, "  {name:<width$}  {value}")?;
        }
        Ok(())
    }
}

/// Bytes as KiB/MiB text.
pub(crate) fn bytes(value: f64) -> String {
    if value.abs() >= 1024.0 * 1024.0 {
        format!("{:.1} MiB", value / (1024.0 * 1024.0))
    } else if value.abs() >= 1024.0 {
        format!("{:.2} KiB", value / 1024.0)
    } else {
        format!("{value:.0} B")
    }
}

/// Microseconds as ms text.
pub(crate) fn millis(micros: u64) -> String {
    format!("{:.2} ms", micros as f64 / 1000.0)
}
