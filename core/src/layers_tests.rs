//! The core's import graph, read from the source: `crate::` paths outside
//! tests, one node per top-level module, with the leaf modules the flow table
//! imports (`LEAVES`) counted apart from the rest of their protocol. It must
//! have no cycle but the ones through the edges in `KNOWN_BACK_EDGES`, each
//! of which must still be there (drop it from the list when it goes), and no
//! module may import the engine. docs/architecture.md ("Imports") draws it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Submodules that sit below the flow table, by file and node name.
const LEAVES: &[(&str, &str)] = &[
    ("tcp/conn.rs", "tcp::conn"),
    ("splice/conn.rs", "splice::conn"),
    ("udp/splice_flow.rs", "udp::splice_flow"),
];

/// Edges that still close a cycle (none: the graph is a tree of layers).
const KNOWN_BACK_EDGES: &[(&str, &str)] = &[];

type Graph = BTreeMap<String, BTreeSet<String>>;

fn is_test_file(rel: &str) -> bool {
    let name = rel.rsplit('/').next().unwrap_or(rel);
    name.contains("tests")
        || rel.contains("/tests/")
        || rel.starts_with("tests/")
        || name == "testutil.rs"
}

/// The text of `src` before its inline `#[cfg(test)] mod name {`, if any.
fn without_test_mod(src: &str) -> &str {
    let mut at = 0;
    while let Some(i) = src[at..].find("#[cfg(test)]") {
        let start = at + i;
        let rest = src[start + "#[cfg(test)]".len()..].trim_start();
        if rest.starts_with("mod ") {
            let head = rest.split('\n').next().unwrap_or("");
            if head.trim_end().ends_with('{') {
                return &src[..start];
            }
        }
        at = start + 1;
    }
    src
}

fn node_of(rel: &str) -> String {
    if let Some((_, n)) = LEAVES.iter().find(|(f, _)| *f == rel) {
        return (*n).to_string();
    }
    let first = rel.split('/').next().unwrap_or(rel);
    first.trim_end_matches(".rs").to_string()
}

fn collect(dir: &Path, root: &Path, g: &mut Graph) {
    for e in std::fs::read_dir(dir).expect("core/src is readable") {
        let path = e.expect("directory entry").path();
        if path.is_dir() {
            collect(&path, root, g);
            continue;
        }
        let rel = path
            .strip_prefix(root)
            .expect("under src")
            .to_string_lossy()
            .replace('\\', "/");
        if !rel.ends_with(".rs") || rel == "lib.rs" || is_test_file(&rel) {
            continue;
        }
        let node = node_of(&rel);
        let text = std::fs::read_to_string(&path).expect("source is readable");
        let src = without_test_mod(&text);
        let deps = g.entry(node.clone()).or_default();
        for (i, _) in src.match_indices("crate::") {
            let mut parts = src[i + "crate::".len()..]
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
                .next()
                .unwrap_or("")
                .split("::");
            let top = parts.next().unwrap_or("");
            let sub = parts.next().unwrap_or("");
            let two = format!("{top}::{sub}");
            let target = if LEAVES.iter().any(|(_, n)| *n == two) {
                two
            } else {
                top.to_string()
            };
            if !target.is_empty()
                && target != node
                && target
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c == '_' || c == ':' || c.is_ascii_digit())
            {
                deps.insert(target);
            }
        }
    }
}

/// A cycle of `g`, if it has one.
fn find_cycle(g: &Graph) -> Option<Vec<String>> {
    fn visit(
        n: &str,
        g: &Graph,
        state: &mut BTreeMap<String, u8>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        match state.get(n) {
            Some(2) => return None,
            Some(1) => {
                let from = path.iter().position(|p| p == n).unwrap_or(0);
                let mut c = path[from..].to_vec();
                c.push(n.to_string());
                return Some(c);
            }
            _ => {}
        }
        state.insert(n.to_string(), 1);
        path.push(n.to_string());
        for m in g.get(n).into_iter().flatten() {
            if let Some(c) = visit(m, g, state, path) {
                return Some(c);
            }
        }
        path.pop();
        state.insert(n.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for n in g.keys() {
        if let Some(c) = visit(n, g, &mut state, &mut Vec::new()) {
            return Some(c);
        }
    }
    None
}

fn graph() -> Graph {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut g = Graph::new();
    collect(&root, &root, &mut g);
    g
}

#[test]
fn no_module_imports_the_engine() {
    for (n, deps) in graph() {
        assert!(!deps.contains("engine"), "{n} imports engine");
    }
}

#[test]
fn leaves_import_only_the_lowest_layers() {
    let g = graph();
    for (_, n) in LEAVES {
        let deps = g.get(*n).cloned().unwrap_or_default();
        for d in &deps {
            assert!(["action", "time"].contains(&d.as_str()), "{n} imports {d}");
        }
    }
}

#[test]
fn imports_have_no_cycle_but_the_known_edges() {
    let mut g = graph();
    for (a, b) in KNOWN_BACK_EDGES {
        let present = g.get_mut(*a).is_some_and(|d| d.remove(*b));
        assert!(
            present,
            "{a} no longer imports {b}: drop the edge from KNOWN_BACK_EDGES and the docs"
        );
    }
    if let Some(c) = find_cycle(&g) {
        panic!("import cycle: {}", c.join(" -> "));
    }
}
