//! Shell quoting for POSIX `sh`: the one place where a value becomes part of a command line.
//!
//! Every value that is not part of an allowlisted template goes through [`quote`]: it is wrapped
//! in single quotes, inside which `sh` interprets nothing, and each single quote in the value is
//! written as `'\''` (close, escaped quote, reopen). NUL cannot be passed through a shell at all
//! and is refused. This is the same rule as Python's `shlex.quote`.

use crate::RemoteError;

/// Quotes one word for `sh`. Plain words made only of `[A-Za-z0-9@%+=:,./_-]` are returned as is
/// (so templates stay readable in logs and sudoers lines); everything else is single-quoted.
pub fn quote(word: &str) -> Result<String, RemoteError> {
    if word.contains('\0') {
        return Err(RemoteError::Invalid(
            "a value contains a NUL byte, which cannot be passed to a shell".into(),
        ));
    }
    if !word.is_empty() && word.bytes().all(is_plain) {
        return Ok(word.to_string());
    }
    let mut out = String::with_capacity(word.len() + 2);
    out.push('\'');
    for c in word.chars() {
        if c == '\'' {
            out.push_str("'\\''");
        } else {
            out.push(c);
        }
    }
    out.push('\'');
    Ok(out)
}

/// Bytes that never mean anything to `sh` (no quoting, globbing, expansion or operators).
pub fn is_plain(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"@%+=:,./_-".contains(&b)
}

/// Quotes each word and joins them with spaces.
pub fn join<S: AsRef<str>>(words: &[S]) -> Result<String, RemoteError> {
    let quoted: Result<Vec<String>, RemoteError> =
        words.iter().map(|w| quote(w.as_ref())).collect();
    Ok(quoted?.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Splits like `sh` would for the subset `quote` produces (single quotes, `\'`, spaces), so
    /// the round trip can be checked without a shell; the real-shell check is the canary test.
    fn unquote_words(s: &str) -> Vec<String> {
        let mut words = Vec::new();
        let mut cur = String::new();
        let mut in_word = false;
        let mut chars = s.chars();
        while let Some(c) = chars.next() {
            match c {
                '\'' => {
                    in_word = true;
                    for q in chars.by_ref() {
                        if q == '\'' {
                            break;
                        }
                        cur.push(q);
                    }
                }
                '\\' => {
                    in_word = true;
                    if let Some(n) = chars.next() {
                        cur.push(n);
                    }
                }
                ' ' => {
                    if in_word {
                        words.push(std::mem::take(&mut cur));
                        in_word = false;
                    }
                }
                other => {
                    in_word = true;
                    cur.push(other);
                }
            }
        }
        if in_word {
            words.push(cur);
        }
        words
    }

    #[test]
    fn plain_words_are_left_alone() {
        for w in ["web", "/etc/sv/web", "a=b", "x,y:z", "1.2.3", "user@host"] {
            assert_eq!(quote(w).unwrap(), w);
        }
    }

    #[test]
    fn metacharacters_are_single_quoted() {
        assert_eq!(quote("").unwrap(), "''");
        assert_eq!(quote("a b").unwrap(), "'a b'");
        assert_eq!(
            quote("$(touch /tmp/pwned)").unwrap(),
            "'$(touch /tmp/pwned)'"
        );
        assert_eq!(quote("`id`").unwrap(), "'`id`'");
        assert_eq!(quote("a;b|c&d").unwrap(), "'a;b|c&d'");
        assert_eq!(quote("it's").unwrap(), "'it'\\''s'");
        assert_eq!(quote("*").unwrap(), "'*'");
        assert_eq!(quote("~root").unwrap(), "'~root'");
        assert_eq!(quote("line1\nline2").unwrap(), "'line1\nline2'");
    }

    #[test]
    fn nul_is_refused() {
        assert!(matches!(quote("a\0b"), Err(RemoteError::Invalid(_))));
    }

    #[test]
    fn quoting_round_trips() {
        let canary = "$(touch /tmp/pwned) `touch /tmp/pwned` ' \" ; | & > < \\ \n\t $HOME !x";
        for w in ["", "plain", "it's", "''", "\\'", canary, "ünïcødé ✓"] {
            let q = quote(w).unwrap();
            assert_eq!(unquote_words(&q), vec![w.to_string()], "{q}");
        }
        let joined = join(&["echo", "a b", "it's"]).unwrap();
        assert_eq!(unquote_words(&joined), vec!["echo", "a b", "it's"]);
    }
}
