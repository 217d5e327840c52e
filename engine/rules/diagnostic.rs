//! Diagnostics: errors and warnings with file:line:col, "did you mean" help, ariadne and JSON output.

use super::ast::Span;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Warning,
    Error,
}

impl Severity {
    pub fn name(self) -> &'static str {
        match self {
            Severity::Warning => "warning",
            Severity::Error => "error",
        }
    }
}

/// One problem found in a rule file. `line` and `col` are 1-based (col counts characters).
#[derive(Debug, Clone, PartialEq)]
pub struct Diagnostic {
    pub severity: Severity,
    pub file: String,
    pub line: usize,
    pub col: usize,
    pub message: String,
    pub help: Option<String>,
    /// Where in the source; `span.file` indexes the report's sources.
    pub span: Span,
}

impl Diagnostic {
    pub fn error(span: Span, message: impl Into<String>, help: Option<String>) -> Diagnostic {
        Diagnostic {
            severity: Severity::Error,
            file: String::new(),
            line: 0,
            col: 0,
            message: message.into(),
            help,
            span,
        }
    }

    pub fn warning(span: Span, message: impl Into<String>, help: Option<String>) -> Diagnostic {
        Diagnostic {
            severity: Severity::Warning,
            ..Diagnostic::error(span, message, help)
        }
    }
}

/// A source file as the report keeps it for rendering.
#[derive(Debug, Clone)]
pub struct SourceFile {
    pub name: String,
    pub text: String,
}

/// Fills `file`, `line` and `col` of each diagnostic from its span.
pub fn locate(diags: &mut [Diagnostic], sources: &[SourceFile]) {
    for d in diags {
        let Some(src) = sources.get(d.span.file as usize) else {
            continue;
        };
        d.file = src.name.clone();
        (d.line, d.col) = line_col(&src.text, d.span.start as usize);
    }
}

/// The 1-based line and column (in characters) of byte `offset` of `text`.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line_start = before.rfind('\n').map_or(0, |p| p + 1);
    (
        before.matches('\n').count() + 1,
        before[line_start..].chars().count() + 1,
    )
}

/// The error for a rule file that is not UTF-8, at the line and column (in characters) of its
/// first bad byte. It has no source to show (`span.file` is out of range).
pub fn invalid_utf8(file: String, bytes: &[u8]) -> Diagnostic {
    let valid = match std::str::from_utf8(bytes) {
        Ok(all) => all,
        Err(e) => std::str::from_utf8(&bytes[..e.valid_up_to()]).unwrap_or_default(),
    };
    let at = valid.len();
    let line_start = valid.rfind('\n').map_or(0, |p| p + 1);
    let byte = bytes
        .get(at)
        .map_or(String::new(), |b| format!(" (byte 0x{b:02X})"));
    Diagnostic {
        severity: Severity::Error,
        file,
        line: valid.matches('\n').count() + 1,
        col: valid[line_start..].chars().count() + 1,
        message: format!("invalid UTF-8{byte}"),
        help: Some("rule files are UTF-8 text".into()),
        span: Span::new(u32::MAX, at, at + 1),
    }
}

/// Levenshtein distance between two short names.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let b_chars: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b_chars.len()).collect();
    let mut cur = vec![0; b_chars.len() + 1];
    for (i, ca) in a.chars().enumerate() {
        cur[0] = i + 1;
        for (j, cb) in b_chars.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b_chars.len()]
}

/// "did you mean `x`?" for the closest candidate within a third of the name's length
/// (at least 1, at most 3 edits), or when one name is a prefix of the other.
pub fn did_you_mean<'a>(
    name: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<String> {
    let limit = (name.chars().count() / 3).clamp(1, 3);
    let mut best: Option<(usize, &str)> = None;
    for c in candidates {
        let d = edit_distance(name, c);
        let prefix = name.len() >= 3 && (c.starts_with(name) || name.starts_with(c));
        let score = if prefix { d.min(limit) } else { d };
        if (score <= limit) && best.is_none_or(|(b, _)| score < b) {
            best = Some((score, c));
        }
    }
    best.map(|(_, c)| format!("did you mean `{c}`?"))
}

/// Renders diagnostics with ariadne: message, file:line:col, the source line and a caret.
pub fn render_human(diags: &[Diagnostic], sources: &[SourceFile], color: bool) -> String {
    use ariadne::{Config, Label, Report, ReportKind, Source};
    let mut out = Vec::new();
    for d in diags {
        let Some(src) = sources.get(d.span.file as usize) else {
            let at = if d.line > 0 {
                format!("{}:{}:{}: ", d.file, d.line, d.col)
            } else {
                String::new()
            };
            out.extend_from_slice(format!("{}: {at}{}\n", d.severity.name(), d.message).as_bytes());
            if let Some(h) = &d.help {
                out.extend_from_slice(format!("  help: {h}\n").as_bytes());
            }
            continue;
        };
        let kind = match d.severity {
            Severity::Error => ReportKind::Error,
            Severity::Warning => ReportKind::Warning,
        };
        let len = src.text.len();
        let start = (d.span.start as usize).min(len);
        let end = (d.span.end as usize).clamp(start, len);
        let name = src.name.clone();
        let mut report = Report::build(kind, (name.clone(), start..end))
            .with_config(
                Config::default()
                    .with_color(color)
                    .with_index_type(ariadne::IndexType::Byte),
            )
            .with_message(&d.message)
            .with_label(Label::new((name.clone(), start..end)).with_message(&d.message));
        if let Some(h) = &d.help {
            report = report.with_help(h);
        }
        let result = report
            .finish()
            .write((name, Source::from(src.text.as_str())), &mut out);
        if result.is_err() {
            out.extend_from_slice(
                format!(
                    "{}: {}:{}:{}: {}\n",
                    d.severity.name(),
                    src.name,
                    d.line,
                    d.col,
                    d.message
                )
                .as_bytes(),
            );
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Renders diagnostics as a JSON array for editors and CI.
pub fn render_json(diags: &[Diagnostic]) -> String {
    let items: Vec<serde_json::Value> = diags
        .iter()
        .map(|d| {
            serde_json::json!({
                "severity": d.severity.name(),
                "file": d.file,
                "line": d.line,
                "col": d.col,
                "message": d.message,
                "help": d.help,
                "start": d.span.start,
                "end": d.span.end,
            })
        })
        .collect();
    serde_json::Value::Array(items).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_names() {
        let fields = ["card_id", "user_id", "amount"];
        assert_eq!(
            did_you_mean("card", fields),
            Some("did you mean `card_id`?".into())
        );
        assert_eq!(
            did_you_mean("amout", fields),
            Some("did you mean `amount`?".into())
        );
        assert_eq!(did_you_mean("zzz", fields), None);
    }

    #[test]
    fn invalid_utf8_is_located_at_its_first_bad_byte() {
        let d = invalid_utf8("r.veto".into(), b"rule a\n  when ip == \"\xc3\xa9\xff\"");
        assert_eq!(
            (d.file.as_str(), d.line, d.col, d.message.as_str()),
            ("r.veto", 2, 16, "invalid UTF-8 (byte 0xFF)")
        );
        assert_eq!((d.span.start, d.severity), (23, Severity::Error));
        let text = render_human(&[d], &[], false);
        assert_eq!(
            text,
            "error: r.veto:2:16: invalid UTF-8 (byte 0xFF)\n  help: rule files are UTF-8 text\n"
        );
        // A truncated character at the very end.
        let d = invalid_utf8("r.veto".into(), b"ab\xc3");
        assert_eq!((d.line, d.col), (1, 3));
    }

    #[test]
    fn locates_line_and_char_column() {
        let src = vec![SourceFile {
            name: "a.veto".into(),
            text: "ab\n\u{e9}x y".into(),
        }];
        let mut d = vec![Diagnostic::error(Span::new(0, 7, 8), "m", None)];
        locate(&mut d, &src);
        assert_eq!((d[0].line, d[0].col), (2, 4));
    }
}
