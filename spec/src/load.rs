//! Reading a spec from YAML: syntax and type errors carry the field path (from
//! `serde_path_to_error`), then [`StatefulApplication::validate`] checks the rest.

use std::path::{Path, PathBuf};

use crate::{StatefulApplication, ValidationErrors};

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{origin}: {path}: {reason}")]
    Parse {
        origin: String,
        path: String,
        reason: String,
    },
    #[error("{origin}: invalid application:\n{errors}")]
    Invalid { origin: String, errors: ValidationErrors },
    /// A StateFun module that cannot be imported (the error names document and field).
    #[error(transparent)]
    Module(#[from] crate::module_yaml::ImportError),
}

/// Reads and validates an application file — or imports a StateFun `module.yaml`
/// (`crate::module_yaml`), which runs as the equivalent application.
pub fn load_file(path: &Path) -> Result<StatefulApplication, LoadError> {
    let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let origin = path.display().to_string();
    if crate::module_yaml::is_module(&text) {
        let name = module_name(path);
        return Ok(crate::module_yaml::import(&text, &origin, &name)?.app);
    }
    from_yaml_str(&text, &origin)
}

/// The application name of a StateFun module file: its directory's name (a module names no
/// application; `spindle import --name` chooses another).
pub fn module_name(path: &Path) -> String {
    let dir = std::fs::canonicalize(path).ok().and_then(|p| {
        p.parent()
            .and_then(|d| d.file_name())
            .map(|n| n.to_string_lossy().into_owned())
    });
    crate::module_yaml::name_from_dir(&dir.unwrap_or_default())
}

/// Parses and validates YAML; `origin` names the source in errors (a file path, say).
pub fn from_yaml_str(text: &str, origin: &str) -> Result<StatefulApplication, LoadError> {
    let de = serde_yaml::Deserializer::from_str(text);
    let app: StatefulApplication = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        // serde_yaml prefixes its message with its own (shorter) view of the path; drop it so
        // the path is said once. Its " at line L column C" suffix stays: it helps.
        let mut reason = inner.to_string();
        if let Some((prefix, rest)) = reason.split_once(": ")
            && !prefix.contains(' ')
            && path.starts_with(prefix)
        {
            reason = rest.to_string();
        }
        LoadError::Parse {
            origin: origin.to_string(),
            path: if path == "." { "(document)".into() } else { path },
            reason,
        }
    })?;
    app.validate().map_err(|errors| LoadError::Invalid {
        origin: origin.to_string(),
        errors,
    })?;
    Ok(app)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
apiVersion: spindle.dev/v1alpha1
kind: StatefulApplication
metadata:
  name: greeter
spec:
  functions:
    - typename: example/*
      endpoint: http://functions:8000/{function.name}
      local:
        command: ["./greeter"]
  ingresses:
    - name: web
      http: {}
  egresses:
    - typename: example/greets
      file:
        path: out/greets.jsonl
"#;

    fn err_lines(text: &str) -> String {
        from_yaml_str(text, "app.yaml").unwrap_err().to_string()
    }

    #[test]
    fn loads_with_defaults() {
        let app = from_yaml_str(GOOD, "app.yaml").unwrap();
        assert_eq!(app.spec.key_groups, 128);
        assert_eq!(app.spec.workers, 1);
        let f = &app.spec.functions[0];
        assert_eq!((f.max_batch_size, f.max_in_flight), (100, 64));
        assert_eq!(f.call_timeout, None, "retried for as long as it takes unless set");
        assert_eq!(app.spec.ingresses[0].http.as_ref().unwrap().port, 8090);
        assert_eq!(app.spec.checkpoint.interval.to_string(), "1s");
    }

    #[test]
    fn memory_bounds_have_defaults_and_a_floor() {
        let app = from_yaml_str(GOOD, "app.yaml").unwrap();
        assert_eq!(app.spec.memory.held_egress_bytes, 256 << 20);
        assert_eq!(app.spec.memory.peer_queue_bytes, 64 << 20);
        let text = GOOD.replace("  ingresses:", "  memory: {sinkQueueBytes: 100}\n  ingresses:");
        let msg = err_lines(&text);
        assert!(
            msg.contains("spec.memory.sinkQueueBytes: must be at least 65536"),
            "{msg}"
        );
    }

    #[test]
    fn names_the_field_of_a_bad_endpoint() {
        let text = GOOD.replace(
            "  ingresses:",
            "    - typename: other/*\n      endpoint: functions:8000/x\n  ingresses:",
        );
        let msg = err_lines(&text);
        assert!(
            msg.contains("spec.functions[1].endpoint: `functions:8000/x` is not an absolute URL"),
            "{msg}"
        );
        let text = GOOD.replace("{function.name}", "{function}");
        let msg = err_lines(&text);
        assert!(
            msg.contains("spec.functions[0].endpoint: unknown placeholder `{function}`"),
            "{msg}"
        );
    }

    #[test]
    fn names_the_field_of_a_type_error() {
        let text = GOOD.replace("name: greeter\n", "name: greeter\nspec2: 1\n");
        let msg = err_lines(&text);
        assert!(msg.contains("unknown field `spec2`"), "{msg}");
        let text = GOOD.replace("      http: {}", "      http: {port: 70000}");
        let msg = err_lines(&text);
        assert!(msg.contains("spec.ingresses[0].http.port:"), "{msg}");
        let text = GOOD.replace("path: out/greets.jsonl", "path: out/greets.jsonl\n      http: {url: x}");
        let msg = err_lines(&text);
        assert!(msg.contains("spec.egresses[0]: exactly one egress kind"), "{msg}");
        assert!(
            msg.contains("spec.egresses[0].http.url: `x` is not an absolute URL"),
            "{msg}"
        );
    }

    #[test]
    fn reports_every_problem() {
        let text = GOOD
            .replace("name: greeter", "name: Greeter")
            .replace("spec:\n", "spec:\n  workers: 200\n  checkpoint: {interval: 5x}\n");
        let msg = err_lines(&text);
        assert!(
            msg.contains("spec.checkpoint.interval: `5x` is not a duration"),
            "{msg}"
        );
        let text = GOOD
            .replace("name: greeter", "name: Greeter")
            .replace("spec:\n", "spec:\n  workers: 200\n");
        let msg = err_lines(&text);
        assert!(
            msg.contains("metadata.name: `Greeter` is not a DNS-1123 label"),
            "{msg}"
        );
        assert!(
            msg.contains("spec.workers: 200 workers exceed the 128 key groups"),
            "{msg}"
        );
    }

    #[test]
    fn min_pause_needs_checkpoints_and_at_most_the_interval() {
        let with = |c: &str| GOOD.replace("spec:\n", &format!("spec:\n  checkpoint: {c}\n"));
        assert!(from_yaml_str(&with("{interval: 1s, minPause: 2ms}"), "app.yaml").is_ok());
        let msg = err_lines(&with("{interval: 1s, minPause: 2s}"));
        assert!(
            msg.contains("spec.checkpoint.minPause: 2s is longer than `interval` (1s)"),
            "{msg}"
        );
        let msg = err_lines(&with("{interval: 0s, minPause: 2ms}"));
        assert!(msg.contains("spec.checkpoint.minPause: needs checkpoints"), "{msg}");
    }

    #[test]
    fn rejects_bad_typenames() {
        let msg = err_lines(&GOOD.replace("typename: example/*", "typename: example"));
        assert!(
            msg.contains("spec.functions[0].typename: `example` is not a typename"),
            "{msg}"
        );
        let msg = err_lines(&GOOD.replace("typename: example/*", "typename: ex*/a"));
        assert!(msg.contains("spec.functions[0].typename:"), "{msg}");
    }

    #[test]
    fn a_wildcard_entry_lists_valid_distinct_names_only() {
        let with = |types: &str| GOOD.replace("      local:\n", &format!("      types: {types}\n      local:\n"));
        assert!(from_yaml_str(&with("[greeter, person]"), "app.yaml").is_ok());
        let msg = err_lines(&with("[greeter, 'a/b', greeter, '*']"));
        assert!(
            msg.contains("spec.functions[0].types[1]: `a/b` is not a type name in `example`"),
            "{msg}"
        );
        assert!(
            msg.contains("spec.functions[0].types[2]: `greeter` is listed twice"),
            "{msg}"
        );
        assert!(
            msg.contains("spec.functions[0].types[3]: `*` is not a type name"),
            "{msg}"
        );
        let one = with("[greeter]").replace("typename: example/*", "typename: example/greeter");
        assert!(
            err_lines(&one).contains("spec.functions[0].types: only a `namespace/*` entry lists its types"),
            "{}",
            err_lines(&one)
        );
    }
}
