//! A SentencePiece `tokenizer.model` (the `sentencepiece` library's `ModelProto`), encoded as
//! the library encodes: the normalizer's whitespace handling (identity rules only), then
//! - BPE: the text split into characters (user-defined pieces whole and frozen), the adjacent
//!   pair whose concatenation is the highest-scoring piece merged first (ties: leftmost) until
//!   none is a piece;
//! - unigram: the Viterbi path of highest total score over every piece that matches (user-
//!   defined pieces score length·max − 0.1, an uncovered character min − 10 as unknown;
//!   adjacent unknown characters one unknown piece);
//!
//! then unknown pieces become their UTF-8 bytes as `<0xXX>` pieces when `byte_fallback` is on.
//! Unused pieces are split back into what made them (BPE). A normalizer with precompiled rules
//! (`nmt_nfkc`, …) is an error naming it.

use super::err;
use rewind::error::Result;
use std::collections::{BinaryHeap, HashMap};

/// `▁`, which stands for a space inside pieces.
const SPACE: &str = "\u{2581}";
/// The score an unknown character loses below the lowest piece (unigram's `kUnkPenalty`).
const UNK_PENALTY: f32 = 10.0;

/// A piece's type (`ModelProto.SentencePiece.Type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PieceType {
    Normal,
    Unknown,
    Control,
    UserDefined,
    Unused,
    Byte,
}

/// One vocabulary entry.
#[derive(Debug, Clone)]
pub struct Piece {
    pub text: String,
    pub score: f32,
    pub kind: PieceType,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Algorithm {
    Unigram,
    Bpe,
}

/// A parsed `tokenizer.model`.
#[derive(Debug, Clone)]
pub struct SentencePiece {
    pub pieces: Vec<Piece>,
    algorithm: Algorithm,
    /// Normal, user-defined and unused pieces (what text can become), by text.
    vocab: HashMap<String, u32>,
    /// Control, unknown and byte pieces, by text.
    reserved: HashMap<String, u32>,
    /// User-defined pieces, longest first (matched whole in the text).
    user_defined: Vec<String>,
    /// The longest piece of `vocab`, in bytes.
    longest: usize,
    unk_id: u32,
    pub bos_id: Option<u32>,
    pub eos_id: Option<u32>,
    byte_ids: Option<[u32; 256]>,
    add_dummy_prefix: bool,
    remove_extra_whitespaces: bool,
    escape_whitespaces: bool,
    treat_whitespace_as_suffix: bool,
    min_score: f32,
    max_score: f32,
}

/// A protobuf message's fields: (field number, value).
enum Field<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed32(u32),
    Fixed64,
}

fn malformed() -> rewind::error::Error {
    err("tokenizer.model: not a SentencePiece model (malformed protobuf)")
}

fn varint(buf: &mut &[u8]) -> Result<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = buf.split_first().ok_or_else(malformed)?;
        *buf = rest;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(malformed())
}

/// Every field of the message in `buf`, in order.
fn fields(mut buf: &[u8]) -> Result<Vec<(u64, Field<'_>)>> {
    let mut out = Vec::new();
    while !buf.is_empty() {
        let key = varint(&mut buf)?;
        let value = match key & 7 {
            0 => Field::Varint(varint(&mut buf)?),
            1 => {
                buf = buf.get(8..).ok_or_else(malformed)?;
                Field::Fixed64
            }
            2 => {
                let n = usize::try_from(varint(&mut buf)?).map_err(|_| malformed())?;
                if n > buf.len() {
                    return Err(malformed());
                }
                let (data, rest) = buf.split_at(n);
                buf = rest;
                Field::Bytes(data)
            }
            5 => {
                let (b, rest) = buf.split_first_chunk::<4>().ok_or_else(malformed)?;
                buf = rest;
                Field::Fixed32(u32::from_le_bytes(*b))
            }
            _ => return Err(malformed()),
        };
        out.push((key >> 3, value));
    }
    Ok(out)
}

fn text(b: &[u8]) -> Result<String> {
    String::from_utf8(b.to_vec()).map_err(|_| err("tokenizer.model: a piece is not UTF-8"))
}

/// A trainer-spec id (`-1` for none).
fn id_of(v: u64) -> Option<u32> {
    u32::try_from(v as i64).ok()
}

impl SentencePiece {
    /// Parses a `tokenizer.model`'s bytes.
    pub fn parse(bytes: &[u8]) -> Result<SentencePiece> {
        let mut pieces = Vec::new();
        let mut algorithm = Algorithm::Unigram;
        let (mut unk_id, mut bos_id, mut eos_id) = (Some(0), Some(1), Some(2));
        let mut byte_fallback = false;
        let mut treat_whitespace_as_suffix = false;
        let (mut add_dummy_prefix, mut remove_extra_whitespaces, mut escape_whitespaces) =
            (true, true, true);
        for (number, field) in fields(bytes)? {
            match (number, field) {
                (1, Field::Bytes(b)) => {
                    let mut piece = Piece {
                        text: String::new(),
                        score: 0.0,
                        kind: PieceType::Normal,
                    };
                    for (n, f) in fields(b)? {
                        match (n, f) {
                            (1, Field::Bytes(t)) => piece.text = text(t)?,
                            (2, Field::Fixed32(s)) => piece.score = f32::from_bits(s),
                            (3, Field::Varint(t)) => {
                                piece.kind = match t {
                                    1 => PieceType::Normal,
                                    2 => PieceType::Unknown,
                                    3 => PieceType::Control,
                                    4 => PieceType::UserDefined,
                                    5 => PieceType::Unused,
                                    6 => PieceType::Byte,
                                    other => {
                                        return Err(err(format!(
                                            "tokenizer.model: piece type {other} is not supported"
                                        )));
                                    }
                                }
                            }
                            _ => {}
                        }
                    }
                    pieces.push(piece);
                }
                (2, Field::Bytes(b)) => {
                    for (n, f) in fields(b)? {
                        match (n, f) {
                            (3, Field::Varint(t)) => {
                                algorithm = match t {
                                    1 => Algorithm::Unigram,
                                    2 => Algorithm::Bpe,
                                    3 => {
                                        return Err(err(
                                            "tokenizer.model: model type WORD is not supported (unigram, BPE)",
                                        ));
                                    }
                                    4 => {
                                        return Err(err(
                                            "tokenizer.model: model type CHAR is not supported (unigram, BPE)",
                                        ));
                                    }
                                    other => {
                                        return Err(err(format!(
                                            "tokenizer.model: model type {other} is not supported"
                                        )));
                                    }
                                }
                            }
                            (24, Field::Varint(v)) => treat_whitespace_as_suffix = v != 0,
                            (35, Field::Varint(v)) => byte_fallback = v != 0,
                            (40, Field::Varint(v)) => unk_id = id_of(v),
                            (41, Field::Varint(v)) => bos_id = id_of(v),
                            (42, Field::Varint(v)) => eos_id = id_of(v),
                            _ => {}
                        }
                    }
                }
                (3, Field::Bytes(b)) => {
                    let mut name = String::new();
                    for (n, f) in fields(b)? {
                        match (n, f) {
                            (1, Field::Bytes(t)) => name = text(t)?,
                            (2, Field::Bytes(map)) if !map.is_empty() => {
                                return Err(err(format!(
                                    "tokenizer.model: normalizer `{name}` with precompiled rules is not supported (identity only)"
                                )));
                            }
                            (3, Field::Varint(v)) => add_dummy_prefix = v != 0,
                            (4, Field::Varint(v)) => remove_extra_whitespaces = v != 0,
                            (5, Field::Varint(v)) => escape_whitespaces = v != 0,
                            (6, Field::Bytes(rules)) if !rules.is_empty() => {
                                return Err(err(
                                    "tokenizer.model: normalization_rule_tsv is not supported",
                                ));
                            }
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        if pieces.is_empty() {
            return Err(err("tokenizer.model: no pieces"));
        }
        let n = pieces.len();
        let valid = |id: Option<u32>| id.filter(|&i| (i as usize) < n);
        let unk_id = valid(unk_id)
            .filter(|&i| pieces[i as usize].kind == PieceType::Unknown)
            .ok_or_else(|| err("tokenizer.model: no unknown piece at unk_id"))?;
        let (mut vocab, mut reserved) = (HashMap::new(), HashMap::new());
        let mut user_defined = Vec::new();
        for (id, p) in pieces.iter().enumerate() {
            let id = u32::try_from(id).map_err(|_| err("tokenizer.model: too many pieces"))?;
            match p.kind {
                PieceType::Normal | PieceType::UserDefined | PieceType::Unused => {
                    vocab.insert(p.text.clone(), id);
                }
                PieceType::Control | PieceType::Unknown | PieceType::Byte => {
                    reserved.insert(p.text.clone(), id);
                }
            }
            if p.kind == PieceType::UserDefined && !p.text.is_empty() {
                user_defined.push(p.text.clone());
            }
        }
        user_defined.sort_by_key(|t| std::cmp::Reverse(t.len()));
        let byte_ids = if byte_fallback {
            let mut ids = [0u32; 256];
            for (b, slot) in ids.iter_mut().enumerate() {
                *slot = *reserved.get(&format!("<0x{b:02X}>")).ok_or_else(|| {
                    err(format!(
                        "tokenizer.model: byte_fallback without the piece <0x{b:02X}>"
                    ))
                })?;
            }
            Some(ids)
        } else {
            None
        };
        let normal = pieces.iter().filter(|p| p.kind == PieceType::Normal);
        let min_score = normal.clone().map(|p| p.score).fold(f32::MAX, f32::min);
        let max_score = normal.map(|p| p.score).fold(f32::MIN_POSITIVE, f32::max);
        Ok(SentencePiece {
            longest: vocab.keys().map(String::len).max().unwrap_or(1),
            pieces,
            algorithm,
            vocab,
            reserved,
            user_defined,
            unk_id,
            bos_id: valid(bos_id),
            eos_id: valid(eos_id),
            byte_ids,
            add_dummy_prefix,
            remove_extra_whitespaces,
            escape_whitespaces,
            treat_whitespace_as_suffix,
            min_score,
            max_score,
        })
    }

    /// The id of a piece's text, the unknown id when there is none (`PieceToId`).
    pub fn piece_to_id(&self, piece: &str) -> u32 {
        self.reserved
            .get(piece)
            .or_else(|| self.vocab.get(piece))
            .copied()
            .unwrap_or(self.unk_id)
    }

    /// The normalizer (identity rules): spaces trimmed and squeezed when
    /// `remove_extra_whitespaces`, `▁` in front (`add_dummy_prefix`), spaces as `▁`.
    fn normalize(&self, input: &str) -> String {
        let space = if self.escape_whitespaces { SPACE } else { " " };
        let mut input = input;
        if self.remove_extra_whitespaces {
            input = input.trim_start_matches(' ');
        }
        if input.is_empty() {
            return String::new();
        }
        let mut out = String::with_capacity(input.len() + 3);
        if !self.treat_whitespace_as_suffix && self.add_dummy_prefix {
            out.push_str(space);
        }
        let mut prev_space = self.remove_extra_whitespaces;
        let mut rest = input;
        while !rest.is_empty() {
            // A user-defined piece passes whole; otherwise one character.
            let len = self
                .user_defined
                .iter()
                .find(|u| rest.starts_with(u.as_str()))
                .map_or_else(
                    || rest.chars().next().map_or(1, char::len_utf8),
                    |u| u.len(),
                );
            let mut piece = &rest[..len];
            while prev_space && piece.starts_with(' ') {
                piece = &piece[1..];
            }
            if !piece.is_empty() {
                for c in piece.chars() {
                    if c == ' ' {
                        out.push_str(space);
                    } else {
                        out.push(c);
                    }
                }
                prev_space = piece.ends_with(' ');
            }
            rest = &rest[len..];
            prev_space = prev_space && self.remove_extra_whitespaces;
        }
        if self.remove_extra_whitespaces {
            while out.ends_with(space) {
                out.truncate(out.len() - space.len());
            }
        }
        if self.treat_whitespace_as_suffix && self.add_dummy_prefix {
            out.push_str(space);
        }
        out
    }

    /// Appends the ids of `text` (the library's `encode(text)`, no BOS or EOS) to `out`.
    pub fn encode(&self, text: &str, out: &mut Vec<u32>) {
        let normalized = self.normalize(text);
        let mut pieces = Vec::new();
        match self.algorithm {
            Algorithm::Bpe => self.bpe(&normalized, &mut pieces),
            Algorithm::Unigram => self.unigram(&normalized, &mut pieces),
        }
        for (piece, id) in pieces {
            match (&self.byte_ids, id == self.unk_id) {
                (Some(bytes), true) => out.extend(piece.bytes().map(|b| bytes[b as usize])),
                _ => out.push(id),
            }
        }
    }

    /// The length of the symbol at the start of `s`: a user-defined piece (frozen) or a character.
    fn symbol_len(&self, s: &str) -> (usize, bool) {
        match self.user_defined.iter().find(|u| s.starts_with(u.as_str())) {
            Some(u) => (u.len(), true),
            None => (s.chars().next().map_or(1, char::len_utf8), false),
        }
    }

    /// sentencepiece's `bpe::Model::Encode`.
    fn bpe<'t>(&self, s: &'t str, out: &mut Vec<(&'t str, u32)>) {
        struct Symbol {
            start: usize,
            len: usize,
            prev: Option<usize>,
            next: Option<usize>,
            frozen: bool,
        }
        // (score, Reverse(left), left, right, merged length): highest score, then leftmost.
        #[derive(PartialEq)]
        struct Pair(f32, usize, usize, usize);
        impl Eq for Pair {}
        impl PartialOrd for Pair {
            fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
                Some(self.cmp(o))
            }
        }
        impl Ord for Pair {
            fn cmp(&self, o: &Self) -> std::cmp::Ordering {
                self.0
                    .partial_cmp(&o.0)
                    .unwrap_or(std::cmp::Ordering::Equal)
                    .then(o.1.cmp(&self.1))
            }
        }
        let mut symbols = Vec::new();
        let mut at = 0;
        while at < s.len() {
            let (len, frozen) = self.symbol_len(&s[at..]);
            let i = symbols.len();
            symbols.push(Symbol {
                start: at,
                len,
                prev: i.checked_sub(1),
                next: (at + len < s.len()).then_some(i + 1),
                frozen,
            });
            at += len;
        }
        let mut agenda = BinaryHeap::new();
        // Merged pieces that are unused, with what made them (for resegmenting).
        let mut rev_merge: HashMap<&str, (&str, &str)> = HashMap::new();
        let add = |symbols: &Vec<Symbol>,
                   agenda: &mut BinaryHeap<Pair>,
                   rev: &mut HashMap<&'t str, (&'t str, &'t str)>,
                   l: Option<usize>,
                   r: Option<usize>| {
            let (Some(l), Some(r)) = (l, r) else { return };
            let (a, b) = (&symbols[l], &symbols[r]);
            if a.frozen || b.frozen {
                return;
            }
            let merged = &s[a.start..a.start + a.len + b.len];
            if let Some(&id) = self.vocab.get(merged) {
                let p = &self.pieces[id as usize];
                agenda.push(Pair(p.score, l, r, merged.len()));
                if p.kind == PieceType::Unused {
                    rev.insert(
                        merged,
                        (&s[a.start..a.start + a.len], &s[b.start..b.start + b.len]),
                    );
                }
            }
        };
        for i in 1..symbols.len() {
            add(&symbols, &mut agenda, &mut rev_merge, Some(i - 1), Some(i));
        }
        while let Some(Pair(_, l, r, len)) = agenda.pop() {
            let (a, b) = (&symbols[l], &symbols[r]);
            if a.len == 0 || b.len == 0 || a.len + b.len != len {
                continue;
            }
            let next = b.next;
            symbols[l].len = len;
            symbols[l].next = next;
            if let Some(n) = next {
                symbols[n].prev = Some(l);
            }
            symbols[r].len = 0;
            let prev = symbols[l].prev;
            add(&symbols, &mut agenda, &mut rev_merge, prev, Some(l));
            add(&symbols, &mut agenda, &mut rev_merge, Some(l), next);
        }
        fn resegment<'t>(
            sp: &SentencePiece,
            w: &'t str,
            rev: &HashMap<&'t str, (&'t str, &'t str)>,
            out: &mut Vec<(&'t str, u32)>,
        ) {
            let id = sp.piece_to_id(w);
            match rev.get(w) {
                Some(&(l, r)) if sp.pieces[id as usize].kind == PieceType::Unused => {
                    resegment(sp, l, rev, out);
                    resegment(sp, r, rev, out);
                }
                _ => out.push((w, id)),
            }
        }
        let mut i = (!symbols.is_empty()).then_some(0);
        while let Some(k) = i {
            let sym = &symbols[k];
            resegment(self, &s[sym.start..sym.start + sym.len], &rev_merge, out);
            i = sym.next;
        }
    }

    /// sentencepiece's `unigram::Model::EncodeOptimized`: the best path by f32 score, the
    /// first found kept on ties.
    fn unigram<'t>(&self, s: &'t str, out: &mut Vec<(&'t str, u32)>) {
        #[derive(Clone, Copy)]
        struct Best {
            score: f32,
            start: Option<usize>,
            id: u32,
        }
        let n = s.len();
        let mut best = vec![
            Best {
                score: 0.0,
                start: None,
                id: 0,
            };
            n + 1
        ];
        let unk_score = self.min_score - UNK_PENALTY;
        let mut start = 0;
        while start < n {
            let base = best[start].score;
            let char_len = s[start..].chars().next().map_or(1, char::len_utf8);
            let mut single = false;
            let mut end = start;
            for c in s[start..].chars() {
                end += c.len_utf8();
                if end - start > self.longest {
                    break;
                }
                let Some(&id) = self.vocab.get(&s[start..end]) else {
                    continue;
                };
                let p = &self.pieces[id as usize];
                if p.kind == PieceType::Unused {
                    continue;
                }
                let score = if p.kind == PieceType::UserDefined {
                    (end - start) as f32 * self.max_score - 0.1
                } else {
                    p.score
                };
                let candidate = score + base;
                let t = &mut best[end];
                if t.start.is_none() || candidate > t.score {
                    *t = Best {
                        score: candidate,
                        start: Some(start),
                        id,
                    };
                }
                if end - start == char_len {
                    single = true;
                }
            }
            if !single {
                let candidate = base + unk_score;
                let t = &mut best[start + char_len];
                if t.start.is_none() || candidate > t.score {
                    *t = Best {
                        score: candidate,
                        start: Some(start),
                        id: self.unk_id,
                    };
                }
            }
            start += char_len;
        }
        let first = out.len();
        let mut end = n;
        while end > 0 {
            let b = best[end];
            let start = b.start.expect("every char boundary is reached");
            // Adjacent unknown characters are one unknown piece.
            let ours = out.len() > first;
            match out.last_mut() {
                Some((piece, id)) if ours && *id == self.unk_id && b.id == *id => {
                    *piece = &s[start..end + piece.len()];
                }
                _ => out.push((&s[start..end], b.id)),
            }
            end = start;
        }
        out[first..].reverse();
    }

    /// The text of `ids` as the library's `decode`: `▁` back to spaces (the first piece's
    /// leading one dropped under `add_dummy_prefix`), byte pieces joined into UTF-8 (invalid bytes as U+FFFD),
    /// control pieces as nothing, the unknown piece as ` ⁇ `.
    pub fn decode(&self, ids: &[u32]) -> String {
        let mut out = String::new();
        let mut bytes = Vec::new();
        // The dummy prefix's `▁` is dropped from the first piece that is text.
        let mut first = self.add_dummy_prefix && !self.treat_whitespace_as_suffix;
        let flush = |bytes: &mut Vec<u8>, out: &mut String| {
            if !bytes.is_empty() {
                out.push_str(&String::from_utf8_lossy(bytes));
                bytes.clear();
            }
        };
        for &id in ids {
            let Some(p) = self.pieces.get(id as usize) else {
                continue;
            };
            match p.kind {
                PieceType::Byte => {
                    first = false;
                    let hex = p.text.trim_start_matches("<0x").trim_end_matches('>');
                    if let Ok(b) = u8::from_str_radix(hex, 16) {
                        bytes.push(b);
                    }
                }
                PieceType::Control => flush(&mut bytes, &mut out),
                PieceType::Unknown => {
                    first = false;
                    flush(&mut bytes, &mut out);
                    out.push_str(" \u{2047} ");
                }
                _ => {
                    flush(&mut bytes, &mut out);
                    let text = match first {
                        true => p.text.strip_prefix(SPACE).unwrap_or(&p.text),
                        false => &p.text,
                    };
                    // With remove_extra_whitespaces, a piece that was only the dummy prefix
                    // leaves the next one to drop its `▁` too.
                    first = first && text.is_empty() && self.remove_extra_whitespaces;
                    out.push_str(&text.replace(SPACE, " "));
                }
            }
        }
        flush(&mut bytes, &mut out);
        out
    }
}
