//! Device commands (seed 003): the catalog of commands an admin may send, each with a schema
//! for its `params`, and the validation the server runs before anything reaches a device.
//!
//! The schema language is a small, documented subset of JSON Schema, enough for flat command
//! parameters: `{"type": "object", "properties": {NAME: {"type": T}}, "required": [NAME…],
//! "additionalProperties": bool}` with `T` one of `string`, `number`, `integer`, `boolean`,
//! `object`, `array`. Built in: `vlc:play`, `vlc:pause`, `vlc:stop`, `vlc:fullscreen`,
//! `vlc:snapshot`; more come from configuration (`--commands-file`).

use crate::prelude::*;

use alloc::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The type of one parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ParamType {
    String,
    Number,
    Integer,
    Boolean,
    Object,
    Array,
}

impl ParamType {
    fn accepts(self, v: &Value) -> bool {
        match self {
            ParamType::String => v.is_string(),
            ParamType::Number => v.is_number(),
            ParamType::Integer => {
                v.is_i64() || v.is_u64() || v.as_f64().is_some_and(|f| f.is_finite() && libm::trunc(f) == f)
            }
            ParamType::Boolean => v.is_boolean(),
            ParamType::Object => v.is_object(),
            ParamType::Array => v.is_array(),
        }
    }
}

/// One parameter's schema.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParamSchema {
    #[serde(rename = "type")]
    pub kind: ParamType,
}

/// The schema of a command's `params` object.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ParamsSchema {
    #[serde(default)]
    pub properties: BTreeMap<String, ParamSchema>,
    #[serde(default)]
    pub required: Vec<String>,
    /// Whether params not listed in `properties` are allowed (default: yes).
    #[serde(default = "yes")]
    pub additional_properties: bool,
}

fn yes() -> bool {
    true
}

/// Why a command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("unknown command {0:?}")]
    Unknown(String),
    #[error("params must be a JSON object")]
    NotAnObject,
    #[error("param {0:?} is required")]
    Missing(String),
    #[error("param {name:?} must be of type {expected:?}")]
    WrongType { name: String, expected: ParamType },
    #[error("param {0:?} is not accepted by this command")]
    Unexpected(String),
}

/// The commands admins may send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandCatalog {
    commands: BTreeMap<String, ParamsSchema>,
}

impl Default for CommandCatalog {
    fn default() -> Self {
        CommandCatalog::builtin()
    }
}

impl CommandCatalog {
    /// Seed 003's VLC commands.
    pub fn builtin() -> CommandCatalog {
        let p = |props: &[(&str, ParamType)]| ParamsSchema {
            properties: props.iter().map(|(n, t)| (n.to_string(), ParamSchema { kind: *t })).collect(),
            required: Vec::new(),
            additional_properties: true,
        };
        let mut commands = BTreeMap::new();
        commands.insert(
            "vlc:play".into(),
            p(&[("playlistId", ParamType::String), ("index", ParamType::Integer), ("url", ParamType::String)]),
        );
        commands.insert("vlc:pause".into(), p(&[]));
        commands.insert("vlc:stop".into(), p(&[]));
        commands.insert("vlc:fullscreen".into(), p(&[("enabled", ParamType::Boolean)]));
        commands.insert("vlc:snapshot".into(), p(&[("format", ParamType::String)]));
        CommandCatalog { commands }
    }

    /// Adds (or replaces) commands, e.g. from a configuration file mapping names to schemas.
    pub fn extend(&mut self, extra: BTreeMap<String, ParamsSchema>) {
        self.commands.extend(extra);
    }

    /// Command names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.commands.keys().map(String::as_str)
    }

    /// The commands as JSON Schema: one alternative per command, `command` its name and
    /// `params` its parameters (what [`validate`](Self::validate) accepts), for the REST API's
    /// OpenAPI document.
    pub fn json_schema(&self) -> Value {
        let one = |(name, schema): (&String, &ParamsSchema)| {
            let props: Map<String, Value> =
                schema.properties.iter().map(|(p, s)| (p.clone(), serde_json::json!({ "type": s.kind }))).collect();
            serde_json::json!({ "properties": {
                "command": { "const": name },
                "params": { "type": "object", "properties": props, "required": schema.required,
                            "additionalProperties": schema.additional_properties },
            } })
        };
        serde_json::json!({ "oneOf": self.commands.iter().map(one).collect::<Vec<_>>() })
    }

    /// Checks `params` (absent or `null` counts as `{}`) against the command's schema.
    pub fn validate(&self, command: &str, params: &Value) -> Result<(), CommandError> {
        let schema =
            self.commands.get(command).ok_or_else(|| CommandError::Unknown(command.chars().take(64).collect()))?;
        let empty = Map::new();
        let params = match params {
            Value::Null => &empty,
            Value::Object(m) => m,
            _ => return Err(CommandError::NotAnObject),
        };
        for name in &schema.required {
            if !params.contains_key(name) {
                return Err(CommandError::Missing(name.clone()));
            }
        }
        for (name, v) in params {
            match schema.properties.get(name) {
                Some(p) if !p.kind.accepts(v) => {
                    return Err(CommandError::WrongType { name: name.clone(), expected: p.kind });
                }
                Some(_) => {}
                None if !schema.additional_properties => return Err(CommandError::Unexpected(name.clone())),
                None => {}
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    #[test]
    fn builtins_validate_their_params() {
        let c = CommandCatalog::builtin();
        assert_eq!(c.validate("vlc:pause", &Value::Null), Ok(()));
        assert_eq!(c.validate("vlc:play", &json!({"playlistId": "p1", "index": 3})), Ok(()));
        assert!(matches!(c.validate("vlc:play", &json!({"index": "3"})), Err(CommandError::WrongType { .. })));
        assert_eq!(c.validate("vlc:explode", &json!({})), Err(CommandError::Unknown("vlc:explode".into())));
        assert_eq!(c.validate("vlc:stop", &json!([1])), Err(CommandError::NotAnObject));
    }

    #[test]
    fn configured_commands_use_required_and_closed_schemas() {
        let mut c = CommandCatalog::builtin();
        let extra: BTreeMap<String, ParamsSchema> = serde_json::from_value(json!({
            "app:volume": {"properties": {"level": {"type": "integer"}}, "required": ["level"], "additionalProperties": false}
        }))
        .expect("schema");
        c.extend(extra);
        assert_eq!(c.validate("app:volume", &json!({"level": 5})), Ok(()));
        assert_eq!(c.validate("app:volume", &json!({})), Err(CommandError::Missing("level".into())));
        assert_eq!(c.validate("app:volume", &json!({"level": 5, "x": 1})), Err(CommandError::Unexpected("x".into())));
    }
}
