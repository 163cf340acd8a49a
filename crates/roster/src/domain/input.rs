//! What roster refuses of any request before a handler reads it: a NUL character (U+0000) in a
//! JSON document, a query parameter or a path parameter, which neither backend stores alike
//! (PostgreSQL refuses it in text); and JSON nested deeper than [`MAX_JSON_DEPTH`], which the
//! change log could not wrap and read back.

/// Deepest nesting of arrays and objects a JSON document may have. A stored document is wrapped
/// in a few more levels by the change log, and serde_json reads at most 128.
pub const MAX_JSON_DEPTH: usize = 32;

/// Why a JSON document is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonRefusal {
    /// Arrays and objects nested deeper than [`MAX_JSON_DEPTH`].
    TooDeep,
    /// A NUL character (raw, or written `\u0000`) at this byte, in an object key or not.
    Nul { at: usize, in_key: bool },
}

impl std::fmt::Display for JsonRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::TooDeep => write!(
                f,
                "nests arrays and objects more than {MAX_JSON_DEPTH} levels deep, which roster \
                 does not take"
            ),
            Self::Nul { at, in_key } => write!(
                f,
                "holds a NUL character (\\u0000) in {} at byte {at}; roster stores no NUL \
                 characters",
                if *in_key { "an object key" } else { "a value" }
            ),
        }
    }
}

/// Checks a JSON document without parsing it: one pass over its bytes that follows strings and
/// escapes, counts nesting and looks for NUL. Malformed JSON passes here and fails its parse.
pub fn check_json(bytes: &[u8]) -> Result<(), JsonRefusal> {
    // Whether each open container is an object; never longer than the limit plus one.
    let mut open: Vec<bool> = Vec::new();
    let mut expect_key = false;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            0 => {
                return Err(JsonRefusal::Nul {
                    at: i,
                    in_key: false,
                })
            }
            b'"' => {
                let in_key = expect_key && open.last() == Some(&true);
                i = string_end(bytes, i + 1, in_key)?;
                expect_key = false;
            }
            c @ (b'{' | b'[') => {
                if open.len() == MAX_JSON_DEPTH {
                    return Err(JsonRefusal::TooDeep);
                }
                open.push(c == b'{');
                expect_key = c == b'{';
            }
            b'}' | b']' => {
                open.pop();
                expect_key = false;
            }
            b',' => expect_key = open.last() == Some(&true),
            _ => {}
        }
        i += 1;
    }
    Ok(())
}

/// The index of the quote that closes the string starting at `i`, refusing a NUL inside it.
fn string_end(bytes: &[u8], mut i: usize, in_key: bool) -> Result<usize, JsonRefusal> {
    while i < bytes.len() {
        match bytes[i] {
            b'"' => return Ok(i),
            0 => return Err(JsonRefusal::Nul { at: i, in_key }),
            b'\\' if bytes.get(i + 1..i + 6) == Some(&b"u0000"[..]) => {
                return Err(JsonRefusal::Nul { at: i, in_key })
            }
            // An escape: the escaped character cannot end the string.
            b'\\' => i += 2,
            _ => i += 1,
        }
    }
    Ok(i)
}

/// Refuses a NUL character in one named part of a request (a query or path parameter).
pub fn check_text(part: &str, text: &str) -> Result<(), String> {
    if text.contains('\0') {
        return Err(format!(
            "{part} holds a NUL character (%00); roster stores no NUL characters"
        ));
    }
    Ok(())
}

/// Refuses a NUL character in the name or value of any parameter of a query string.
pub fn check_query(query: &str) -> Result<(), String> {
    for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
        check_text(&format!("the name of query parameter {name:?}"), &name)?;
        check_text(&format!("query parameter `{name}`"), &value)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested(depth: usize) -> String {
        format!("{}{}", "[".repeat(depth), "]".repeat(depth))
    }

    #[test]
    fn depth_up_to_the_limit_passes() {
        assert_eq!(check_json(nested(MAX_JSON_DEPTH).as_bytes()), Ok(()));
        assert_eq!(
            check_json(nested(MAX_JSON_DEPTH + 1).as_bytes()),
            Err(JsonRefusal::TooDeep)
        );
        let objects = format!("{}1{}", "{\"a\":".repeat(33), "}".repeat(33));
        assert_eq!(check_json(objects.as_bytes()), Err(JsonRefusal::TooDeep));
        // Brackets inside strings do not nest.
        let text = format!("[\"{}\"]", "[".repeat(100));
        assert_eq!(check_json(text.as_bytes()), Ok(()));
    }

    #[test]
    fn nul_is_found_in_keys_and_values_but_not_in_escaped_backslashes() {
        assert_eq!(
            check_json(br#"{"a": "x\u0000"}"#),
            Err(JsonRefusal::Nul {
                at: 8,
                in_key: false
            })
        );
        assert_eq!(
            check_json(br#"{"a": 1, "b\u0000": 2}"#),
            Err(JsonRefusal::Nul {
                at: 11,
                in_key: true
            })
        );
        assert_eq!(
            check_json(br#"[{"a": ["b", {"\u0000": 1}]}]"#),
            Err(JsonRefusal::Nul {
                at: 15,
                in_key: true
            })
        );
        assert!(check_json(b"[\"a\0\"]").is_err());
        assert_eq!(check_json(br#"{"a": "\\u0000", "b\"": "\u0001"}"#), Ok(()));
    }

    #[test]
    fn nul_in_a_query_names_its_parameter() {
        assert_eq!(
            check_query("a=1&b=x%00y"),
            Err(
                "query parameter `b` holds a NUL character (%00); roster stores no NUL characters"
                    .to_owned()
            )
        );
        assert!(check_query("a%00=1").is_err());
        assert_eq!(check_query("a=%2500&b=+"), Ok(()));
    }
}
