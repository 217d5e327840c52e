//! Reading the ground-truth labels file (`--labels`: JSON lines or CSV) into labelled units.
//!
//! A line labels one unit: an event (`event_id`) or a transaction (`txn_id`, every event and
//! timeout decision carrying it). Lines are checked completely; the first bad one stops the read
//! with `file:line:col` and what is wrong.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Ground truth of a unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Label {
    Fraud,
    Legit,
}

impl Label {
    pub fn name(self) -> &'static str {
        match self {
            Label::Fraud => "fraud",
            Label::Legit => "legit",
        }
    }
}

/// One line of the labels file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct LabelUnit {
    pub(super) label: Label,
    /// `amount_minor` of the line; `None`: the amount of the unit's first event.
    pub(super) amount_minor: Option<i64>,
    /// `currency` of the line; `None`: the currency of the unit's first event.
    pub(super) currency: Option<Box<str>>,
    /// When the label became known (a chargeback weeks later); informational only.
    pub(super) reported_at_ms: Option<i64>,
}

/// A labels or tags file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: unknown extension, expected {expected}")]
    UnknownFormat {
        path: PathBuf,
        expected: &'static str,
    },
    #[error("{path}:{line}:{col}: {message}")]
    Line {
        path: String,
        line: u64,
        col: u64,
        message: String,
    },
}

/// Encoding of a labels file, by extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LabelFormat {
    Jsonl,
    Csv,
}

/// Every label line, indexed by event id and by transaction id.
#[derive(Debug, Default)]
pub(super) struct Labels {
    pub(super) units: Vec<LabelUnit>,
    by_event: ahash::AHashMap<Box<str>, u32>,
    by_txn: ahash::AHashMap<Box<str>, u32>,
    /// 1-based line of each unit (for duplicate errors).
    lines: Vec<u64>,
}

/// The fields a line may carry (others are ignored).
#[derive(Debug, Default, Deserialize)]
struct RawLabel {
    #[serde(default)]
    event_id: Option<String>,
    #[serde(default)]
    txn_id: Option<String>,
    #[serde(default)]
    label: Option<String>,
    #[serde(default)]
    amount_minor: Option<i64>,
    #[serde(default)]
    currency: Option<String>,
    #[serde(default)]
    reported_at_ms: Option<i64>,
}

/// A problem on a line: the message and the 1-based column it points at.
type LineError = (u64, String);

impl Labels {
    /// Reads a labels file: `.jsonl`/`.ndjson`/`.json` (one object a line) or `.csv` (a header
    /// line naming the columns).
    pub(super) fn read(path: &Path) -> Result<Labels, InputError> {
        let format = match path.extension().and_then(|e| e.to_str()) {
            Some("jsonl" | "ndjson" | "json") => LabelFormat::Jsonl,
            Some("csv") => LabelFormat::Csv,
            _ => {
                return Err(InputError::UnknownFormat {
                    path: path.to_path_buf(),
                    expected: ".jsonl or .csv",
                })
            }
        };
        let (name, text) = read_text(path)?;
        match format {
            LabelFormat::Jsonl => Labels::parse_jsonl(&name, &text),
            LabelFormat::Csv => Labels::parse_csv(&name, &text),
        }
    }

    /// The unit a decision joins: its event's label, else its transaction's.
    pub(super) fn unit_of(&self, event_id: &str, txn_id: Option<&str>) -> Option<u32> {
        if let Some(&unit) = self.by_event.get(event_id) {
            return Some(unit);
        }
        if self.by_txn.is_empty() {
            return None;
        }
        txn_id.and_then(|t| self.by_txn.get(t).copied())
    }

    fn parse_jsonl(path: &str, text: &str) -> Result<Labels, InputError> {
        let mut labels = Labels::default();
        for (line_no, trimmed) in content_lines(text) {
            let at = line_error(path, line_no);
            let raw: RawLabel = serde_json::from_str(trimmed)
                .map_err(|e| at((e.column().max(1) as u64, json_message(&e))))?;
            labels
                .add(raw, line_no)
                .map_err(|message| at((1, message)))?;
        }
        Ok(labels)
    }

    fn parse_csv(path: &str, text: &str) -> Result<Labels, InputError> {
        let mut labels = Labels::default();
        let mut header: Option<Vec<String>> = None;
        for (line_no, line) in content_lines(text) {
            let at = line_error(path, line_no);
            let fields = split_csv(line).map_err(&at)?;
            let Some(names) = &header else {
                header = Some(csv_header(&fields).map_err(&at)?);
                continue;
            };
            if fields.len() != names.len() {
                return Err(at((
                    1,
                    format!("{} fields, the header has {}", fields.len(), names.len()),
                )));
            }
            let mut raw = RawLabel::default();
            for ((col, value), name) in fields.into_iter().zip(names) {
                let value = value.trim();
                if value.is_empty() {
                    continue;
                }
                let int = |what: &str| {
                    value
                        .parse::<i64>()
                        .map_err(|_| (col, format!("{what} must be an integer, got {value:?}")))
                };
                match name.as_str() {
                    "event_id" => raw.event_id = Some(value.to_string()),
                    "txn_id" => raw.txn_id = Some(value.to_string()),
                    "label" => raw.label = Some(value.to_string()),
                    "currency" => raw.currency = Some(value.to_string()),
                    "amount_minor" => raw.amount_minor = Some(int("amount_minor").map_err(&at)?),
                    "reported_at_ms" => {
                        raw.reported_at_ms = Some(int("reported_at_ms").map_err(&at)?)
                    }
                    _ => {}
                }
            }
            labels
                .add(raw, line_no)
                .map_err(|message| at((1, message)))?;
        }
        Ok(labels)
    }

    /// Checks one line and indexes it.
    fn add(&mut self, raw: RawLabel, line: u64) -> Result<(), String> {
        let nonempty = |v: Option<String>| v.filter(|s| !s.trim().is_empty());
        let label = match nonempty(raw.label) {
            None => return Err("missing \"label\" (fraud or legit)".into()),
            Some(l) if l.trim().eq_ignore_ascii_case("fraud") => Label::Fraud,
            Some(l) if l.trim().eq_ignore_ascii_case("legit") => Label::Legit,
            Some(l) => return Err(format!("label must be \"fraud\" or \"legit\", got {l:?}")),
        };
        if let Some(amount) = raw.amount_minor.filter(|a| *a < 0) {
            return Err(format!("amount_minor must not be negative, got {amount}"));
        }
        let currency = nonempty(raw.currency);
        if let Some(c) = &currency {
            if c.len() != 3 || !c.bytes().all(|b| b.is_ascii_uppercase()) {
                return Err(format!(
                    "currency must be a 3-letter ISO 4217 code such as \"EUR\", got {c:?}"
                ));
            }
            if raw.amount_minor.is_none() {
                return Err("currency is given without amount_minor".into());
            }
        }
        if let Some(at) = raw.reported_at_ms.filter(|t| *t < 0) {
            return Err(format!("reported_at_ms must not be negative, got {at}"));
        }
        let unit = LabelUnit {
            label,
            amount_minor: raw.amount_minor,
            currency: currency.map(Into::into),
            reported_at_ms: raw.reported_at_ms,
        };
        let index = u32::try_from(self.units.len())
            .map_err(|_| "more than 4294967295 labels".to_string())?;
        let (kind, id, map) = match (nonempty(raw.event_id), nonempty(raw.txn_id)) {
            (Some(_), Some(_)) => {
                return Err("has both \"event_id\" and \"txn_id\"; give one of them".into())
            }
            (None, None) => return Err("needs an \"event_id\" or a \"txn_id\"".into()),
            (Some(id), None) => ("event", id, &mut self.by_event),
            (None, Some(id)) => ("transaction", id, &mut self.by_txn),
        };
        match map.entry(id.into_boxed_str()) {
            std::collections::hash_map::Entry::Occupied(first) => {
                let first_line = self.lines[*first.get() as usize];
                return Err(format!(
                    "second label for {kind} {:?} (first at line {first_line})",
                    first.key()
                ));
            }
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(index);
            }
        }
        self.units.push(unit);
        self.lines.push(line);
        Ok(())
    }
}

/// Reads a whole file as UTF-8: its display name and text.
pub(super) fn read_text(path: &Path) -> Result<(String, String), InputError> {
    let bytes = std::fs::read(path).map_err(|source| InputError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let name = path.display().to_string();
    let text = String::from_utf8(bytes).map_err(|e| {
        let line = 1 + e.as_bytes()[..e.utf8_error().valid_up_to()]
            .iter()
            .filter(|b| **b == b'\n')
            .count() as u64;
        InputError::Line {
            path: name.clone(),
            line,
            col: 1,
            message: "not valid UTF-8".into(),
        }
    })?;
    Ok((name, text))
}

/// The message of a serde_json error without its " at line L column C" suffix.
pub(super) fn json_message(e: &serde_json::Error) -> String {
    let text = e.to_string();
    text.rsplit_once(" at line ")
        .map_or(text.as_str(), |(m, _)| m)
        .to_string()
}

/// Checks the header line: known column names once each, a `label` and an id column.
/// The non-empty lines of `text` with their 1-based numbers (a leading byte-order mark dropped).
fn content_lines(text: &str) -> impl Iterator<Item = (u64, &str)> {
    text.lines()
        .enumerate()
        .map(|(i, line)| (i as u64 + 1, line.trim_start_matches('\u{feff}')))
        .filter(|(_, line)| !line.trim().is_empty())
}

/// Turns a column and message on line `line` of `path` into the input error.
fn line_error(path: &str, line: u64) -> impl Fn(LineError) -> InputError + '_ {
    move |(col, message)| InputError::Line {
        path: path.to_string(),
        line,
        col,
        message,
    }
}

fn csv_header(fields: &[(u64, String)]) -> Result<Vec<String>, LineError> {
    let names: Vec<String> = fields
        .iter()
        .map(|(_, n)| n.trim().to_ascii_lowercase())
        .collect();
    for (i, name) in names.iter().enumerate() {
        if names[..i].contains(name) {
            return Err((fields[i].0, format!("column {name:?} appears twice")));
        }
    }
    let has = |n: &str| names.iter().any(|x| x == n);
    if !has("label") {
        return Err((1, "the header has no \"label\" column".into()));
    }
    if !has("event_id") && !has("txn_id") {
        return Err((
            1,
            "the header has neither an \"event_id\" nor a \"txn_id\" column".into(),
        ));
    }
    Ok(names)
}

/// Splits one CSV line into (1-based column, field) pairs; `"..."` quotes a field, `""` inside
/// quotes is a quote. Fields cannot span lines.
fn split_csv(line: &str) -> Result<Vec<(u64, String)>, LineError> {
    let mut fields = Vec::new();
    let mut chars = line.char_indices().peekable();
    loop {
        let start = chars.peek().map_or(line.len(), |(i, _)| *i);
        let col = line[..start].chars().count() as u64 + 1;
        let mut field = String::new();
        // Leading blanks before an opening quote are allowed.
        while chars.peek().is_some_and(|(_, c)| *c == ' ' || *c == '\t') {
            if let Some((_, c)) = chars.next() {
                field.push(c);
            }
        }
        if chars.peek().is_some_and(|(_, c)| *c == '"') {
            field.clear();
            chars.next();
            loop {
                match chars.next() {
                    None => return Err((col, "unterminated quoted field".into())),
                    Some((_, '"')) if chars.peek().is_some_and(|(_, c)| *c == '"') => {
                        chars.next();
                        field.push('"');
                    }
                    Some((_, '"')) => break,
                    Some((_, c)) => field.push(c),
                }
            }
            while chars.peek().is_some_and(|(_, c)| *c == ' ' || *c == '\t') {
                chars.next();
            }
            match chars.next() {
                None => {
                    fields.push((col, field));
                    return Ok(fields);
                }
                Some((_, ',')) => fields.push((col, field)),
                Some((i, c)) => {
                    let at = line[..i].chars().count() as u64 + 1;
                    return Err((at, format!("unexpected {c:?} after a quoted field")));
                }
            }
            continue;
        }
        loop {
            match chars.next() {
                None => {
                    fields.push((col, field));
                    return Ok(fields);
                }
                Some((_, ',')) => {
                    fields.push((col, field));
                    break;
                }
                Some((_, c)) => field.push(c),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(path: &str, text: &str) -> String {
        let parsed = if path.ends_with(".csv") {
            Labels::parse_csv(path, text)
        } else {
            Labels::parse_jsonl(path, text)
        };
        parsed.expect_err("bad labels").to_string()
    }

    #[test]
    fn jsonl_and_csv_give_the_same_units() {
        let jsonl = r#"{"event_id":"e1","label":"fraud","amount_minor":1250,"currency":"EUR"}

{"txn_id":"t9","label":"LEGIT","reported_at_ms":1767225600000,"note":"ignored"}
"#;
        let csv = "\u{feff}event_id,txn_id,label,amount_minor,currency,reported_at_ms,note\n\
                   e1,,fraud,1250,EUR,,\n\
                   \n\
                   ,\"t9\", legit ,,,1767225600000,\"a, quoted \"\"note\"\"\"\r\n";
        let a = Labels::parse_jsonl("l.jsonl", jsonl).expect("jsonl");
        let b = Labels::parse_csv("l.csv", csv).expect("csv");
        assert_eq!(a.units, b.units);
        assert_eq!(a.units.len(), 2);
        assert_eq!(a.units[0].label, Label::Fraud);
        assert_eq!(a.units[0].amount_minor, Some(1250));
        assert_eq!(a.units[1].label, Label::Legit);
        assert_eq!(a.units[1].reported_at_ms, Some(1_767_225_600_000));
        for l in [&a, &b] {
            assert_eq!(l.unit_of("e1", Some("t9")), Some(0));
            assert_eq!(l.unit_of("e2", Some("t9")), Some(1));
            assert_eq!(l.unit_of("e2", None), None);
        }
    }

    #[test]
    fn bad_lines_name_file_line_and_column() {
        let cases = [
            ("l.jsonl", "{\"event_id\":\"e1\",\"label\":\"fraud\"}\n{\"event_id\":\"e2\",\"label\":\"maybe\"}\n",
             "l.jsonl:2:1: label must be \"fraud\" or \"legit\", got \"maybe\""),
            ("l.jsonl", "{\"event_id\":\"e1\"}", "l.jsonl:1:1: missing \"label\""),
            ("l.jsonl", "\n{\"event_id\":\"e1\",\"label\":\"fraud\",\"amount_minor\":\"12\"}",
             "l.jsonl:2:"),
            ("l.jsonl", "{\"event_id\":\"e1\",\"label\":\"fraud\"", "l.jsonl:1:"),
            ("l.jsonl", "{\"label\":\"fraud\"}", "needs an \"event_id\" or a \"txn_id\""),
            ("l.jsonl", "{\"event_id\":\"e\",\"txn_id\":\"t\",\"label\":\"fraud\"}", "has both"),
            ("l.jsonl", "{\"event_id\":\"e1\",\"label\":\"fraud\"}\n{\"event_id\":\"e1\",\"label\":\"legit\"}",
             "l.jsonl:2:1: second label for event \"e1\" (first at line 1)"),
            ("l.jsonl", "{\"event_id\":\"e1\",\"label\":\"fraud\",\"amount_minor\":-5}", "must not be negative"),
            ("l.jsonl", "{\"event_id\":\"e1\",\"label\":\"fraud\",\"amount_minor\":5,\"currency\":\"eur\"}",
             "3-letter ISO 4217"),
            ("l.jsonl", "{\"event_id\":\"e1\",\"label\":\"fraud\",\"currency\":\"EUR\"}", "without amount_minor"),
            ("l.csv", "event_id,label\ne1,fraud,extra\n", "l.csv:2:1: 3 fields, the header has 2"),
            ("l.csv", "event_id,label,amount_minor\ne1,fraud,12.5\n",
             "l.csv:2:10: amount_minor must be an integer, got \"12.5\""),
            ("l.csv", "event_id,amount\ne1,5\n", "l.csv:1:1: the header has no \"label\" column"),
            ("l.csv", "id,label\n", "neither an \"event_id\" nor a \"txn_id\""),
            ("l.csv", "event_id,label,label\n", "l.csv:1:16: column \"label\" appears twice"),
            ("l.csv", "event_id,label\n\"e1,fraud\n", "l.csv:2:1: unterminated quoted field"),
            ("l.csv", "event_id,label\n\"e1\"x,fraud\n", "l.csv:2:5: unexpected 'x'"),
        ];
        for (path, text, want) in cases {
            let got = err(path, text);
            assert!(got.contains(want), "{path} {text:?}: {got}");
        }
    }

    #[test]
    fn files_are_read_by_extension_and_errors_name_the_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let csv = dir.path().join("l.csv");
        std::fs::write(&csv, "txn_id,label\nt1,fraud\n").expect("write");
        assert_eq!(Labels::read(&csv).expect("csv").units.len(), 1);
        let txt = dir.path().join("l.txt");
        std::fs::write(&txt, "").expect("write");
        assert!(matches!(
            Labels::read(&txt),
            Err(InputError::UnknownFormat { .. })
        ));
        let missing = dir.path().join("absent.jsonl");
        let e = Labels::read(&missing).expect_err("missing").to_string();
        assert!(e.contains("absent.jsonl"), "{e}");
        let bad = dir.path().join("bad.jsonl");
        std::fs::write(&bad, b"{\"event_id\":\"e1\",\"label\":\"fraud\"}\n\xff\n").expect("write");
        let e = Labels::read(&bad).expect_err("utf-8").to_string();
        assert!(e.ends_with("bad.jsonl:2:1: not valid UTF-8"), "{e}");
    }
}
