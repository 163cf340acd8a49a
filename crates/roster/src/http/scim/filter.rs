//! The RFC 7644 §3.4.2.2 filter grammar: `and` binds tighter than `or`, `not (…)`, grouping,
//! value paths (`emails[type eq "work"]`, also followed by `.value eq "…"`), keywords and
//! operators in any case. Length and nesting are bounded, so that a filter cannot make us work
//! without limit; every error says where the filter went wrong.

use crate::domain::scim::{AttrPath, CompValue, CompareOp, Filter};

/// Longest filter accepted, in bytes.
pub const MAX_FILTER_LEN: usize = 4096;
/// Deepest nesting of parentheses, `not` and value paths accepted.
pub const MAX_FILTER_DEPTH: usize = 32;

/// Most comparisons a filter may hold: each one that no index serves (`co`, `ew`) is a pass over
/// the source's rows, so their number bounds what one request costs. Identity providers send one
/// or two.
pub const MAX_FILTER_TERMS: usize = 32;

/// Why a filter cannot be used: answered with `scimType: invalidFilter`.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct FilterError(pub String);

pub fn parse(text: &str) -> Result<Filter, FilterError> {
    if text.len() > MAX_FILTER_LEN {
        return Err(FilterError(format!(
            "the filter is {} bytes long; the limit is {MAX_FILTER_LEN}",
            text.len()
        )));
    }
    let tokens = lex(text)?;
    let mut parser = Parser {
        tokens,
        at: 0,
        depth: 0,
    };
    let filter = parser.or(false)?;
    if filter.terms() > MAX_FILTER_TERMS {
        return Err(FilterError(format!(
            "the filter holds {} comparisons; the limit is {MAX_FILTER_TERMS}",
            filter.terms()
        )));
    }
    match parser.peek() {
        None => Ok(filter),
        Some(t) => Err(FilterError(format!(
            "unexpected {} at byte {} of the filter",
            t.kind.describe(),
            t.offset
        ))),
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Kind {
    Open,
    Close,
    OpenBracket,
    CloseBracket,
    /// A `.` right after `]`: a sub-attribute of the value path follows.
    Dot,
    Word(String),
    Str(String),
}

impl Kind {
    fn describe(&self) -> String {
        match self {
            Self::Open => "\"(\"".to_owned(),
            Self::Close => "\")\"".to_owned(),
            Self::OpenBracket => "\"[\"".to_owned(),
            Self::CloseBracket => "\"]\"".to_owned(),
            Self::Dot => "\".\"".to_owned(),
            Self::Word(w) => format!("\"{w}\""),
            Self::Str(s) => format!("the string {s:?}"),
        }
    }
}

#[derive(Debug, Clone)]
struct Token {
    kind: Kind,
    offset: usize,
}

fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | ':' | '.' | '$' | '+')
}

fn lex(text: &str) -> Result<Vec<Token>, FilterError> {
    let mut tokens = Vec::new();
    let mut chars = text.char_indices().peekable();
    while let Some(&(offset, c)) = chars.peek() {
        let kind = match c {
            ' ' | '\t' | '\r' | '\n' => {
                chars.next();
                continue;
            }
            '(' => Kind::Open,
            ')' => Kind::Close,
            '[' => Kind::OpenBracket,
            ']' => Kind::CloseBracket,
            '.' if tokens
                .last()
                .is_some_and(|t: &Token| t.kind == Kind::CloseBracket) =>
            {
                Kind::Dot
            }
            '"' => {
                let end = string_end(text, offset)?;
                let value: String = serde_json::from_str(&text[offset..end]).map_err(|e| {
                    FilterError(format!("the string at byte {offset} is not valid: {e}"))
                })?;
                if value.contains('\0') {
                    return Err(FilterError(format!(
                        "the string at byte {offset} contains a NUL character"
                    )));
                }
                while chars.peek().is_some_and(|&(i, _)| i < end) {
                    chars.next();
                }
                tokens.push(Token {
                    kind: Kind::Str(value),
                    offset,
                });
                continue;
            }
            c if is_word_char(c) => {
                let mut word = String::new();
                while let Some(&(_, c)) = chars.peek() {
                    if !is_word_char(c) {
                        break;
                    }
                    word.push(c);
                    chars.next();
                }
                tokens.push(Token {
                    kind: Kind::Word(word),
                    offset,
                });
                continue;
            }
            other => {
                return Err(FilterError(format!(
                    "unexpected character {other:?} at byte {offset} of the filter"
                )))
            }
        };
        chars.next();
        tokens.push(Token { kind, offset });
    }
    Ok(tokens)
}

/// The byte just past the closing quote of the string that opens at `start`.
fn string_end(text: &str, start: usize) -> Result<usize, FilterError> {
    let bytes = text.as_bytes();
    let mut i = start + 1;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'"' => return Ok(i + 1),
            _ => i += 1,
        }
    }
    Err(FilterError(format!(
        "the string that opens at byte {start} is not closed"
    )))
}

struct Parser {
    tokens: Vec<Token>,
    at: usize,
    depth: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at)
    }

    fn next(&mut self) -> Option<Token> {
        let token = self.tokens.get(self.at).cloned();
        self.at += 1;
        token
    }

    fn end_offset(&self) -> usize {
        self.tokens
            .last()
            .map_or(0, |t| t.offset + t.kind.describe().len())
    }

    fn peek_keyword(&self, keyword: &str) -> bool {
        matches!(self.peek(), Some(Token { kind: Kind::Word(w), .. }) if w.eq_ignore_ascii_case(keyword))
    }

    fn expect(&mut self, kind: &Kind) -> Result<(), FilterError> {
        match self.next() {
            Some(t) if &t.kind == kind => Ok(()),
            Some(t) => Err(FilterError(format!(
                "expected {} at byte {}, found {}",
                kind.describe(),
                t.offset,
                t.kind.describe()
            ))),
            None => Err(FilterError(format!(
                "expected {} at the end of the filter",
                kind.describe()
            ))),
        }
    }

    fn nest(&mut self) -> Result<(), FilterError> {
        self.depth += 1;
        if self.depth > MAX_FILTER_DEPTH {
            return Err(FilterError(format!(
                "the filter nests deeper than {MAX_FILTER_DEPTH} levels"
            )));
        }
        Ok(())
    }

    /// `and`-terms joined by `or`; `inner` inside the brackets of a value path.
    fn or(&mut self, inner: bool) -> Result<Filter, FilterError> {
        let mut left = self.and(inner)?;
        while self.peek_keyword("or") {
            self.next();
            let right = self.and(inner)?;
            left = Filter::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn and(&mut self, inner: bool) -> Result<Filter, FilterError> {
        let mut left = self.unary(inner)?;
        while self.peek_keyword("and") {
            self.next();
            let right = self.unary(inner)?;
            left = Filter::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn unary(&mut self, inner: bool) -> Result<Filter, FilterError> {
        if self.peek_keyword("not")
            && matches!(
                self.tokens.get(self.at + 1),
                Some(Token {
                    kind: Kind::Open,
                    ..
                })
            )
        {
            self.next();
            return Ok(Filter::Not(Box::new(self.group(inner)?)));
        }
        if matches!(
            self.peek(),
            Some(Token {
                kind: Kind::Open,
                ..
            })
        ) {
            return self.group(inner);
        }
        self.attribute_expression(inner)
    }

    fn group(&mut self, inner: bool) -> Result<Filter, FilterError> {
        self.expect(&Kind::Open)?;
        self.nest()?;
        let filter = self.or(inner)?;
        self.depth -= 1;
        self.expect(&Kind::Close)?;
        Ok(filter)
    }

    fn attribute_expression(&mut self, inner: bool) -> Result<Filter, FilterError> {
        let (path, offset) = match self.next() {
            Some(Token {
                kind: Kind::Word(w),
                offset,
            }) => (attr_path(&w, offset)?, offset),
            Some(t) => {
                return Err(FilterError(format!(
                    "expected an attribute at byte {}, found {}",
                    t.offset,
                    t.kind.describe()
                )))
            }
            None => {
                return Err(FilterError(format!(
                    "expected an attribute at byte {}",
                    self.end_offset()
                )))
            }
        };
        if matches!(
            self.peek(),
            Some(Token {
                kind: Kind::OpenBracket,
                ..
            })
        ) {
            if inner || path.sub.is_some() {
                return Err(FilterError(format!(
                    "the value path at byte {offset} cannot be used here: value paths do not nest \
                     and name a multi-valued attribute, not a sub-attribute"
                )));
            }
            return self.value_path(path);
        }
        self.comparison(path)
    }

    fn value_path(&mut self, path: AttrPath) -> Result<Filter, FilterError> {
        self.expect(&Kind::OpenBracket)?;
        self.nest()?;
        let mut filter = self.or(true)?;
        self.depth -= 1;
        self.expect(&Kind::CloseBracket)?;
        if matches!(
            self.peek(),
            Some(Token {
                kind: Kind::Dot,
                ..
            })
        ) {
            self.next();
            let sub = match self.next() {
                Some(Token {
                    kind: Kind::Word(w),
                    offset,
                }) => attr_path(&w, offset)?,
                _ => {
                    return Err(FilterError(
                        "expected a sub-attribute after \"].\"".to_owned(),
                    ))
                }
            };
            let then = self.comparison(sub)?;
            filter = Filter::And(Box::new(filter), Box::new(then));
        }
        Ok(Filter::Any(path, Box::new(filter)))
    }

    fn comparison(&mut self, path: AttrPath) -> Result<Filter, FilterError> {
        let (word, offset) = match self.next() {
            Some(Token {
                kind: Kind::Word(w),
                offset,
            }) => (w, offset),
            Some(t) => {
                return Err(FilterError(format!(
                    "expected an operator after {path} at byte {}, found {}",
                    t.offset,
                    t.kind.describe()
                )))
            }
            None => {
                return Err(FilterError(format!(
                    "expected an operator after {path} at the end of the filter"
                )))
            }
        };
        if word.eq_ignore_ascii_case("pr") {
            return Ok(Filter::Present(path));
        }
        let op = CompareOp::parse(&word).ok_or_else(|| {
            FilterError(format!(
                "\"{word}\" at byte {offset} is not an operator: use eq, ne, co, sw, ew, gt, ge, \
                 lt, le or pr"
            ))
        })?;
        let value = match self.next() {
            Some(Token {
                kind: Kind::Str(s), ..
            }) => CompValue::Str(s),
            Some(Token {
                kind: Kind::Word(w),
                offset,
            }) => literal(&w, offset)?,
            Some(t) => {
                return Err(FilterError(format!(
                    "expected a value after \"{word}\" at byte {}, found {}",
                    t.offset,
                    t.kind.describe()
                )))
            }
            None => {
                return Err(FilterError(format!(
                    "expected a value after \"{word}\" at the end of the filter"
                )))
            }
        };
        check_operand(&path, op, &value)?;
        Ok(Filter::Compare(path, op, value))
    }
}

/// `true`, `false`, `null` or a number.
fn literal(word: &str, offset: usize) -> Result<CompValue, FilterError> {
    match word.to_ascii_lowercase().as_str() {
        "true" => return Ok(CompValue::Bool(true)),
        "false" => return Ok(CompValue::Bool(false)),
        "null" => return Ok(CompValue::Null),
        _ => {}
    }
    word.parse::<f64>()
        .ok()
        .filter(|n| n.is_finite() && word.starts_with(|c: char| c == '-' || c.is_ascii_digit()))
        .map(CompValue::Num)
        .ok_or_else(|| {
            FilterError(format!(
                "\"{word}\" at byte {offset} is not a value: strings are quoted (\"…\"); other \
                 values are true, false, null or a number"
            ))
        })
}

fn check_operand(path: &AttrPath, op: CompareOp, value: &CompValue) -> Result<(), FilterError> {
    let fits = match value {
        CompValue::Str(_) => true,
        CompValue::Num(_) => !op.is_substring(),
        CompValue::Bool(_) | CompValue::Null => matches!(op, CompareOp::Eq | CompareOp::Ne),
    };
    if fits {
        return Ok(());
    }
    Err(FilterError(format!(
        "{path} {} {value}: \"{}\" does not take {value}",
        op.name(),
        op.name()
    )))
}

/// `[URI ":"] name ["." sub]`; the URI is what comes before the last `:`.
pub(super) fn attr_path(word: &str, offset: usize) -> Result<AttrPath, FilterError> {
    let (schema, rest) = match word.rsplit_once(':') {
        Some((schema, rest)) if schema.to_ascii_lowercase().starts_with("urn:") => {
            (Some(schema.to_owned()), rest)
        }
        Some(_) => {
            return Err(FilterError(format!(
                "\"{word}\" at byte {offset} is not an attribute path: a schema prefix is a URN"
            )))
        }
        None => (None, word),
    };
    let (name, sub) = match rest.split_once('.') {
        Some((name, sub)) => (name, Some(sub)),
        None => (rest, None),
    };
    for part in std::iter::once(name).chain(sub) {
        if !is_attribute_name(part) {
            return Err(FilterError(format!(
                "\"{word}\" at byte {offset} is not an attribute path"
            )));
        }
    }
    Ok(AttrPath {
        schema,
        name: name.to_owned(),
        sub: sub.map(str::to_owned),
    })
}

/// `ALPHA *(ALPHA / DIGIT / "-" / "_")`, or `$ref`.
fn is_attribute_name(name: &str) -> bool {
    name == "$ref"
        || name.starts_with(|c: char| c.is_ascii_alphabetic())
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmp(name: &str, sub: Option<&str>, op: CompareOp, value: CompValue) -> Filter {
        Filter::Compare(AttrPath::new(name, sub), op, value)
    }

    fn s(v: &str) -> CompValue {
        CompValue::Str(v.to_owned())
    }

    #[test]
    fn and_binds_tighter_than_or() {
        let f = parse(r#"a eq "1" or b eq "2" and c eq "3""#).expect("the input is accepted");
        assert_eq!(
            f,
            Filter::Or(
                Box::new(cmp("a", None, CompareOp::Eq, s("1"))),
                Box::new(Filter::And(
                    Box::new(cmp("b", None, CompareOp::Eq, s("2"))),
                    Box::new(cmp("c", None, CompareOp::Eq, s("3")))
                ))
            )
        );
    }

    #[test]
    fn keywords_and_operators_ignore_case() {
        let f = parse(r#"userName EQ "x" AND NOT (title PR)"#).expect("the input is accepted");
        assert_eq!(
            f,
            Filter::And(
                Box::new(cmp("userName", None, CompareOp::Eq, s("x"))),
                Box::new(Filter::Not(Box::new(Filter::Present(AttrPath::new(
                    "title", None
                )))))
            )
        );
    }

    #[test]
    fn value_path_followed_by_sub_attribute_is_one_element_match() {
        let f = parse(r#"emails[type eq "work"].value eq "a@b.c""#).expect("the input is accepted");
        assert_eq!(
            f,
            Filter::Any(
                AttrPath::new("emails", None),
                Box::new(Filter::And(
                    Box::new(cmp("type", None, CompareOp::Eq, s("work"))),
                    Box::new(cmp("value", None, CompareOp::Eq, s("a@b.c")))
                ))
            )
        );
    }

    #[test]
    fn schema_urn_prefix_is_split_at_the_last_colon() {
        let f = parse(
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value eq \"m\"",
        )
        .expect("the input is accepted");
        let Filter::Compare(path, _, _) = f else {
            panic!("not a comparison: {f:?}")
        };
        assert_eq!(
            path.schema.as_deref(),
            Some("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User")
        );
        assert!(path.is("manager", Some("value")));
    }

    #[test]
    fn literals_are_typed() {
        assert_eq!(
            parse("active eq True").expect("the input is accepted"),
            cmp("active", None, CompareOp::Eq, CompValue::Bool(true))
        );
        assert_eq!(
            parse("x gt -1.5e2").expect("the input is accepted"),
            cmp("x", None, CompareOp::Gt, CompValue::Num(-150.0))
        );
        assert_eq!(
            parse(r#"x eq "a \"q\" \u00e9""#).expect("the input is accepted"),
            cmp("x", None, CompareOp::Eq, s("a \"q\" é"))
        );
    }

    #[test]
    fn errors_say_where() {
        let cases = [
            ("userName eq", "expected a value"),
            ("userName xx \"a\"", "is not an operator"),
            ("userName eq bob", "is not a value"),
            ("(userName pr", "expected \")\""),
            ("userName pr extra", "unexpected"),
            ("emails[type eq \"w\"", "expected \"]\""),
            ("a[b[c pr]]", "do not nest"),
            ("active gt true", "does not take"),
            ("name co 3", "does not take"),
            ("x eq \"open", "not closed"),
            ("x eq 'a'", "unexpected character"),
            ("", "expected an attribute"),
            ("foo:bar eq \"x\"", "a URN"),
        ];
        for (text, expected) in cases {
            let err = parse(text).expect_err("the input is refused");
            assert!(err.0.contains(expected), "{text}: {err}");
        }
    }

    #[test]
    fn length_and_depth_are_bounded() {
        let many = vec!["userName ew \"x\""; MAX_FILTER_TERMS + 1].join(" or ");
        assert!(parse(&many).unwrap_err().0.contains("comparisons"));
        let enough = vec!["userName ew \"x\""; MAX_FILTER_TERMS].join(" or ");
        assert!(parse(&enough).is_ok());
        let long = format!("x eq \"{}\"", "a".repeat(MAX_FILTER_LEN));
        assert!(parse(&long)
            .expect_err("the input is refused")
            .0
            .contains("limit"));
        let deep = format!("{}x pr{}", "(".repeat(40), ")".repeat(40));
        assert!(parse(&deep)
            .expect_err("the input is refused")
            .0
            .contains("deeper"));
        let ok = format!("{}x pr{}", "(".repeat(30), ")".repeat(30));
        assert!(parse(&ok).is_ok());
    }
}
