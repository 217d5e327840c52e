//! A table keyed by event type, for the handful of types a rule set's guards name.

use ahash::AHashMap;

/// Up to this many types are found by a scan that compares lengths first: for a few types it
/// is cheaper than hashing the event's type.
const SCANNED: usize = 16;

/// Values by event type: scanned for a few types, hashed past [`SCANNED`].
#[derive(Debug, Clone)]
pub struct ByType<T> {
    entries: Vec<(Box<str>, T)>,
    /// Index into `entries` by type, for a table of more than [`SCANNED`] types.
    index: Option<AHashMap<Box<str>, usize>>,
}

impl<T> Default for ByType<T> {
    fn default() -> ByType<T> {
        ByType {
            entries: Vec::new(),
            index: None,
        }
    }
}

impl<T> ByType<T> {
    /// The value of type `kind`.
    pub fn get(&self, kind: &str) -> Option<&T> {
        let at = match &self.index {
            // `str` equality compares lengths before bytes
            None => self.entries.iter().position(|(k, _)| **k == *kind)?,
            Some(index) => *index.get(kind)?,
        };
        self.entries.get(at).map(|(_, value)| value)
    }
}

impl<T> FromIterator<(Box<str>, T)> for ByType<T> {
    /// A table of distinct types.
    fn from_iter<I: IntoIterator<Item = (Box<str>, T)>>(entries: I) -> ByType<T> {
        let entries: Vec<_> = entries.into_iter().collect();
        let index = (entries.len() > SCANNED).then(|| {
            entries
                .iter()
                .enumerate()
                .map(|(i, (kind, _))| (kind.clone(), i))
                .collect()
        });
        ByType { entries, index }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_type_is_found_scanned_or_hashed() {
        for n in [0, 3, SCANNED, SCANNED + 1, 40] {
            let table: ByType<usize> = (0..n)
                .map(|i| {
                    (
                        Box::from(format!("type_{}", "x".repeat(i % 5) + &i.to_string())),
                        i,
                    )
                })
                .collect();
            assert_eq!(table.index.is_some(), n > SCANNED);
            for i in 0..n {
                let kind = format!("type_{}", "x".repeat(i % 5) + &i.to_string());
                assert_eq!(table.get(&kind), Some(&i), "{kind} of {n}");
            }
            assert_eq!(table.get("type_"), None);
            assert_eq!(table.get("authorization"), None);
        }
    }
}
