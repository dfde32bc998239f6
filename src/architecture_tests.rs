//! The shape of the code, checked: data flows one way (`api` <- `providers` <- `controller` <-
//! the binaries' modules), sibling modules import no circle, and reconcilers see no HTTP.
//! Reads the sources as text: every `crate::<module>` path in non-test code counts as an
//! import.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The layer of each top-level module: a module may use only modules of lower layers.
const LAYERS: &[(&str, u8)] = &[
    ("redact", 0),
    ("time", 0),
    ("metrics", 0),
    ("api", 1),
    ("providers", 2),
    ("controller", 3),
    ("leader", 3),
    ("server", 3),
    ("preview", 4),
    ("plugin", 4),
    ("fuzzing", 4),
];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every library source file (not the binaries, not test-only files), with its path below
/// `src/` as module segments, e.g. `["controller", "livy", "plan"]`.
fn sources() -> Vec<(Vec<String>, String)> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let root = src();
    let mut files = Vec::new();
    walk(&root, &mut files);
    files
        .into_iter()
        .filter_map(|path| {
            let rel = path
                .strip_prefix(&root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let stem = rel.trim_end_matches(".rs");
            let segments: Vec<String> = stem.split('/').map(str::to_owned).collect();
            let test_only = segments
                .last()
                .is_some_and(|s| s == "tests" || s.ends_with("_tests"));
            let binary = segments[0] == "bin" || segments[0] == "main";
            if test_only || binary || segments[0] == "lib" {
                return None;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            Some((segments, code_only(&text)))
        })
        .collect()
}

/// The text without comments and without what follows the first `#[cfg(test)]` (test modules
/// sit at the end of a file in this crate).
fn code_only(text: &str) -> String {
    let body = text.split("#[cfg(test)]").next().unwrap_or_default();
    body.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The `crate::a::b` paths a file names, as (a, Some(b)); `b` only where it is a module name
/// (lower case). Groups count item by item: `crate::a::{b, c::D}` names (a, b) and (a, c), and
/// `crate::{a, b}` names a and b.
fn crate_paths(code: &str) -> BTreeSet<(String, Option<String>)> {
    fn ident(s: &str) -> &str {
        let end = s
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(s.len());
        &s[..end]
    }
    /// The top-level items of the group that `s` starts with (`{...}`).
    fn group_items(s: &str) -> Vec<&str> {
        let mut items = Vec::new();
        let (mut depth, mut start) = (0, 1);
        for (i, c) in s.char_indices() {
            match c {
                '{' => depth += 1,
                '}' | ',' if depth == 1 => {
                    items.push(s[start..i].trim());
                    start = i + 1;
                    if c == '}' {
                        break;
                    }
                }
                '}' => depth -= 1,
                _ => {}
            }
        }
        items
    }
    let module = |s: &str| Some(s.to_owned()).filter(|s| s.starts_with(|c: char| c.is_lowercase()));
    let mut out = BTreeSet::new();
    for (i, _) in code.match_indices("crate::") {
        let before = code[..i].chars().last();
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue; // e.g. `my_crate::`
        }
        let rest = &code[i + "crate::".len()..];
        if rest.starts_with('{') {
            for item in group_items(rest) {
                out.insert((ident(item).to_owned(), None));
            }
            continue;
        }
        let first = ident(rest).to_owned();
        let after = &rest[first.len()..];
        match after.strip_prefix("::") {
            Some(g) if g.starts_with('{') => {
                for item in group_items(g) {
                    out.insert((first.clone(), module(ident(item))));
                }
            }
            Some(next) => {
                out.insert((first, module(ident(next))));
            }
            None => {
                out.insert((first, None));
            }
        }
    }
    out.retain(|(first, _)| !first.is_empty());
    out
}

fn layer(module: &str) -> Option<u8> {
    LAYERS.iter().find(|(m, _)| *m == module).map(|(_, l)| *l)
}

#[test]
fn no_module_imports_upward() {
    let mut violations = Vec::new();
    for (segments, code) in sources() {
        let own = &segments[0];
        let Some(own_layer) = layer(own) else {
            violations.push(format!("src/{}: module not in LAYERS", segments.join("/")));
            continue;
        };
        for (target, _) in crate_paths(&code) {
            if &target == own {
                continue;
            }
            match layer(&target) {
                Some(l) if l < own_layer => {}
                _ => violations.push(format!(
                    "src/{}.rs uses crate::{target}",
                    segments.join("/")
                )),
            }
        }
    }
    assert!(
        violations.is_empty(),
        "upward imports:\n{}",
        violations.join("\n")
    );
}

/// Sibling modules below `parent` (e.g. the submodules of `controller`) form no circle. A
/// file counts as its top submodule (`controller/livy/plan.rs` is `livy`); the parent's own
/// `mod.rs`, which declares the children and holds what they share, is left out.
fn sibling_graph(parent: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (segments, code) in sources() {
        if segments[0] != parent || segments.len() < 2 || segments[1] == "mod" {
            continue;
        }
        let own = segments[1].clone();
        let edges = graph.entry(own.clone()).or_default();
        for (target, sub) in crate_paths(&code) {
            if target == parent
                && let Some(sub) = sub
                && sub != own
            {
                edges.insert(sub);
            }
        }
    }
    graph
}

fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|n| n == node) {
            let mut cycle = path[i..].to_vec();
            cycle.push(node.to_owned());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(c) = visit(next, graph, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|n| visit(n, graph, &mut Vec::new(), &mut done))
}

#[test]
fn sibling_modules_import_no_circle() {
    for parent in ["controller", "providers", "api"] {
        let graph = sibling_graph(parent);
        assert!(graph.len() > 2, "{parent}: {graph:?}");
        if let Some(cycle) = find_cycle(&graph) {
            panic!("{parent}: import circle {}", cycle.join(" -> "));
        }
    }
}

#[test]
fn the_cycle_finder_finds_cycles() {
    let graph: BTreeMap<String, BTreeSet<String>> = [
        ("driver", vec!["status"]),
        ("status", vec!["run"]),
        ("run", vec!["driver"]),
        ("schedule", vec![]),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.into_iter().map(str::to_owned).collect()))
    .collect();
    assert_eq!(
        find_cycle(&graph).unwrap(),
        ["driver", "status", "run", "driver"]
    );
    let paths = crate_paths(
        "use crate::controller::{Context, schedule::{self, add}, status};\n\
         let x = crate::time::add(a, b);\nuse crate::{api, redact::SecretString};",
    );
    let expected: BTreeSet<(String, Option<String>)> = [
        ("api", None),
        ("controller", None),
        ("controller", Some("schedule")),
        ("controller", Some("status")),
        ("redact", None),
        ("time", Some("add")),
    ]
    .into_iter()
    .map(|(a, b)| (a.to_owned(), b.map(str::to_owned)))
    .collect();
    assert_eq!(paths, expected);
}

/// Reconcilers ask the client seam; URLs, HTTP status codes and request building stay in
/// `providers` and `controller/clients`.
#[test]
fn reconcilers_contain_no_http() {
    let reconcilers = [
        "notebook",
        "livy",
        "workspace_view",
        "inventory",
        "driver",
        "cluster_credential",
    ];
    let forbidden = [
        "reqwest",
        "url::",
        "Url",
        "StatusCode",
        "providers::http",
        "providers::endpoint",
        "providers::auth",
        "EmrSparkClient",
        "FabricClient",
        "DataRobotClient",
    ];
    let mut found = Vec::new();
    for (segments, code) in sources() {
        if segments[0] == "controller" && reconcilers.contains(&segments[1].as_str()) {
            for f in forbidden {
                if code.contains(f) {
                    found.push(format!("src/{}.rs: {f}", segments.join("/")));
                }
            }
        }
    }
    assert!(found.is_empty(), "{}", found.join("\n"));
}

/// The repository's text files that people read or the code cites.
fn repo_texts() -> Vec<(PathBuf, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut out = Vec::new();
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path
                .extension()
                .is_some_and(|e| ["rs", "md", "yaml", "toml"].contains(&e.to_str().unwrap_or("")))
            {
                out.push(path);
            }
        }
    }
    let mut files = vec![root.join("README.md"), root.join("CHANGELOG.md")];
    for dir in ["src", "tests", "docs", "deploy", "fuzz/fuzz_targets"] {
        walk(&root.join(dir), &mut files);
    }
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap();
        out.push((path, text));
    }
    out
}

/// The project never points at a file outside itself: provider facts are cited from
/// docs/providers.md, and the docs' relative links resolve.
#[test]
fn nothing_cites_a_document_outside_the_repo_and_doc_links_resolve() {
    let outside = ["PROVIDERS.md", "../shared", "shared/seeds", "/work/"];
    let mut found = Vec::new();
    for (path, text) in repo_texts() {
        if path.ends_with("architecture_tests.rs") {
            continue;
        }
        for needle in outside {
            if text.contains(needle) {
                found.push(format!("{} mentions {needle}", path.display()));
            }
        }
        if path.extension().is_some_and(|e| e == "md") {
            let dir = path.parent().unwrap();
            for (i, _) in text.match_indices("](") {
                let rest = &text[i + 2..];
                let target = &rest[..rest.find(')').unwrap_or(rest.len())];
                let file = target.split('#').next().unwrap_or_default();
                if file.is_empty() || file.contains("://") || file.starts_with("mailto:") {
                    continue;
                }
                if !dir.join(file).exists() {
                    found.push(format!("{}: broken link {target}", path.display()));
                }
            }
        }
    }
    assert!(found.is_empty(), "{}", found.join("\n"));
}
