//! The field reference (`docs/spec.md`), rendered from the JSON schema so that it says what
//! the code accepts. `SPINDLE_BLESS=1 cargo test -p spindle-spec` rewrites the committed file.

use serde_json::{Map, Value};

use crate::StatefulApplication;

/// The JSON schema of a `StatefulApplication` document.
pub fn schema() -> Value {
    serde_json::to_value(schemars::schema_for!(StatefulApplication)).expect("schemas serialize")
}

/// Markdown: one table per object type, every field with its type, default and description.
pub fn render_markdown() -> String {
    let schema = schema();
    let defs = schema["$defs"].as_object().cloned().unwrap_or_default();
    let mut out = String::from(
        "# `StatefulApplication` field reference\n\n\
         Generated from the Rust types in `spec/src/types.rs` \
         (`SPINDLE_BLESS=1 cargo test -p spindle-spec` refreshes it). \
         Durations are written `500ms`, `10s`, `1m`, `2h`.\n",
    );
    render_object(&mut out, "StatefulApplication", &schema, &defs);
    for (name, def) in &defs {
        if def.get("properties").is_some() {
            render_object(&mut out, name, def, &defs);
        }
    }
    out
}

fn render_object(out: &mut String, name: &str, def: &Value, defs: &Map<String, Value>) {
    out.push_str(&format!("\n## {name}\n\n"));
    if let Some(d) = def.get("description").and_then(Value::as_str) {
        out.push_str(&format!("{}\n\n", one_line(d)));
    }
    out.push_str("| field | type | default | description |\n|---|---|---|---|\n");
    let required: Vec<&str> = def["required"]
        .as_array()
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    for (field, prop) in def["properties"].as_object().into_iter().flatten() {
        let default = match prop.get("default") {
            Some(v) => format!("`{v}`"),
            None if required.contains(&field.as_str()) => "required".into(),
            None => String::new(),
        };
        let desc = prop.get("description").and_then(Value::as_str).unwrap_or("");
        out.push_str(&format!(
            "| `{field}` | {} | {default} | {} |\n",
            type_of(prop, defs),
            one_line(desc).replace('|', "\\|")
        ));
    }
}

fn type_of(prop: &Value, defs: &Map<String, Value>) -> String {
    if let Some(r) = prop.get("$ref").and_then(Value::as_str) {
        let name = r.rsplit('/').next().unwrap_or(r);
        return match defs.get(name) {
            Some(d) if d.get("properties").is_some() => format!("[{name}](#{})", name.to_lowercase()),
            Some(d) => type_of(d, defs),
            None => name.to_string(),
        };
    }
    if let Some(variants) = prop.get("oneOf").and_then(Value::as_array) {
        let names: Vec<String> = variants
            .iter()
            .filter_map(|v| v["const"].as_str())
            .map(|c| format!("`{c}`"))
            .collect();
        return format!("one of {}", names.join(", "));
    }
    if let Some(any) = prop.get("anyOf").and_then(Value::as_array) {
        let types: Vec<String> = any
            .iter()
            .filter(|s| s.get("type") != Some(&Value::from("null")))
            .map(|s| type_of(s, defs))
            .collect();
        return types.join(" or ");
    }
    match &prop["type"] {
        Value::String(t) if t == "array" => format!("list of {}", type_of(&prop["items"], defs)),
        Value::String(t) if t == "object" => "map of string".into(),
        Value::String(t) if t == "string" && prop.get("pattern").is_some() => "duration".into(),
        Value::String(t) => t.clone(),
        Value::Array(ts) => ts
            .iter()
            .filter_map(Value::as_str)
            .filter(|t| *t != "null")
            .collect::<Vec<_>>()
            .join(" or "),
        _ => "any".into(),
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn committed_reference_matches_the_code() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/spec.md");
        let want = render_markdown();
        if std::env::var_os("SPINDLE_BLESS").is_some() {
            std::fs::write(&path, &want).unwrap();
        }
        let have = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            have == want,
            "docs/spec.md is out of date with spec/src/types.rs: run `SPINDLE_BLESS=1 cargo test -p spindle-spec`"
        );
    }

    #[test]
    fn every_field_is_documented() {
        let doc = render_markdown();
        for line in doc.lines().filter(|l| l.starts_with("| `")) {
            assert!(!line.ends_with("|  |"), "undocumented field: {line}");
        }
    }
}
