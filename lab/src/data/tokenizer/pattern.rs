//! The `tokenizers` library's split patterns (Oniguruma syntax) on the `regex` crate, which has
//! the same leftmost-first alternation but no look-around. Every pattern today's byte-level
//! tokenizers use (GPT-2, Qwen2, Llama 3) has one look-ahead, the alternative `\s+(?!\S)` ("a
//! whitespace run, less its last character when a non-space follows"); it is evaluated here by
//! hand between the alternatives before and after it. Any other look-around is refused.

use super::err;
use regex::Regex;
use rewind::error::Result;

/// GPT-2's pattern, the one `ByteLevel` splits by when `use_regex` is true.
pub const GPT2: &str =
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

const LOOKAHEAD: &str = r"\s+(?!\S)";

/// A compiled split pattern.
#[derive(Debug, Clone)]
pub struct Pattern {
    /// Where a match may start: every alternative, the look-ahead one as `\s+`.
    any: Regex,
    /// The same, anchored: its match is the pattern's unless it is whitespace only.
    full: Regex,
    /// The alternatives before `\s+(?!\S)` (all of them when it is absent), anchored.
    before: Regex,
    /// The alternatives after it, anchored (`None` when it is absent or last).
    after: Option<Regex>,
    lookahead: bool,
}

fn compile(p: &str, source: &str) -> Result<Regex> {
    Regex::new(p).map_err(|e| {
        err(format!(
            "tokenizer.json: the split pattern {source:?} is not supported: {e}"
        ))
    })
}

impl Pattern {
    /// Compiles `source`, a pattern as `tokenizer.json` writes it.
    pub fn new(source: &str) -> Result<Pattern> {
        let (head, tail, lookahead) = match source.find(LOOKAHEAD) {
            Some(at) => {
                let head = &source[..at];
                let tail = &source[at + LOOKAHEAD.len()..];
                let whole = (head.is_empty() || head.ends_with('|'))
                    && (tail.is_empty() || tail.starts_with('|'));
                if !whole {
                    return Err(err(format!(
                        "tokenizer.json: the split pattern {source:?} uses `\\s+(?!\\S)` inside a group, which is not supported"
                    )));
                }
                (
                    head.trim_end_matches('|'),
                    tail.trim_start_matches('|'),
                    true,
                )
            }
            None => (source, "", false),
        };
        for look in ["(?=", "(?!", "(?<=", "(?<!", "(?>"] {
            if head.contains(look) || tail.contains(look) {
                return Err(err(format!(
                    "tokenizer.json: the split pattern {source:?} uses the look-around {look:?}, which is not supported"
                )));
            }
        }
        let anchored = |p: &str| compile(&format!("^(?:{p})"), source);
        let alts: Vec<&str> = [head, if lookahead { r"\s+" } else { "" }, tail]
            .into_iter()
            .filter(|p| !p.is_empty())
            .collect();
        Ok(Pattern {
            any: compile(&alts.join("|"), source)?,
            full: anchored(&alts.join("|"))?,
            before: if head.is_empty() {
                compile("[^\\s\\S]", source)?
            } else {
                anchored(head)?
            },
            after: (!tail.is_empty()).then(|| anchored(tail)).transpose()?,
            lookahead,
        })
    }

    /// The match at `at` as Oniguruma makes it: the earlier alternatives, then the look-ahead
    /// one, then the later ones; its end, if any.
    fn match_at(&self, text: &str, at: usize) -> Option<usize> {
        let rest = &text[at..];
        let m = self.full.find(rest)?;
        // Only a whitespace match may owe itself to `\s+` standing in for the look-ahead.
        if !self.lookahead || !m.as_str().chars().all(char::is_whitespace) {
            return Some(at + m.end());
        }
        if let Some(m) = self.before.find(rest) {
            return Some(at + m.end());
        }
        if self.lookahead {
            let run: usize = rest
                .chars()
                .take_while(|c| c.is_whitespace())
                .map(char::len_utf8)
                .sum();
            if run > 0 {
                if run == rest.len() {
                    return Some(at + run);
                }
                // Back off one character so that no non-space follows; a run of one cannot.
                let last = rest[..run].chars().next_back().map_or(0, char::len_utf8);
                if run > last {
                    return Some(at + run - last);
                }
            }
        }
        self.after
            .as_ref()
            .and_then(|r| r.find(rest))
            .map(|m| at + m.end())
    }

    /// Calls `f(i, piece)` for the pieces of `text` with `Isolated` behaviour: each match, and
    /// each stretch between matches, in order (none empty).
    pub fn for_each<'t>(&self, text: &'t str, mut f: impl FnMut(usize, &'t str)) {
        let (mut done, mut from, mut n) = (0, 0, 0);
        while from < text.len() {
            // Where the last match ended, one usually starts: try there before searching.
            let (at, end) = match self.match_at(text, from).filter(|&e| e > from) {
                Some(end) => (from, end),
                None => {
                    let Some(m) = self.any.find_at(text, from) else {
                        break;
                    };
                    match self.match_at(text, m.start()).filter(|&e| e > m.start()) {
                        Some(end) => (m.start(), end),
                        None => {
                            from = m.start()
                                + text[m.start()..].chars().next().map_or(1, char::len_utf8);
                            continue;
                        }
                    }
                }
            };
            if at > done {
                f(n, &text[done..at]);
                n += 1;
            }
            f(n, &text[at..end]);
            n += 1;
            done = end;
            from = end;
        }
        if done < text.len() {
            f(n, &text[done..]);
        }
    }

    /// The pieces [`Pattern::for_each`] gives, collected.
    pub fn split<'t>(&self, text: &'t str) -> Vec<&'t str> {
        let mut out = Vec::new();
        self.for_each(text, |_, p| out.push(p));
        out
    }
}
