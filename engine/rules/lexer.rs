//! Lexer: turns `.veto` source text into tokens with byte spans, reporting bad characters.

use super::ast::Span;
use super::diagnostic::Diagnostic;
use super::number::{self, Decimal};
use rust_decimal::prelude::ToPrimitive;

#[derive(Debug, Clone, PartialEq)]
pub enum Tok {
    Ident(String),
    Str(String),
    /// A number literal, exact.
    Num(Decimal),
    /// A number with a unit, in milliseconds.
    Duration(u64),
    Eq,
    EqEq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    LParen,
    RParen,
    LBracket,
    RBracket,
    LBrace,
    RBrace,
    Comma,
    Colon,
    Dot,
    Plus,
    Minus,
    Star,
    Slash,
    Eof,
}

impl Tok {
    /// How the token is named in "expected X, found Y" messages.
    pub fn describe(&self) -> String {
        match self {
            Tok::Ident(s) => format!("`{s}`"),
            Tok::Str(s) => format!("string \"{s}\""),
            Tok::Num(n) => format!("number `{n}`"),
            Tok::Duration(_) => "a duration".to_string(),
            Tok::Eof => "end of file".to_string(),
            other => format!("`{}`", other.symbol()),
        }
    }

    fn symbol(&self) -> &'static str {
        match self {
            Tok::Eq => "=",
            Tok::EqEq => "==",
            Tok::Ne => "!=",
            Tok::Lt => "<",
            Tok::Le => "<=",
            Tok::Gt => ">",
            Tok::Ge => ">=",
            Tok::LParen => "(",
            Tok::RParen => ")",
            Tok::LBracket => "[",
            Tok::RBracket => "]",
            Tok::LBrace => "{",
            Tok::RBrace => "}",
            Tok::Comma => ",",
            Tok::Colon => ":",
            Tok::Dot => ".",
            Tok::Plus => "+",
            Tok::Minus => "-",
            Tok::Star => "*",
            Tok::Slash => "/",
            _ => "?",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Token {
    pub tok: Tok,
    pub span: Span,
}

/// Milliseconds per duration unit.
/// Durations are whole milliseconds up to 10^18.
const MAX_DURATION_MS: u64 = 1_000_000_000_000_000_000;

fn unit_ms(unit: &str) -> Option<u64> {
    match unit {
        "ms" => Some(1),
        "s" => Some(1_000),
        "m" => Some(60_000),
        "h" => Some(3_600_000),
        "d" => Some(86_400_000),
        _ => None,
    }
}

/// Splits `text` into tokens; the last token is always `Eof`. Errors are pushed to `diags`
/// and lexing continues after the offending character.
pub fn lex(file: u32, text: &str, diags: &mut Vec<Diagnostic>) -> Vec<Token> {
    let bytes = text.as_bytes();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        let start = i;
        let span = |end: usize| Span::new(file, start, end);
        match c {
            b' ' | b'\t' | b'\r' | b'\n' => i += 1,
            b'#' => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'"' => {
                i += 1;
                let mut value = String::new();
                let mut closed = false;
                while i < bytes.len() {
                    match bytes[i] {
                        b'"' => {
                            i += 1;
                            closed = true;
                            break;
                        }
                        b'\n' => break,
                        b'\\' => {
                            let escaped = bytes.get(i + 1).copied();
                            let known = match escaped {
                                Some(b'"') => Some('"'),
                                Some(b'\\') => Some('\\'),
                                Some(b'n') => Some('\n'),
                                Some(b't') => Some('\t'),
                                _ => None,
                            };
                            match known {
                                Some(c) => {
                                    value.push(c);
                                    i += 2;
                                }
                                None => {
                                    // Skip only the backslash; what follows is lexed as text.
                                    diags.push(Diagnostic::error(
                                        Span::new(file, i, i + 1),
                                        "unknown escape in string",
                                        Some("use \\\", \\\\, \\n or \\t".into()),
                                    ));
                                    i += 1;
                                }
                            }
                        }
                        _ => {
                            let ch = text[i..].chars().next().unwrap_or('\u{fffd}');
                            value.push(ch);
                            i += ch.len_utf8().max(1);
                        }
                    }
                }
                if closed {
                    tokens.push(Token {
                        tok: Tok::Str(value),
                        span: span(i),
                    });
                } else {
                    diags.push(Diagnostic::error(
                        span(i),
                        "unterminated string",
                        Some("close the string with `\"` on the same line".into()),
                    ));
                }
            }
            b'0'..=b'9' => {
                while i < bytes.len() && bytes[i].is_ascii_digit() {
                    i += 1;
                }
                if i + 1 < bytes.len() && bytes[i] == b'.' && bytes[i + 1].is_ascii_digit() {
                    i += 1;
                    while i < bytes.len() && bytes[i].is_ascii_digit() {
                        i += 1;
                    }
                }
                let number = &text[start..i];
                let unit_start = i;
                while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                    i += 1;
                }
                let unit = &text[unit_start..i];
                let value = number::parse_literal(number).ok();
                if unit.is_empty() {
                    match value {
                        Some(value) => tokens.push(Token {
                            tok: Tok::Num(value),
                            span: span(i),
                        }),
                        None => diags.push(Diagnostic::error(
                            span(i),
                            "number is too large",
                            Some("numbers have at most 28 significant digits".into()),
                        )),
                    }
                } else if let Some(ms) = unit_ms(unit) {
                    let total = value
                        .and_then(|v| v.checked_mul(Decimal::from(ms)))
                        .filter(|t| t.is_integer() && *t <= Decimal::from(MAX_DURATION_MS))
                        .and_then(|t| t.to_u64());
                    if let Some(total) = total {
                        tokens.push(Token {
                            tok: Tok::Duration(total),
                            span: span(i),
                        });
                    } else {
                        diags.push(Diagnostic::error(
                            span(i),
                            format!(
                                "duration `{}` is not a whole number of milliseconds below 10^18",
                                &text[start..i]
                            ),
                            None,
                        ));
                    }
                } else {
                    let not_a_number_form = unit.starts_with(['e', 'E', '_'])
                        && unit[1..].bytes().all(|b| b.is_ascii_digit() || b == b'_');
                    let (message, help) = if not_a_number_form {
                        (
                            format!("`{}` is not a number here", &text[start..i]),
                            "write numbers as plain digits, e.g. `1000000` (no exponent, no `_`)",
                        )
                    } else {
                        (
                            format!("unknown duration unit `{unit}`"),
                            "durations use ms, s, m, h or d, e.g. `10m`",
                        )
                    };
                    diags.push(Diagnostic::error(
                        Span::new(file, unit_start, i),
                        message,
                        Some(help.into()),
                    ));
                    // Kept as the number it starts with, so the parser does not report a
                    // missing expression after this error.
                    if let Some(value) = value {
                        tokens.push(Token {
                            tok: Tok::Num(value),
                            span: span(i),
                        });
                    }
                }
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                    i += 1;
                }
                tokens.push(Token {
                    tok: Tok::Ident(text[start..i].to_string()),
                    span: span(i),
                });
            }
            _ => {
                let two = bytes.get(i + 1).copied();
                let (tok, len) = match (c, two) {
                    (b'=', Some(b'=')) => (Some(Tok::EqEq), 2),
                    (b'!', Some(b'=')) => (Some(Tok::Ne), 2),
                    (b'<', Some(b'=')) => (Some(Tok::Le), 2),
                    (b'>', Some(b'=')) => (Some(Tok::Ge), 2),
                    (b'=', _) => (Some(Tok::Eq), 1),
                    (b'<', _) => (Some(Tok::Lt), 1),
                    (b'>', _) => (Some(Tok::Gt), 1),
                    (b'(', _) => (Some(Tok::LParen), 1),
                    (b')', _) => (Some(Tok::RParen), 1),
                    (b'[', _) => (Some(Tok::LBracket), 1),
                    (b']', _) => (Some(Tok::RBracket), 1),
                    (b'{', _) => (Some(Tok::LBrace), 1),
                    (b'}', _) => (Some(Tok::RBrace), 1),
                    (b',', _) => (Some(Tok::Comma), 1),
                    (b':', _) => (Some(Tok::Colon), 1),
                    (b'.', _) => (Some(Tok::Dot), 1),
                    (b'+', _) => (Some(Tok::Plus), 1),
                    (b'-', _) => (Some(Tok::Minus), 1),
                    (b'*', _) => (Some(Tok::Star), 1),
                    (b'/', _) => (Some(Tok::Slash), 1),
                    _ => {
                        let ch = text[i..].chars().next().unwrap_or('\u{fffd}');
                        (None, ch.len_utf8().max(1))
                    }
                };
                i += len;
                match tok {
                    Some(tok) => tokens.push(Token { tok, span: span(i) }),
                    None => {
                        let ch = text[start..i].to_string();
                        let help = match ch.as_str() {
                            "&" => Some("use `and`".to_string()),
                            "|" => Some("use `or`".to_string()),
                            "!" => Some("use `not` or `!=`".to_string()),
                            "'" => Some("strings use double quotes".to_string()),
                            _ => None,
                        };
                        diags.push(Diagnostic::error(
                            span(i),
                            format!("unexpected character `{ch}`"),
                            help,
                        ));
                    }
                }
            }
        }
    }
    tokens.push(Token {
        tok: Tok::Eof,
        span: Span::new(file, bytes.len(), bytes.len()),
    });
    tokens
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(text: &str) -> Vec<Tok> {
        let mut d = Vec::new();
        let t = lex(0, text, &mut d);
        assert!(d.is_empty(), "{d:?}");
        t.into_iter().map(|t| t.tok).collect()
    }

    #[test]
    fn lexes_durations_numbers_and_operators() {
        assert_eq!(
            toks("amount >= 5000.50 over 10m # note"),
            vec![
                Tok::Ident("amount".into()),
                Tok::Ge,
                Tok::Num(Decimal::new(50005, 1)),
                Tok::Ident("over".into()),
                Tok::Duration(600_000),
                Tok::Eof
            ]
        );
        assert_eq!(
            toks("1ms 2s 1.5h"),
            vec![
                Tok::Duration(1),
                Tok::Duration(2000),
                Tok::Duration(5_400_000),
                Tok::Eof
            ]
        );
    }

    #[test]
    fn unknown_escape_before_a_multibyte_char_does_not_split_it() {
        let mut d = Vec::new();
        let t = lex(0, "\"\\\u{1038d}\"", &mut d);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].message, "unknown escape in string");
        assert_eq!(t[0].tok, Tok::Str("\u{1038d}".into()));
    }

    #[test]
    fn reports_bad_characters_and_continues() {
        let mut d = Vec::new();
        let t = lex(0, "a & b", &mut d);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].message, "unexpected character `&`");
        assert_eq!(t.len(), 3);
    }
}
