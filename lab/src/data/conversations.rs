//! Conversation data as THUDM's ChatGLM3 `finetune_demo` takes it: JSON lines of
//! `{"conversations": [{"role": "system" | "user" | "assistant", "content": …}, …]}`, rendered
//! in the model's chat format with the loss on the assistant's turns only. A line that is not
//! such an object is an error naming its line number; nothing is skipped.

use super::Tokenizer;
use rewind::error::{Error, Result};
use rewind::ops::loss::IGNORE_INDEX;
use std::path::Path;

/// Who speaks a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Instructions (no loss).
    System,
    /// The user's turn (no loss).
    User,
    /// The model's turn: what is learnt.
    Assistant,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
        }
    }
}

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// Its speaker.
    pub role: Role,
    /// Its text.
    pub content: String,
}

/// The conversations of a JSON-lines file (blank lines ignored) and the file's content hash.
pub fn read_conversations(path: &Path) -> Result<(Vec<Vec<Message>>, u64)> {
    let bytes = std::fs::read(path).map_err(|e| Error::io("data", path, e))?;
    let hash = super::Fnv1a::of(&bytes);
    let text = String::from_utf8(bytes).map_err(|e| {
        Error::invalid("data", format!("{} is not UTF-8 text: {e}", path.display()))
    })?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let bad = |what: String| {
            Error::invalid("data", format!("{} line {}: {what}", path.display(), n + 1))
        };
        let v: serde_json::Value =
            serde_json::from_str(line).map_err(|e| bad(format!("not JSON ({e})")))?;
        if !v["tools"].is_null() {
            return Err(bad(
                "`tools` is not supported (the demo raises NotImplementedError too)".into(),
            ));
        }
        let messages = v["conversations"]
            .as_array()
            .ok_or_else(|| bad("no `conversations` list".into()))?;
        let mut conv = Vec::with_capacity(messages.len());
        for (i, m) in messages.iter().enumerate() {
            let role = match m["role"].as_str() {
                Some("system") => Role::System,
                Some("user") => Role::User,
                Some("assistant") => Role::Assistant,
                other => {
                    return Err(bad(format!(
                        "message {i}: role {other:?} is not system, user or assistant"
                    )));
                }
            };
            let content = m["content"]
                .as_str()
                .ok_or_else(|| bad(format!("message {i}: `content` is not a string")))?;
            conv.push(Message {
                role,
                content: content.to_string(),
            });
        }
        if !conv.iter().any(|m| m.role == Role::Assistant) {
            return Err(bad("no assistant message: nothing to learn".into()));
        }
        out.push(conv);
    }
    Ok((out, hash))
}

/// A conversation's ids and labels (transformers' convention: the label of token i is the
/// target at i, the model shifts; −100 where nothing is learnt) in ChatGLM3's format, as the
/// demo's `process_batch` builds them: `[gMASK] sop`, then each message as `<|role|>` +
/// `encode("\n")` + `encode(content)`, then `</s>`; a token is learnt when the token before
/// it belongs to an assistant message (so the assistant's text and what ends its turn).
pub fn render_chatglm3(tok: &Tokenizer, conv: &[Message]) -> Result<(Vec<u32>, Vec<i64>)> {
    let id = |t: &str| {
        tok.special_id(t).ok_or_else(|| {
            Error::invalid(
                "data",
                format!("conversation data needs ChatGLM3's tokenizer (it has no {t})"),
            )
        })
    };
    let mut ids = vec![id("[gMASK]")?, id("sop")?];
    let mut learnt = vec![false, false];
    for m in conv {
        ids.push(id(&format!("<|{}|>", m.role.name()))?);
        ids.extend(tok.encode("\n")?);
        ids.extend(tok.encode(&m.content)?);
        learnt.resize(ids.len(), m.role == Role::Assistant);
    }
    ids.push(
        tok.eos_id()
            .ok_or_else(|| Error::invalid("data", "the tokenizer has no </s>"))?,
    );
    let labels = ids
        .iter()
        .enumerate()
        .map(|(i, &t)| match i > 0 && learnt[i - 1] {
            true => t as i64,
            false => IGNORE_INDEX,
        })
        .collect();
    Ok((ids, labels))
}
