//! The stages around the BPE model, as `tokenizer.json` declares them: normalizers,
//! pre-tokenizers, the post-processor and decoders. Each is parsed from its JSON; a type or an
//! option this implementation does not do is an error naming it.

use super::err;
use super::pattern::{GPT2, Pattern};
use rewind::error::Result;
use serde_json::Value;
use unicode_normalization::UnicodeNormalization;

fn unsupported(stage: &str, v: &Value) -> rewind::error::Error {
    err(format!(
        "tokenizer.json: {stage} {} is not supported",
        v["type"]
    ))
}

fn flag(v: &Value, key: &str, default: bool) -> bool {
    v[key].as_bool().unwrap_or(default)
}

/// A literal `{"String": s}` pattern (a `Regex` one is refused for `stage`).
fn literal(v: &Value, stage: &str) -> Result<String> {
    v["pattern"]["String"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| {
            err(format!(
                "tokenizer.json: {stage} pattern {} is not supported (only a String)",
                v["pattern"]
            ))
        })
}

/// A normalizer: Unicode forms, Prepend, Replace of a string, Lowercase, or a Sequence.
#[derive(Debug, Clone)]
pub enum Normalizer {
    /// NFC, NFD, NFKC or NFKD.
    Unicode(&'static str),
    /// Puts the string in front of a non-empty text.
    Prepend(String),
    /// Replaces every occurrence of a string.
    Replace(String, String),
    /// Lower case.
    Lowercase,
    /// In order.
    Sequence(Vec<Normalizer>),
}

impl Normalizer {
    /// Parses a normalizer's JSON; `null` is `None`.
    pub fn parse(v: &Value) -> Result<Option<Normalizer>> {
        Ok(Some(match v["type"].as_str() {
            _ if v.is_null() => return Ok(None),
            Some(form @ ("NFC" | "NFD" | "NFKC" | "NFKD")) => Normalizer::Unicode(match form {
                "NFC" => "NFC",
                "NFD" => "NFD",
                "NFKC" => "NFKC",
                _ => "NFKD",
            }),
            Some("Prepend") => Normalizer::Prepend(
                v["prepend"]
                    .as_str()
                    .ok_or_else(|| unsupported("normalizer", v))?
                    .to_string(),
            ),
            Some("Replace") => Normalizer::Replace(
                literal(v, "normalizer Replace")?,
                v["content"].as_str().unwrap_or_default().to_string(),
            ),
            Some("Lowercase") => Normalizer::Lowercase,
            Some("Sequence") => Normalizer::Sequence(
                v["normalizers"]
                    .as_array()
                    .ok_or_else(|| unsupported("normalizer", v))?
                    .iter()
                    .filter_map(|n| Normalizer::parse(n).transpose())
                    .collect::<Result<_>>()?,
            ),
            _ => return Err(unsupported("normalizer", v)),
        }))
    }

    /// `text` normalized.
    pub fn apply(&self, text: &str) -> String {
        match self {
            Normalizer::Unicode("NFC") => text.nfc().collect(),
            Normalizer::Unicode("NFD") => text.nfd().collect(),
            Normalizer::Unicode("NFKC") => text.nfkc().collect(),
            Normalizer::Unicode(_) => text.nfkd().collect(),
            Normalizer::Prepend(p) if !text.is_empty() => format!("{p}{text}"),
            Normalizer::Prepend(_) => String::new(),
            Normalizer::Replace(from, to) => text.replace(from.as_str(), to),
            Normalizer::Lowercase => text.to_lowercase(),
            Normalizer::Sequence(all) => all.iter().fold(text.to_string(), |t, n| n.apply(&t)),
        }
    }
}

/// One pre-tokenizer step.
#[derive(Debug, Clone)]
enum Step {
    /// Split by a pattern, matches isolated.
    Split(Pattern),
    /// Spaces to the replacement, which is prepended by the scheme; split before each one.
    Metaspace {
        replacement: char,
        prepend: Prepend,
        split: bool,
    },
    /// Optional prefix space and GPT-2's split; the model then sees bytes.
    ByteLevel {
        add_prefix_space: bool,
        gpt2: Option<Pattern>,
    },
}

/// Metaspace's `prepend_scheme`.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Prepend {
    Always,
    First,
    Never,
}

/// The pre-tokenizer: its steps in order, and whether the model sees bytes (a final ByteLevel).
#[derive(Debug, Clone, Default)]
pub struct PreTokenizer {
    steps: Vec<Step>,
    /// The last step is ByteLevel: the model maps each byte to GPT-2's printable character.
    pub byte_level: bool,
}

impl PreTokenizer {
    /// Parses a pre-tokenizer's JSON (`null`: none).
    pub fn parse(v: &Value) -> Result<PreTokenizer> {
        let mut p = PreTokenizer::default();
        p.push(v)?;
        if let Some(at) = p
            .steps
            .iter()
            .position(|s| matches!(s, Step::ByteLevel { .. }))
            && at + 1 != p.steps.len()
        {
            return Err(err(
                "tokenizer.json: pre_tokenizer ByteLevel before another pre-tokenizer is not supported",
            ));
        }
        p.byte_level = matches!(p.steps.last(), Some(Step::ByteLevel { .. }));
        Ok(p)
    }

    fn push(&mut self, v: &Value) -> Result<()> {
        match v["type"].as_str() {
            _ if v.is_null() => {}
            Some("Sequence") => {
                for s in v["pretokenizers"]
                    .as_array()
                    .ok_or_else(|| unsupported("pre_tokenizer", v))?
                {
                    self.push(s)?;
                }
            }
            Some("Split") => {
                if v["behavior"] != "Isolated" || v["invert"] == true {
                    return Err(err(format!(
                        "tokenizer.json: pre_tokenizer Split with behavior {} and invert {} is not supported (Isolated, not inverted)",
                        v["behavior"], v["invert"]
                    )));
                }
                let source = match (
                    v["pattern"]["Regex"].as_str(),
                    v["pattern"]["String"].as_str(),
                ) {
                    (Some(r), _) => r.to_string(),
                    (None, Some(s)) => regex::escape(s),
                    _ => return Err(unsupported("pre_tokenizer", v)),
                };
                self.steps.push(Step::Split(Pattern::new(&source)?));
            }
            Some("ByteLevel") => self.steps.push(Step::ByteLevel {
                add_prefix_space: flag(v, "add_prefix_space", true),
                gpt2: flag(v, "use_regex", true)
                    .then(|| Pattern::new(GPT2))
                    .transpose()?,
            }),
            Some("Metaspace") => {
                let replacement = v["replacement"]
                    .as_str()
                    .and_then(|r| r.chars().next())
                    .unwrap_or('▁');
                let prepend = match (v["prepend_scheme"].as_str(), &v["add_prefix_space"]) {
                    (_, Value::Bool(false)) => Prepend::Never,
                    (Some("first"), _) => Prepend::First,
                    (Some("never"), _) => Prepend::Never,
                    (Some("always") | None, _) => Prepend::Always,
                    (Some(other), _) => {
                        return Err(err(format!(
                            "tokenizer.json: Metaspace prepend_scheme {other:?} is not supported"
                        )));
                    }
                };
                self.steps.push(Step::Metaspace {
                    replacement,
                    prepend,
                    split: flag(v, "split", true),
                });
            }
            _ => return Err(unsupported("pre_tokenizer", v)),
        }
        Ok(())
    }

    /// Calls `f` with each piece the model encodes, in order; `at_start`: `text` begins the
    /// original text (Metaspace's `prepend_scheme: first`).
    pub fn for_each(&self, text: &str, at_start: bool, f: &mut dyn FnMut(&str)) {
        self.run(0, text, at_start, f);
    }

    fn run(&self, step: usize, text: &str, at_start: bool, f: &mut dyn FnMut(&str)) {
        if text.is_empty() {
            return;
        }
        let Some(s) = self.steps.get(step) else {
            return f(text);
        };
        let mut next = |i: usize, piece: &str| self.run(step + 1, piece, at_start && i == 0, f);
        match s {
            Step::Split(pattern) => pattern.for_each(text, next),
            Step::ByteLevel {
                add_prefix_space,
                gpt2,
            } => {
                let prefixed;
                let text = if *add_prefix_space && !text.starts_with(' ') {
                    prefixed = format!(" {text}");
                    prefixed.as_str()
                } else {
                    text
                };
                match gpt2 {
                    Some(pattern) => pattern.for_each(text, next),
                    None => next(0, text),
                }
            }
            Step::Metaspace {
                replacement,
                prepend,
                split,
            } => {
                let mut text = text.replace(' ', &replacement.to_string());
                let first = *prepend == Prepend::Always || (*prepend == Prepend::First && at_start);
                if first && !text.starts_with(*replacement) {
                    text.insert(0, *replacement);
                }
                if !*split {
                    return next(0, &text);
                }
                // Each replacement starts a piece (`MergedWithNext`).
                let (mut start, mut n) = (0, 0);
                for (i, _) in text.match_indices(*replacement) {
                    if i > start {
                        next(n, &text[start..i]);
                        n += 1;
                    }
                    start = i;
                }
                if start < text.len() {
                    next(n, &text[start..]);
                }
            }
        }
    }
}

/// The post-processor's template for a single sequence: the ids to put before and after it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Template {
    /// Ids before the sequence.
    pub before: Vec<u32>,
    /// Ids after it.
    pub after: Vec<u32>,
}

impl Template {
    /// Parses a post-processor's JSON: none, ByteLevel (ids unchanged), TemplateProcessing, or a
    /// Sequence of those.
    pub fn parse(v: &Value) -> Result<Template> {
        match v["type"].as_str() {
            _ if v.is_null() => Ok(Template::default()),
            Some("ByteLevel") => Ok(Template::default()),
            Some("Sequence") => {
                let mut t = Template::default();
                for p in v["processors"]
                    .as_array()
                    .ok_or_else(|| unsupported("post_processor", v))?
                {
                    let inner = Template::parse(p)?;
                    t.before.extend(inner.before);
                    t.after.extend(inner.after);
                }
                Ok(t)
            }
            Some("TemplateProcessing") => {
                let mut t = Template::default();
                let mut seen = false;
                for item in v["single"]
                    .as_array()
                    .ok_or_else(|| unsupported("post_processor", v))?
                {
                    if let Some(name) = item["SpecialToken"]["id"].as_str() {
                        let ids = v["special_tokens"][name]["ids"]
                            .as_array()
                            .ok_or_else(|| {
                                err(format!(
                                    "tokenizer.json: post_processor uses {name:?}, which its special_tokens lack"
                                ))
                            })?
                            .iter()
                            .map(|i| i.as_u64().map(|i| i as u32))
                            .collect::<Option<Vec<u32>>>()
                            .ok_or_else(|| unsupported("post_processor", v))?;
                        if seen { &mut t.after } else { &mut t.before }.extend(ids);
                    } else if item["Sequence"]["id"] == "A" && !seen {
                        seen = true;
                    } else {
                        return Err(err(format!(
                            "tokenizer.json: post_processor template item {item} is not supported"
                        )));
                    }
                }
                Ok(t)
            }
            _ => Err(unsupported("post_processor", v)),
        }
    }
}

/// One decoder step on the token strings.
#[derive(Debug, Clone)]
enum DecodeStep {
    ByteLevel,
    Replace(String, String),
    ByteFallback,
    Fuse,
    Strip(char, usize, usize),
    Metaspace(char, bool),
}

/// The decoder: its steps in order (none: tokens joined by spaces, as the library does).
#[derive(Debug, Clone, Default)]
pub struct Decoder {
    steps: Option<Vec<DecodeStep>>,
}

impl Decoder {
    /// Parses a decoder's JSON.
    pub fn parse(v: &Value) -> Result<Decoder> {
        if v.is_null() {
            return Ok(Decoder::default());
        }
        let mut steps = Vec::new();
        Decoder::push(v, &mut steps)?;
        Ok(Decoder { steps: Some(steps) })
    }

    fn push(v: &Value, steps: &mut Vec<DecodeStep>) -> Result<()> {
        steps.push(match v["type"].as_str() {
            Some("Sequence") => {
                for d in v["decoders"]
                    .as_array()
                    .ok_or_else(|| unsupported("decoder", v))?
                {
                    Decoder::push(d, steps)?;
                }
                return Ok(());
            }
            Some("ByteLevel") => DecodeStep::ByteLevel,
            Some("Replace") => DecodeStep::Replace(
                literal(v, "decoder Replace")?,
                v["content"].as_str().unwrap_or_default().to_string(),
            ),
            Some("ByteFallback") => DecodeStep::ByteFallback,
            Some("Fuse") => DecodeStep::Fuse,
            Some("Strip") => DecodeStep::Strip(
                v["content"]
                    .as_str()
                    .and_then(|c| c.chars().next())
                    .unwrap_or(' '),
                v["start"].as_u64().unwrap_or(0) as usize,
                v["stop"].as_u64().unwrap_or(0) as usize,
            ),
            Some("Metaspace") => DecodeStep::Metaspace(
                v["replacement"]
                    .as_str()
                    .and_then(|r| r.chars().next())
                    .unwrap_or('▁'),
                v["prepend_scheme"] != "never" && v["add_prefix_space"] != false,
            ),
            _ => return Err(unsupported("decoder", v)),
        });
        Ok(())
    }

    /// The text of `tokens`.
    pub fn decode(&self, tokens: Vec<String>) -> String {
        let Some(steps) = &self.steps else {
            return tokens.join(" ");
        };
        steps
            .iter()
            .fold(tokens, |tokens, s| s.apply(tokens))
            .concat()
    }
}

impl DecodeStep {
    fn apply(&self, tokens: Vec<String>) -> Vec<String> {
        match self {
            DecodeStep::ByteLevel => {
                let chars = super::byte_chars();
                let byte_of: std::collections::HashMap<char, u8> = chars
                    .iter()
                    .enumerate()
                    .map(|(b, &c)| (c, b as u8))
                    .collect();
                let mut bytes = Vec::new();
                for t in &tokens {
                    match t
                        .chars()
                        .map(|c| byte_of.get(&c))
                        .collect::<Option<Vec<_>>>()
                    {
                        Some(bs) => bytes.extend(bs),
                        None => bytes.extend_from_slice(t.as_bytes()),
                    }
                }
                vec![String::from_utf8_lossy(&bytes).into_owned()]
            }
            DecodeStep::Replace(from, to) => tokens
                .into_iter()
                .map(|t| t.replace(from.as_str(), to))
                .collect(),
            DecodeStep::ByteFallback => {
                let mut out = Vec::new();
                let mut pending: Vec<u8> = Vec::new();
                let flush = |pending: &mut Vec<u8>, out: &mut Vec<String>| {
                    if pending.is_empty() {
                        return;
                    }
                    match String::from_utf8(pending.clone()) {
                        Ok(s) => out.push(s),
                        Err(_) => out.extend(pending.iter().map(|_| "\u{FFFD}".to_string())),
                    }
                    pending.clear();
                };
                for t in tokens {
                    let byte = (t.len() == 6 && t.starts_with("<0x") && t.ends_with('>'))
                        .then(|| u8::from_str_radix(&t[3..5], 16).ok())
                        .flatten();
                    match byte {
                        Some(b) => pending.push(b),
                        None => {
                            flush(&mut pending, &mut out);
                            out.push(t);
                        }
                    }
                }
                flush(&mut pending, &mut out);
                out
            }
            DecodeStep::Fuse => vec![tokens.concat()],
            DecodeStep::Strip(c, start, stop) => tokens
                .into_iter()
                .map(|t| {
                    let chars: Vec<char> = t.chars().collect();
                    let lead = chars.iter().take(*start).take_while(|&&x| x == *c).count();
                    let trail = chars[lead..]
                        .iter()
                        .rev()
                        .take(*stop)
                        .take_while(|&&x| x == *c)
                        .count();
                    chars[lead..chars.len() - trail].iter().collect()
                })
                .collect(),
            DecodeStep::Metaspace(r, prepended) => tokens
                .into_iter()
                .enumerate()
                .map(|(i, t)| {
                    t.chars()
                        .filter_map(|c| match c {
                            c if c == *r && i == 0 && *prepended => None,
                            c if c == *r => Some(' '),
                            c => Some(c),
                        })
                        .collect()
                })
                .collect(),
        }
    }
}
