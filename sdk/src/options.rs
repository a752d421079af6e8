//! Option parsing against a plugin's schema, shared by the host (`--opt k=v`) and plugins
//! (`configure`), so both reject the same mistakes with the same words.

use serde_json::{Map, Value};

use crate::info::{OptionKind, OptionSpec};

/// Validated option values: every option in the schema, defaults filled in.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    values: Map<String, Value>,
}

impl Options {
    /// Validates a JSON object against `schema`, filling in defaults.
    ///
    /// # Errors
    /// An unknown option (naming the known ones) or a value of the wrong type (naming the
    /// expected type).
    pub fn from_json(schema: &[OptionSpec], given: &Map<String, Value>) -> Result<Options, String> {
        let mut values = Map::new();
        for (name, value) in given {
            let spec = find(schema, name)?;
            values.insert(name.clone(), check(spec, value.clone())?);
        }
        for spec in schema {
            values.entry(spec.name.clone()).or_insert_with(|| spec.default.clone());
        }
        Ok(Options { values })
    }

    /// Parses JSON text (an object) against `schema`; empty text means no options.
    ///
    /// # Errors
    /// As [`Options::from_json`], or when the text is not a JSON object.
    pub fn parse(schema: &[OptionSpec], text: &str) -> Result<Options, String> {
        if text.trim().is_empty() {
            return Options::from_json(schema, &Map::new());
        }
        match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(map)) => Options::from_json(schema, &map),
            Ok(other) => Err(format!("options must be a JSON object, got {other}")),
            Err(e) => Err(format!("options are not valid JSON: {e}")),
        }
    }

    /// Parses `name=value` assignments (the CLI's `--opt`) into a typed JSON object.
    ///
    /// # Errors
    /// A missing `=`, an unknown option, or a value that does not parse as the option's type.
    pub fn from_assignments<S: AsRef<str>>(
        schema: &[OptionSpec],
        assignments: &[S],
    ) -> Result<Map<String, Value>, String> {
        let mut map = Map::new();
        for a in assignments {
            let a = a.as_ref();
            let (name, raw) = a.split_once('=').ok_or_else(|| format!("option '{a}' must look like name=value"))?;
            let spec = find(schema, name.trim())?;
            let raw = raw.trim();
            let value = match &spec.kind {
                OptionKind::Int => raw.parse::<i64>().map(Value::from).map_err(|_| ()),
                OptionKind::Float => raw.parse::<f64>().ok().filter(|v| v.is_finite()).map(Value::from).ok_or(()),
                OptionKind::Bool => raw.parse::<bool>().map(Value::from).map_err(|_| ()),
                OptionKind::String | OptionKind::Choice { .. } => Ok(Value::from(raw)),
            }
            .map_err(|()| format!("option '{}' expects {}, got '{raw}'", spec.name, describe(&spec.kind)))?;
            map.insert(spec.name.clone(), check(spec, value)?);
        }
        Ok(map)
    }

    /// The whole set as a JSON object.
    pub fn to_json(&self) -> Value {
        Value::Object(self.values.clone())
    }

    /// A float option (ints are accepted).
    ///
    /// # Panics
    /// When `name` is not a float option of the schema: a bug in the plugin.
    pub fn float(&self, name: &str) -> f64 {
        self.get(name).as_f64().unwrap_or_else(|| panic!("option '{name}' is not a number"))
    }

    /// An integer option.
    ///
    /// # Panics
    /// When `name` is not an int option of the schema: a bug in the plugin.
    pub fn int(&self, name: &str) -> i64 {
        self.get(name).as_i64().unwrap_or_else(|| panic!("option '{name}' is not an integer"))
    }

    /// A boolean option.
    ///
    /// # Panics
    /// When `name` is not a bool option of the schema: a bug in the plugin.
    pub fn bool(&self, name: &str) -> bool {
        self.get(name).as_bool().unwrap_or_else(|| panic!("option '{name}' is not a bool"))
    }

    /// A string or choice option.
    ///
    /// # Panics
    /// When `name` is not a string option of the schema: a bug in the plugin.
    pub fn str(&self, name: &str) -> &str {
        self.get(name).as_str().unwrap_or_else(|| panic!("option '{name}' is not a string"))
    }

    fn get(&self, name: &str) -> &Value {
        self.values.get(name).unwrap_or_else(|| panic!("option '{name}' is not in the schema"))
    }
}

fn find<'s>(schema: &'s [OptionSpec], name: &str) -> Result<&'s OptionSpec, String> {
    schema.iter().find(|s| s.name == name).ok_or_else(|| {
        let known: Vec<&str> = schema.iter().map(|s| s.name.as_str()).collect();
        if known.is_empty() {
            format!("unknown option '{name}': this pruner takes no options")
        } else {
            format!("unknown option '{name}' (known: {})", known.join(", "))
        }
    })
}

fn describe(kind: &OptionKind) -> String {
    match kind {
        OptionKind::Int => "an integer".into(),
        OptionKind::Float => "a finite number".into(),
        OptionKind::Bool => "true or false".into(),
        OptionKind::String => "a string".into(),
        OptionKind::Choice { values } => format!("one of {}", values.join(", ")),
    }
}

fn check(spec: &OptionSpec, value: Value) -> Result<Value, String> {
    let ok = match (&spec.kind, &value) {
        (OptionKind::Int, Value::Number(n)) => n.is_i64() || n.is_u64(),
        (OptionKind::Float, Value::Number(_)) => true,
        (OptionKind::Bool, Value::Bool(_)) => true,
        (OptionKind::String, Value::String(_)) => true,
        (OptionKind::Choice { values }, Value::String(s)) => values.contains(s),
        _ => false,
    };
    if ok { Ok(value) } else { Err(format!("option '{}' expects {}, got {value}", spec.name, describe(&spec.kind))) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema() -> Vec<OptionSpec> {
        vec![
            OptionSpec::float("damp", 0.01, "damping"),
            OptionSpec::int("blocks", 4, "blocks"),
            OptionSpec::choice("mode", &["a", "b"], "a", "mode"),
        ]
    }

    #[test]
    fn defaults_are_filled_and_assignments_typed() {
        let map = Options::from_assignments(&schema(), &["blocks=8", "mode=b"]).unwrap();
        let opts = Options::from_json(&schema(), &map).unwrap();
        assert_eq!(opts.int("blocks"), 8);
        assert_eq!(opts.str("mode"), "b");
        assert_eq!(opts.float("damp"), 0.01);
    }

    #[test]
    fn unknown_and_mistyped_options_are_named() {
        let err = Options::from_assignments(&schema(), &["nope=1"]).unwrap_err();
        assert!(err.contains("unknown option 'nope'") && err.contains("damp, blocks, mode"), "{err}");
        let err = Options::from_assignments(&schema(), &["blocks=2.5"]).unwrap_err();
        assert!(err.contains("'blocks' expects an integer"), "{err}");
        let err = Options::from_assignments(&schema(), &["mode=c"]).unwrap_err();
        assert!(err.contains("one of a, b"), "{err}");
        let err = Options::parse(&schema(), r#"{"damp": "x"}"#).unwrap_err();
        assert!(err.contains("'damp' expects a finite number"), "{err}");
        for raw in ["damp=NaN", "damp=inf", "damp=-inf"] {
            let err = Options::from_assignments(&schema(), &[raw]).unwrap_err();
            assert!(err.contains("'damp' expects a finite number"), "{raw}: {err}");
        }
    }
}
