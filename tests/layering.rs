//! The crate's shape, checked against what ARCHITECTURE.md says it is:
//! - imports point one way: the `layering` block in ARCHITECTURE.md lists the layers top
//!   first and the extra `deny` rules; a module names only modules in its layer or below,
//!   never a denied one, and the modules of one layer do not import each other in a circle;
//! - no function outside tests is over 120 lines, no source file over 800 lines;
//! - the code map names every file under `src/`, `tests/` and `scripts/`, and every path it
//!   names exists.
//!
//! `ALLOWED` lists the violations that exist today and are being worked off. It must only
//! shrink: a new violation fails, and so does an entry that no longer occurs.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use syn::spanned::Spanned;
use syn::visit::Visit;

const MAX_FN_LINES: usize = 120;
const MAX_FILE_LINES: usize = 800;

/// Known violations, one per line, in the form the test prints them.
const ALLOWED: &[&str] = &[];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            rust_files(&p, out);
        } else {
            out.push(p);
        }
    }
}

fn rel(p: &Path) -> String {
    p.strip_prefix(root()).unwrap().display().to_string()
}

/// `src/a/b.rs` and `src/a.rs` belong to module `a`.
fn module_of(path: &str) -> String {
    let rest = path.strip_prefix("src/").unwrap();
    let first = rest.split('/').next().unwrap();
    first.strip_suffix(".rs").unwrap_or(first).to_string()
}

struct Layering {
    /// Module -> layer index (0 is the top).
    layer: BTreeMap<String, usize>,
    deny: BTreeMap<String, BTreeSet<String>>,
}

fn architecture() -> String {
    fs::read_to_string(root().join("ARCHITECTURE.md")).expect("read ARCHITECTURE.md")
}

fn layering(doc: &str) -> Layering {
    let block = doc
        .split("```layering\n")
        .nth(1)
        .expect("ARCHITECTURE.md has a ```layering block")
        .split("```")
        .next()
        .unwrap();
    let mut layer = BTreeMap::new();
    let mut deny: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut index = 0;
    for line in block.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (head, rest) = line.split_once(':').expect("`name: modules` lines");
        let names = rest.split_whitespace().map(str::to_string);
        if let Some(from) = head.strip_prefix("deny ") {
            for f in from.split_whitespace() {
                deny.entry(f.to_string()).or_default().extend(names.clone());
            }
        } else {
            for m in names {
                assert!(
                    layer.insert(m.clone(), index).is_none(),
                    "{m} is listed twice"
                );
            }
            index += 1;
        }
    }
    Layering { layer, deny }
}

/// Every `crate::x` a file names, in `use` trees and in paths.
#[derive(Default)]
struct Imports(BTreeSet<String>);

impl Imports {
    fn tree(&mut self, t: &syn::UseTree, at_crate: bool) {
        match t {
            syn::UseTree::Path(p) if !at_crate => self.tree(&p.tree, p.ident == "crate"),
            syn::UseTree::Path(p) => {
                self.0.insert(p.ident.to_string());
            }
            syn::UseTree::Name(n) if at_crate => {
                self.0.insert(n.ident.to_string());
            }
            syn::UseTree::Rename(r) if at_crate => {
                self.0.insert(r.ident.to_string());
            }
            syn::UseTree::Group(g) => g.items.iter().for_each(|i| self.tree(i, at_crate)),
            _ => {}
        }
    }
}

impl<'a> Visit<'a> for Imports {
    fn visit_item_use(&mut self, u: &'a syn::ItemUse) {
        self.tree(&u.tree, false);
    }
    fn visit_path(&mut self, p: &'a syn::Path) {
        let mut segs = p.segments.iter();
        if let (Some(a), Some(b)) = (segs.next(), segs.next()) {
            if a.ident == "crate" {
                self.0.insert(b.ident.to_string());
            }
        }
        syn::visit::visit_path(self, p);
    }
    fn visit_macro(&mut self, m: &'a syn::Macro) {
        // Paths inside macro calls (`format!`, `matches!`) are tokens, not syntax.
        let text = m.tokens.to_string();
        for part in text.split("crate ::").skip(1) {
            let name: String = part
                .trim_start()
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                self.0.insert(name);
            }
        }
    }
}

fn is_test_item(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|a| {
        a.path().is_ident("test")
            || (a.path().is_ident("cfg")
                && a.meta
                    .require_list()
                    .is_ok_and(|l| l.tokens.to_string() == "test"))
    })
}

/// Functions longer than the limit, skipping everything under `#[cfg(test)]` or `#[test]`.
struct LongFns<'p> {
    path: &'p str,
    found: Vec<String>,
}

impl LongFns<'_> {
    fn check(&mut self, name: &syn::Ident, sig: &syn::Signature, block: &syn::Block) {
        let start = sig.span().start().line;
        let end = block.span().end().line;
        let lines = end - start + 1;
        if lines > MAX_FN_LINES {
            self.found
                .push(format!("fn {} {name} ({lines} lines)", self.path));
        }
    }
}

impl<'a> Visit<'a> for LongFns<'_> {
    fn visit_item_mod(&mut self, m: &'a syn::ItemMod) {
        if !is_test_item(&m.attrs) {
            syn::visit::visit_item_mod(self, m);
        }
    }
    fn visit_item_fn(&mut self, f: &'a syn::ItemFn) {
        if !is_test_item(&f.attrs) {
            self.check(&f.sig.ident, &f.sig, &f.block);
            syn::visit::visit_item_fn(self, f);
        }
    }
    fn visit_impl_item_fn(&mut self, f: &'a syn::ImplItemFn) {
        if !is_test_item(&f.attrs) {
            self.check(&f.sig.ident, &f.sig, &f.block);
            syn::visit::visit_impl_item_fn(self, f);
        }
    }
    fn visit_trait_item_fn(&mut self, f: &'a syn::TraitItemFn) {
        if let Some(block) = &f.default {
            self.check(&f.sig.ident, &f.sig, block);
        }
        syn::visit::visit_trait_item_fn(self, f);
    }
}

/// Circles among the given modules (Tarjan's strongly connected components).
fn circles(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct T<'e> {
        edges: &'e BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<String, usize>,
        low: BTreeMap<String, usize>,
        stack: Vec<String>,
        on: BTreeSet<String>,
        out: Vec<Vec<String>>,
    }
    impl T<'_> {
        fn visit(&mut self, v: &str) {
            let i = self.index.len();
            self.index.insert(v.into(), i);
            self.low.insert(v.into(), i);
            self.stack.push(v.into());
            self.on.insert(v.into());
            for w in self.edges.get(v).into_iter().flatten() {
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let l = self.low[w].min(self.low[v]);
                    self.low.insert(v.into(), l);
                } else if self.on.contains(w) {
                    let l = self.index[w].min(self.low[v]);
                    self.low.insert(v.into(), l);
                }
            }
            if self.low[v] == self.index[v] {
                let mut scc = Vec::new();
                loop {
                    let w = self.stack.pop().unwrap();
                    self.on.remove(&w);
                    scc.push(w.clone());
                    if w == v {
                        break;
                    }
                }
                if scc.len() > 1 {
                    scc.sort();
                    self.out.push(scc);
                }
            }
        }
    }
    let mut t = T {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in edges.keys() {
        if !t.index.contains_key(v) {
            t.visit(v);
        }
    }
    t.out
}

fn code_map(doc: &str) -> &str {
    doc.split("## Code map")
        .nth(1)
        .expect("ARCHITECTURE.md has a `## Code map` section")
        .split("\n## ")
        .next()
        .unwrap()
}

/// A file is named when the code map has its path, or when a bullet that names its
/// directory (`src/cmd/`) names the file itself in backticks (`apps.rs`).
fn named(map: &str, path: &str) -> bool {
    if map.contains(path) {
        return true;
    }
    let Some((dir, file)) = path.rsplit_once('/') else {
        return false;
    };
    map.split("\n- ")
        .any(|bullet| bullet.contains(&format!("`{dir}/")) && bullet.contains(&format!("`{file}`")))
}

fn violations() -> Vec<String> {
    let doc = architecture();
    let rules = layering(&doc);
    let map = code_map(&doc);
    let mut found = Vec::new();

    let mut files = Vec::new();
    rust_files(&root().join("src"), &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let path = rel(file);
        if !named(map, &path) {
            found.push(format!("map {path}"));
        }
        if file.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let text = fs::read_to_string(file).unwrap();
        let lines = text.lines().count();
        if lines > MAX_FILE_LINES {
            found.push(format!("file {path} ({lines} lines)"));
        }
        let ast = syn::parse_file(&text).unwrap_or_else(|e| panic!("parse {path}: {e}"));
        let mut long = LongFns {
            path: &path,
            found: Vec::new(),
        };
        long.visit_file(&ast);
        found.extend(long.found);

        let from = module_of(&path);
        if from == "lib" {
            continue;
        }
        let Some(&from_layer) = rules.layer.get(&from) else {
            found.push(format!("module {from} is not in the layering block"));
            continue;
        };
        let mut imports = Imports::default();
        imports.visit_file(&ast);
        for to in imports.0 {
            if to == from {
                continue;
            }
            let Some(&to_layer) = rules.layer.get(&to) else {
                found.push(format!("module {to} is not in the layering block"));
                continue;
            };
            let denied = rules.deny.get(&from).is_some_and(|d| d.contains(&to));
            if to_layer < from_layer || denied {
                found.push(format!("import {from} -> {to}"));
            } else if to_layer == from_layer {
                graph.entry(from.clone()).or_default().insert(to);
            }
        }
    }
    for c in circles(&graph) {
        found.push(format!("circle {}", c.join(" ")));
    }

    let mut others = Vec::new();
    for dir in ["tests", "scripts"] {
        rust_files(&root().join(dir), &mut others);
    }
    for file in others {
        let path = rel(&file);
        // A test helper directory (`tests/util/`, `tests/fixtures/`) is named as a directory.
        let dir_named = path
            .match_indices('/')
            .skip(1)
            .any(|(i, _)| map.contains(&format!("`{}/`", &path[..i])));
        if !dir_named && !named(map, &path) {
            found.push(format!("map {path}"));
        }
    }
    // And the other way: every path the code map names exists.
    for word in map.split('`').skip(1).step_by(2) {
        let is_path = ["src/", "tests/", "scripts/", "fuzz/", "packaging/"]
            .iter()
            .any(|p| word.starts_with(p));
        if is_path && !word.contains(['{', ' ', '*']) && !root().join(word).exists() {
            found.push(format!("gone {word}"));
        }
    }
    found.sort();
    found.dedup();
    found
}

/// Sizes are part of an entry's text; compare entries without them.
fn key(v: &str) -> &str {
    v.split(" (").next().unwrap()
}

#[test]
fn the_crate_has_the_shape_architecture_md_gives_it() {
    let found = violations();
    let allowed: BTreeSet<&str> = ALLOWED.iter().map(|a| key(a)).collect();
    let new: Vec<&String> = found.iter().filter(|v| !allowed.contains(key(v))).collect();
    let keys: BTreeSet<&str> = found.iter().map(|v| key(v)).collect();
    let stale: Vec<&&str> = allowed.iter().filter(|a| !keys.contains(**a)).collect();
    let mut msg = String::new();
    if !new.is_empty() {
        msg += "new violations of ARCHITECTURE.md's shape (fix them, or change the rule there \
                with a reason):\n";
        for v in &new {
            msg += &format!("  {v}\n");
        }
    }
    if !stale.is_empty() {
        msg += "fixed, so remove from ALLOWED in tests/layering.rs:\n";
        for v in &stale {
            msg += &format!("  {v}\n");
        }
    }
    assert!(msg.is_empty(), "{msg}");
}

#[test]
fn circles_are_found() {
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    g.entry("a".into()).or_default().insert("b".into());
    g.entry("b".into()).or_default().insert("c".into());
    g.entry("c".into()).or_default().insert("a".into());
    g.entry("c".into()).or_default().insert("d".into());
    assert_eq!(circles(&g), vec![vec!["a", "b", "c"]]);
}
