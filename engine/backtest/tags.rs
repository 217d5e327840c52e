//! Reading the tag updates replayed with `--tags`: `TagUpdate` JSON lines, each with the
//! `event_time_ms` at which it takes effect, sorted by that time.

use std::path::Path;

use super::labels::{json_message, read_text, InputError};
use crate::event::{decode_tag_update, InputFormat, TagUpdate, DEFAULT_MAX_EVENT_BYTES};

/// A tag update and the event time from which events see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TimedTag {
    pub(crate) at_ms: i64,
    pub(crate) update: TagUpdate,
}

/// Reads a `.jsonl` tags file: one object a line, the `TagUpdate` JSON fields
/// (`docs/wire-format.md`) plus `event_time_ms`. Blank lines are skipped; the first bad line
/// stops the read. The updates come back sorted by time (file order among equal times).
pub(crate) fn read_tags(path: &Path) -> Result<Vec<TimedTag>, InputError> {
    if !matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("jsonl" | "ndjson" | "json")
    ) {
        return Err(InputError::UnknownFormat {
            path: path.to_path_buf(),
            expected: ".jsonl",
        });
    }
    let (name, text) = read_text(path)?;
    let mut tags = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_start_matches('\u{feff}');
        if line.trim().is_empty() {
            continue;
        }
        let at = |col: u64, message: String| InputError::Line {
            path: name.clone(),
            line: i as u64 + 1,
            col,
            message,
        };
        let mut object: serde_json::Map<String, serde_json::Value> = serde_json::from_str(line)
            .map_err(|e| at(e.column().max(1) as u64, json_message(&e)))?;
        let at_ms = match object.remove("event_time_ms") {
            None => return Err(at(1, "missing \"event_time_ms\"".into())),
            Some(v) => v.as_i64().ok_or_else(|| {
                at(
                    1,
                    format!("event_time_ms must be an integer of epoch milliseconds, got {v}"),
                )
            })?,
        };
        let rest = serde_json::Value::Object(object).to_string();
        let update = decode_tag_update(rest.as_bytes(), InputFormat::Json, DEFAULT_MAX_EVENT_BYTES)
            .map_err(|e| at(1, e.to_string()))?;
        tags.push(TimedTag { at_ms, update });
    }
    tags.sort_by_key(|t| t.at_ms);
    Ok(tags)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Field;

    #[test]
    fn tags_are_read_sorted_and_bad_lines_are_located() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("tags.jsonl");
        std::fs::write(
            &path,
            r#"{"event_time_ms":2000,"entity_kind":"user","entity_value":"u1","tag":"fraudster"}

{"event_time_ms":1000,"entity_kind":"card_id","entity_value":"c1","tag":"trusted","expires_at_ms":5000}
{"event_time_ms":2000,"entity_kind":"user","entity_value":"u1","tag":"fraudster","remove":true}
"#,
        )
        .expect("write");
        let tags = read_tags(&path).expect("tags");
        let got: Vec<(i64, Field, &str, bool)> = tags
            .iter()
            .map(|t| {
                (
                    t.at_ms,
                    t.update.entity,
                    t.update.tag.as_str(),
                    t.update.remove,
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                (1000, Field::CardId, "trusted", false),
                (2000, Field::UserId, "fraudster", false),
                (2000, Field::UserId, "fraudster", true),
            ]
        );
        assert_eq!(tags[0].update.expires_at_ms, Some(5000));

        for (text, want) in [
            (r#"{"entity_kind":"user","entity_value":"u1","tag":"x"}"#, ":1:1: missing \"event_time_ms\""),
            (r#"{"event_time_ms":"soon","entity_kind":"user","entity_value":"u1","tag":"x"}"#, ":1:1: event_time_ms must be an integer"),
            ("\n{\"event_time_ms\":1,\"entity_kind\":\"planet\",\"entity_value\":\"u1\",\"tag\":\"x\"}", ":2:1: "),
            (r#"{"event_time_ms":1,"entity_kind":"user","tag":"x"}"#, ":1:1: "),
            (r#"{"event_time_ms":1,"#, ":1:"),
        ] {
            std::fs::write(&path, text).expect("write");
            let err = read_tags(&path).expect_err(text).to_string();
            assert!(err.contains(&format!("tags.jsonl{want}")), "{text}: {err}");
        }
        let csv = dir.path().join("tags.csv");
        assert!(matches!(
            read_tags(&csv),
            Err(InputError::UnknownFormat { .. })
        ));
    }
}
