//! The `.veto` rule language (docs/rule-language.md): lexer → parser → checker → compiler → evaluator, and `veto check`.

pub mod ast;
pub mod bound;
mod by_type;
pub mod checker;
pub mod compiler;
pub mod diagnostic;
pub mod eval;
pub mod explain;
pub mod filters;
pub mod lexer;
pub mod lower;
pub mod number;
pub mod parser;

use std::path::{Path, PathBuf};

pub use compiler::{
    ArmTimer, CancelTimer, CompiledRule, Evaluation, ExpectedDecision, ExpectedTimeout, FeatureDef,
    RuleSet, RuleTest, SequenceDef, TagAction, TEST_EPOCH_MS,
};
pub use diagnostic::{Diagnostic, Severity, SourceFile};
pub use eval::EvalContext;

/// The result of checking (and, without errors, compiling) rule files.
#[derive(Debug)]
pub struct CheckReport {
    /// The compiled rules; `None` when there is any error.
    pub ruleset: Option<RuleSet>,
    /// Errors and warnings, in file order.
    pub diagnostics: Vec<Diagnostic>,
    /// The checked sources, for rendering.
    pub sources: Vec<SourceFile>,
}

impl CheckReport {
    pub fn has_errors(&self) -> bool {
        self.diagnostics
            .iter()
            .any(|d| d.severity == Severity::Error)
    }

    /// Diagnostics as rustc-style text with source lines and carets.
    pub fn render_human(&self, color: bool) -> String {
        diagnostic::render_human(&self.diagnostics, &self.sources, color)
    }

    /// `{"ok": bool, "summary": "...", "diagnostics": [...]}`
    pub fn render_json(&self) -> String {
        let diagnostics: serde_json::Value =
            serde_json::from_str(&diagnostic::render_json(&self.diagnostics))
                .unwrap_or(serde_json::Value::Null);
        serde_json::json!({
            "ok": !self.has_errors(),
            "summary": self.summary(),
            "version": self.ruleset.as_ref().map(|r| r.version().to_string()),
            "diagnostics": diagnostics,
        })
        .to_string()
    }

    /// "12 rules, 8 features, 3 lists", or "N errors, M warnings" when it did not compile.
    pub fn summary(&self) -> String {
        match &self.ruleset {
            Some(r) => r.summary(),
            None => {
                let errors = self
                    .diagnostics
                    .iter()
                    .filter(|d| d.severity == Severity::Error)
                    .count();
                let warnings = self.diagnostics.len() - errors;
                format!(
                    "{errors} error{}, {warnings} warning{}",
                    if errors == 1 { "" } else { "s" },
                    if warnings == 1 { "" } else { "s" }
                )
            }
        }
    }
}

/// Stack for the checking thread: passes recurse on expression trees (at most 256 operators
/// and 64 nesting levels deep), which must not overflow even in debug builds.
const CHECK_STACK_BYTES: usize = 64 << 20;

/// Checks and compiles sources given as `(name, text, base_dir for list files)`, on a thread
/// with a large stack (falling back to the current thread if it cannot be spawned).
pub fn compile_sources(inputs: Vec<(String, String, PathBuf)>) -> CheckReport {
    compile_sources_with(inputs, false)
}

/// [`compile_sources`]; with `explain`, every rule keeps the tree of its conditions as written
/// (`CompiledRule::explain`, `SequenceDef::explain`).
pub(crate) fn compile_sources_with(
    inputs: Vec<(String, String, PathBuf)>,
    explain: bool,
) -> CheckReport {
    let shared = std::sync::Mutex::new(Some(inputs));
    let on_big_stack = std::thread::scope(|scope| {
        let spawned = std::thread::Builder::new()
            .name("veto-rules-check".into())
            .stack_size(CHECK_STACK_BYTES)
            .spawn_scoped(scope, || {
                let inputs = shared.lock().ok().and_then(|mut g| g.take());
                inputs.map(|inputs| compile_sources_here(inputs, explain))
            });
        spawned.ok().and_then(|handle| handle.join().ok().flatten())
    });
    if let Some(report) = on_big_stack {
        return report;
    }
    match shared.into_inner().ok().flatten() {
        // The thread could not be spawned: check here.
        Some(inputs) => compile_sources_here(inputs, explain),
        // The checking thread panicked (a bug): never report success.
        None => CheckReport {
            ruleset: None,
            diagnostics: vec![Diagnostic {
                severity: Severity::Error,
                file: String::new(),
                line: 0,
                col: 0,
                message: "internal error: the rule checker failed".into(),
                help: None,
                span: ast::Span::new(u32::MAX, 0, 0),
            }],
            sources: Vec::new(),
        },
    }
}

fn compile_sources_here(inputs: Vec<(String, String, PathBuf)>, explain: bool) -> CheckReport {
    let mut diagnostics = Vec::new();
    let mut sources = Vec::with_capacity(inputs.len());
    let mut base_dirs = Vec::with_capacity(inputs.len());
    let mut files = Vec::with_capacity(inputs.len());
    for (i, (name, text, base)) in inputs.into_iter().enumerate() {
        files.push(parser::parse(i as u32, &text, &mut diagnostics));
        sources.push(SourceFile { name, text });
        base_dirs.push(base);
    }
    let checked = checker::check(&files, &sources, &base_dirs, &mut diagnostics, explain);
    diagnostics.sort_by_key(|d| (d.span.file, d.span.start));
    diagnostic::locate(&mut diagnostics, &sources);
    let has_errors = diagnostics.iter().any(|d| d.severity == Severity::Error);
    let ruleset = (!has_errors).then(|| {
        let texts: Vec<&str> = sources.iter().map(|s| s.text.as_str()).collect();
        compiler::compile(checked, &texts)
    });
    CheckReport {
        ruleset,
        diagnostics,
        sources,
    }
}

/// Checks and compiles one source text; list files are read relative to `base_dir`.
pub fn compile_source(name: &str, text: &str, base_dir: &Path) -> CheckReport {
    compile_sources(vec![(
        name.to_string(),
        text.to_string(),
        base_dir.to_path_buf(),
    )])
}

/// Loads rule files; a directory contributes its `*.veto` files (not recursive, sorted by
/// name). All files form one rule set: names are shared across them.
pub fn load(paths: &[PathBuf]) -> CheckReport {
    load_with(paths, false)
}

/// [`load`], keeping each rule's conditions as written for `veto explain`.
pub fn load_explained(paths: &[PathBuf]) -> CheckReport {
    load_with(paths, true)
}

fn load_with(paths: &[PathBuf], explain: bool) -> CheckReport {
    let mut files = Vec::new();
    let mut io_errors = Vec::new();
    for path in paths {
        if path.is_dir() {
            match std::fs::read_dir(path) {
                Ok(entries) => {
                    let mut found: Vec<PathBuf> = entries
                        .filter_map(Result::ok)
                        .map(|e| e.path())
                        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "veto"))
                        .collect();
                    found.sort();
                    if found.is_empty() {
                        io_errors.push(format!("no .veto files in {}", path.display()));
                    }
                    files.extend(found);
                }
                Err(e) => io_errors.push(format!("cannot read {}: {e}", path.display())),
            }
        } else {
            files.push(path.clone());
        }
    }
    let mut inputs = Vec::new();
    let mut unreadable = Vec::new();
    for f in files {
        let name = f.display().to_string();
        match std::fs::read(&f).map(String::from_utf8) {
            Ok(Ok(text)) => {
                let base = f.parent().map(Path::to_path_buf).unwrap_or_default();
                inputs.push((name, text, base));
            }
            Ok(Err(e)) => unreadable.push(diagnostic::invalid_utf8(name, e.as_bytes())),
            Err(e) => io_errors.push(format!("cannot read {name}: {e}")),
        }
    }
    let mut report = compile_sources_with(inputs, explain);
    for message in io_errors {
        unreadable.push(Diagnostic {
            severity: Severity::Error,
            file: String::new(),
            line: 0,
            col: 0,
            message,
            help: None,
            span: ast::Span::new(u32::MAX, 0, 0),
        });
    }
    report.diagnostics.splice(0..0, unreadable);
    if report.has_errors() {
        report.ruleset = None;
    }
    report
}

/// `veto check`: prints a one-line summary to stdout and returns 0, or prints diagnostics
/// to stderr and returns 1. With `json`, prints the JSON report to stdout either way.
pub fn run_check(paths: &[PathBuf], json: bool) -> i32 {
    let report = load(paths);
    if json {
        println!("{}", report.render_json());
    } else {
        use std::io::IsTerminal;
        let color = std::io::stderr().is_terminal();
        if !report.diagnostics.is_empty() {
            eprint!("{}", report.render_human(color));
        }
        if report.has_errors() {
            eprintln!("check failed: {}", report.summary());
        } else {
            println!("ok: {}", report.summary());
        }
    }
    i32::from(report.has_errors())
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_exact;
