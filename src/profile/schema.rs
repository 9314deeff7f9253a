//! The JSON Schema of the profile file format, derived from the raw types (`raw.rs`,
//! `secrets.rs`) so it cannot drift from what `taskcell check` accepts.
//! `scripts/gen-docs.sh` writes it to `docs/profile.schema.json` for editors (e.g. Taplo
//! or Even Better TOML: `#:schema ./profile.schema.json` or a schema association).

use schemars::generate::SchemaSettings;
use serde_json::{json, Value};

use super::raw::RawProfile;

/// The schema as JSON (draft 2020-12). TOML has no null, so optional keys are only "not
/// required", never "null".
pub fn json_schema() -> Value {
    let generator = SchemaSettings::draft2020_12().into_generator();
    let mut schema = generator.into_root_schema_for::<RawProfile>().to_value();
    drop_null(&mut schema);
    if let Some(obj) = schema.as_object_mut() {
        obj.insert("title".into(), json!("taskcell profile"));
        obj.insert(
            "description".into(),
            json!("A taskcell profile (TOML): what a cell may read, write, reach and hold. Reference: docs/profile.md."),
        );
    }
    // Secret names are `[A-Z_][A-Z0-9_]*` (profile::secrets::valid_name).
    if let Some(secrets) = schema.pointer_mut("/properties/secrets") {
        if let Some(obj) = secrets.as_object_mut() {
            obj.insert(
                "propertyNames".into(),
                json!({ "pattern": "^[A-Z_][A-Z0-9_]*$" }),
            );
        }
    }
    schema
}

/// Remove `null` from every `type` list and `anyOf` (schemars' rendering of `Option<T>`).
fn drop_null(v: &mut Value) {
    match v {
        Value::Object(obj) => {
            if let Some(Value::Array(types)) = obj.get_mut("type") {
                types.retain(|t| t != "null");
                if types.len() == 1 {
                    let only = types.remove(0);
                    obj.insert("type".into(), only);
                }
            }
            if let Some(Value::Array(any)) = obj.get_mut("anyOf") {
                any.retain(|s| s != &json!({ "type": "null" }));
                if any.len() == 1 {
                    let only = any.remove(0);
                    obj.remove("anyOf");
                    if let Value::Object(inner) = only {
                        for (k, val) in inner {
                            obj.entry(k).or_insert(val);
                        }
                    }
                }
            }
            for (_, child) in obj.iter_mut() {
                drop_null(child);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(drop_null),
        _ => {}
    }
}
