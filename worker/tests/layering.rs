//! The worker's modules import one another without a circle: among the top-level modules,
//! and among the submodules of every folder module. Read from the sources (`use` trees and
//! inline `crate::`/`super::` paths, test code excluded), resolved against the module tree on
//! disk; a child using its parent (or a parent its children) is not an edge. On failure the
//! test names the circle; it always prints the top-level graph.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type ModPath = Vec<String>;

/// Every source file of the crate with its module path (`lib.rs` is `[]`).
fn files(src: &Path) -> Vec<(ModPath, PathBuf)> {
    let mut out = Vec::new();
    let mut stack = vec![(src.to_path_buf(), Vec::new())];
    while let Some((dir, prefix)) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_stem().unwrap().to_string_lossy().to_string();
            if path.is_dir() {
                let mut p: ModPath = prefix.clone();
                p.push(name);
                stack.push((path, p));
            } else if path.extension().is_some_and(|e| e == "rs") {
                let module = match (prefix.is_empty(), name.as_str()) {
                    (true, "lib" | "main") => Vec::new(),
                    (_, "mod") => prefix.clone(),
                    _ => {
                        let mut p = prefix.clone();
                        p.push(name);
                        p
                    }
                };
                out.push((module, path));
            }
        }
    }
    out
}

/// The code of a file without comments and without its inline test module.
fn code(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = String::new();
    for (i, line) in lines.iter().enumerate() {
        let t = line.trim_start();
        if t.starts_with("#[cfg(test)]") {
            // Inline test modules come last in a file, by convention here.
            if lines
                .get(i + 1)
                .is_some_and(|l| l.trim_start().starts_with("mod tests {"))
            {
                break;
            }
            continue;
        }
        if t.starts_with("//") {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// Paths a file names: `crate::a::b`, `super::a`, `self::a`, expanding `use` trees.
fn paths(code: &str) -> Vec<Vec<String>> {
    let chars: Vec<char> = code.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let starts_ident = i == 0 || !(chars[i - 1].is_alphanumeric() || chars[i - 1] == '_' || chars[i - 1] == ':');
        if starts_ident {
            for root in ["crate", "super", "self"] {
                let r: Vec<char> = root.chars().collect();
                if chars[i..].starts_with(&r) && chars[i + r.len()..].starts_with(&[':', ':']) {
                    let (mut found, end) = tree(&chars, i + r.len() + 2);
                    for p in &mut found {
                        p.insert(0, root.to_string());
                    }
                    out.extend(found);
                    i = end;
                    break;
                }
            }
        }
        i += 1;
    }
    out
}

/// Parses `a::b::{c, d::e}` at `i`; returns the expanded paths and where it ended.
fn tree(chars: &[char], mut i: usize) -> (Vec<Vec<String>>, usize) {
    let mut prefix = Vec::new();
    loop {
        while i < chars.len() && chars[i].is_whitespace() {
            i += 1;
        }
        if i < chars.len() && chars[i] == '{' {
            i += 1;
            let mut all = Vec::new();
            loop {
                let (sub, end) = tree(chars, i);
                for mut s in sub {
                    let mut p = prefix.clone();
                    p.append(&mut s);
                    all.push(p);
                }
                i = end;
                while i < chars.len() && chars[i].is_whitespace() {
                    i += 1;
                }
                match chars.get(i) {
                    Some(',') => i += 1,
                    Some('}') => return (all, i + 1),
                    _ => return (all, i),
                }
                while i < chars.len() && chars[i].is_whitespace() {
                    i += 1;
                }
                if chars.get(i) == Some(&'}') {
                    return (all, i + 1);
                }
            }
        }
        let start = i;
        while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_' || chars[i] == '*') {
            i += 1;
        }
        if start == i {
            return (vec![prefix], i);
        }
        prefix.push(chars[start..i].iter().collect());
        if chars[i..].starts_with(&[':', ':']) {
            i += 2;
            continue;
        }
        return (vec![prefix], i);
    }
}

/// The longest module path `p` names, seen from `here`.
fn resolve(here: &ModPath, p: &[String], modules: &BTreeSet<ModPath>) -> ModPath {
    let mut base: ModPath = here.clone();
    let mut rest = p;
    match rest.first().map(String::as_str) {
        Some("crate") => {
            base.clear();
            rest = &rest[1..];
        }
        Some("self") => rest = &rest[1..],
        _ => {}
    }
    while rest.first().map(String::as_str) == Some("super") {
        base.pop();
        rest = &rest[1..];
    }
    for seg in rest {
        let mut next = base.clone();
        next.push(seg.clone());
        if !modules.contains(&next) {
            break;
        }
        base = next;
    }
    base
}

/// A circle in `graph`, if there is one.
fn circle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        n: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(n.to_string(), 1);
        stack.push(n.to_string());
        for m in graph.get(n).into_iter().flatten() {
            match state.get(m.as_str()).copied().unwrap_or(0) {
                1 => {
                    let from = stack.iter().position(|s| s == m).unwrap();
                    let mut c = stack[from..].to_vec();
                    c.push(m.clone());
                    return Some(c);
                }
                0 => {
                    if let Some(c) = visit(m, graph, state, stack) {
                        return Some(c);
                    }
                }
                _ => {}
            }
        }
        stack.pop();
        state.insert(n.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for n in graph.keys() {
        if state.get(n.as_str()).copied().unwrap_or(0) == 0
            && let Some(c) = visit(n, graph, &mut state, &mut Vec::new())
        {
            return Some(c);
        }
    }
    None
}

#[test]
fn the_worker_modules_import_each_other_without_a_circle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let files = files(&src);
    let modules: BTreeSet<ModPath> = files.iter().map(|(m, _)| m.clone()).collect();
    // Per parent module: sibling → siblings it uses.
    let mut graphs: BTreeMap<ModPath, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for (module, path) in &files {
        if module.last().is_some_and(|m| m == "tests") || module.is_empty() {
            continue;
        }
        let text = std::fs::read_to_string(path).unwrap();
        for p in paths(&code(&text)) {
            let target = resolve(module, &p, &modules);
            let k = module.iter().zip(&target).take_while(|(a, b)| a == b).count();
            if k < module.len() && k < target.len() {
                graphs
                    .entry(module[..k].to_vec())
                    .or_default()
                    .entry(module[k].clone())
                    .or_default()
                    .insert(target[k].clone());
            }
        }
    }
    let top = graphs.get(&Vec::new()).cloned().unwrap_or_default();
    println!("top-level module imports:");
    for (m, uses) in &top {
        println!("  {m} -> {}", uses.iter().cloned().collect::<Vec<_>>().join(", "));
    }
    let mut circles = Vec::new();
    for (parent, graph) in &graphs {
        if let Some(c) = circle(graph) {
            let at = if parent.is_empty() {
                "crate".to_string()
            } else {
                parent.join("::")
            };
            circles.push(format!("in {at}: {}", c.join(" -> ")));
        }
    }
    assert!(circles.is_empty(), "import circles:\n{}", circles.join("\n"));
    assert!(
        top.len() > 10,
        "the checker found too few modules to be working: {top:?}"
    );
}

#[test]
fn the_checker_sees_use_trees_and_inline_paths() {
    let found = paths("use crate::a::{b, c::{d, e}};\nfn f() { crate::x::y(); super::z::w(); }\n");
    let show: Vec<String> = found.iter().map(|p| p.join("::")).collect();
    assert_eq!(
        show,
        [
            "crate::a::b",
            "crate::a::c::d",
            "crate::a::c::e",
            "crate::x::y",
            "super::z::w"
        ]
    );
    let mut g = BTreeMap::new();
    g.insert("a".to_string(), BTreeSet::from(["b".to_string()]));
    g.insert("b".to_string(), BTreeSet::from(["a".to_string()]));
    assert_eq!(
        circle(&g),
        Some(vec!["a".to_string(), "b".to_string(), "a".to_string()])
    );
}
