//! The environment reader: one call per variable, every problem recorded, nothing stops early.
//!
//! Names, flags and defaults live once, in the [`Args`] attributes; the reader looks a field's
//! variable name and default up in clap's own description of them, so a problem names the
//! variable the operator set and `--help` prints the same default the reader applies.

use std::collections::HashMap;

use clap::CommandFactory;

use super::{Args, ConfigError};

/// Reads [`Args`] fields through their parsers and keeps every problem.
pub struct Reader {
    /// Field id → (variable name, clap's default).
    vars: HashMap<String, (String, Option<String>)>,
    problems: Vec<ConfigError>,
    /// `VARIABLE=value` of every variable read, for the start-up log.
    effective: Vec<(String, String)>,
}

/// Read the field `$args.$field` through `$parse`; a problem is recorded and the type's default
/// stands in, so reading goes on (the configuration is refused at the end).
macro_rules! read {
    ($reader:expr, $args:ident . $field:ident, $parse:expr) => {
        $reader
            .read(stringify!($field), &$args.$field, $parse)
            .unwrap_or_default()
    };
}
pub(crate) use read;

/// Like [`read!`] for a variable without a default: `None` when unset.
macro_rules! read_optional {
    ($reader:expr, $args:ident . $field:ident, $parse:expr) => {
        $reader.read_optional(stringify!($field), &$args.$field, $parse)
    };
}
pub(crate) use read_optional;

// === impl Reader ===

impl Reader {
    pub fn new() -> Self {
        let command = Args::command();
        let vars = command
            .get_arguments()
            .filter_map(|arg| {
                let env = arg.get_env()?.to_string_lossy().into_owned();
                let default = arg
                    .get_default_values()
                    .first()
                    .map(|d| d.to_string_lossy().into_owned());
                Some((arg.get_id().to_string(), (env, default)))
            })
            .collect();
        Reader {
            vars,
            problems: Vec::new(),
            effective: Vec::new(),
        }
    }

    /// The variable name of a field.
    pub fn var(&self, field: &str) -> String {
        self.vars
            .get(field)
            .map_or_else(|| field.to_ascii_uppercase(), |(env, _)| env.clone())
    }

    /// The text a field has: its value unless blank, else clap's default.
    fn text(&self, field: &str, value: &Option<String>) -> Option<String> {
        value
            .as_deref()
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
            .or_else(|| self.vars.get(field).and_then(|(_, d)| d.clone()))
    }

    /// A variable with a default, or a required one (its absence is a problem).
    pub fn read<T>(
        &mut self,
        field: &str,
        value: &Option<String>,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        match self.read_optional(field, value, parse) {
            Some(Some(v)) => Some(v),
            Some(None) => {
                self.problem(field, "required");
                None
            }
            None => None,
        }
    }

    /// A variable without a default: `Some(None)` when unset, `None` after a problem.
    pub fn read_optional<T>(
        &mut self,
        field: &str,
        value: &Option<String>,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<Option<T>> {
        let Some(text) = self.text(field, value) else {
            return Some(None);
        };
        match parse(&text) {
            Ok(v) => {
                self.effective
                    .push((self.var(field), redact_userinfo(&text)));
                Some(Some(v))
            }
            Err(problem) => {
                self.problem(field, problem);
                None
            }
        }
    }

    /// Record a problem about a field (checks across fields call this too).
    pub fn problem(&mut self, field: &str, problem: impl Into<String>) {
        self.problems.push(ConfigError {
            variable: self.var(field),
            problem: problem.into(),
        });
    }

    pub fn has_problems(&self) -> bool {
        !self.problems.is_empty()
    }

    /// Every problem, or the `VARIABLE=value` summary of what was read.
    pub fn finish(self) -> Result<String, Vec<ConfigError>> {
        if !self.problems.is_empty() {
            return Err(self.problems);
        }
        let summary: Vec<String> = self
            .effective
            .iter()
            .map(|(var, value)| format!("{var}={value}"))
            .collect();
        Ok(summary.join(" "))
    }
}

/// A URL's user and password never reach a log line.
fn redact_userinfo(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut url) if !url.username().is_empty() || url.password().is_some() => {
            let _ = url.set_username("");
            let _ = url.set_password(None);
            url.to_string()
        }
        _ => raw.to_owned(),
    }
}
