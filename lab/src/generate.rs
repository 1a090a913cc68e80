//! `rewind generate`: a prompt's continuation, a token at a time through the model's key/value
//! cache — greedy by default (transformers' `generate(do_sample=False)`: the first of the
//! largest logits), or sampled with a temperature and nucleus (top-p) filter from a seeded
//! generator. `--chat` wraps the prompt in the model's chat format (ChatGLM3's) and stops at its
//! turn-ending tokens.

use crate::data::Tokenizer;
use crate::models::CausalLm;
use crate::models::lm::Checkpoint;
use rewind::error::{Error, Result};
use rewind::indices::Indices;
use rewind::nn::attention::KvCache;
use std::path::PathBuf;

/// How the next token is chosen.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Choice {
    /// The largest logit (the first on ties), as `torch.argmax`.
    Greedy,
    /// Sampled from softmax(logits / temperature) restricted to the smallest set of tokens
    /// whose probability reaches `top_p` (transformers' `TopPLogitsWarper`), seeded.
    Sample {
        /// Divides the logits (> 0).
        temperature: f64,
        /// Nucleus mass in (0, 1].
        top_p: f64,
        /// The generator's seed.
        seed: u64,
    },
}

/// What `rewind generate` is asked.
#[derive(Debug, Clone)]
pub struct GenerateOptions {
    /// A transformers checkpoint.
    pub model: Checkpoint,
    /// A PEFT LoRA adapter directory to apply.
    pub adapter: Option<PathBuf>,
    /// The prompt text.
    pub prompt: String,
    /// Wrap the prompt as one user turn of the model's chat format.
    pub chat: bool,
    /// Tokens to add at most.
    pub max_new_tokens: usize,
    /// Greedy or sampled.
    pub choice: Choice,
}

/// What `rewind generate` produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Generated {
    /// The prompt as the model saw it.
    pub prompt_ids: Vec<u32>,
    /// The tokens added (a stop token, when one came, included as transformers includes it).
    pub new_ids: Vec<u32>,
    /// The added tokens' text (a final stop token left out).
    pub text: String,
    /// Seconds spent adding tokens after the prompt's forward.
    pub decode_seconds: f64,
}

impl Generated {
    /// One JSON line: `prompt_ids`, `new_ids`, `text`, `tokens_per_s`.
    pub fn json(&self) -> String {
        serde_json::json!({
            "prompt_ids": self.prompt_ids,
            "new_ids": self.new_ids,
            "text": self.text,
            "tokens_per_s": self.tokens_per_s(),
        })
        .to_string()
    }

    /// Tokens per second after the first (the prompt's forward excluded).
    pub fn tokens_per_s(&self) -> f64 {
        let n = self.new_ids.len().saturating_sub(1);
        if n == 0 || self.decode_seconds <= 0.0 {
            0.0
        } else {
            n as f64 / self.decode_seconds
        }
    }
}

/// splitmix64: the sampler's generator (its own, so sampling draws nothing from the engine's).
struct SplitMix(u64);

impl SplitMix {
    fn next_f64(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The index of the largest value, the first on ties (NaN never wins).
fn argmax(v: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] || v[best].is_nan() {
            best = i;
        }
    }
    best
}

/// A token drawn from `logits` / `temperature`, within the top-`p` nucleus.
fn sample(logits: &[f32], temperature: f64, top_p: f64, rng: &mut SplitMix) -> usize {
    let scaled: Vec<f64> = logits.iter().map(|&l| f64::from(l) / temperature).collect();
    let max = scaled.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let mut probs: Vec<(usize, f64)> = scaled
        .iter()
        .enumerate()
        .map(|(i, &l)| (i, (l - max).exp()))
        .collect();
    let total: f64 = probs.iter().map(|p| p.1).sum();
    // Most probable first; the nucleus is the shortest prefix whose mass reaches top_p.
    probs.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    let mut mass = 0.0;
    let mut keep = probs.len();
    for (k, p) in probs.iter().enumerate() {
        mass += p.1 / total;
        if mass >= top_p {
            keep = k + 1;
            break;
        }
    }
    let kept = &probs[..keep.max(1)];
    let sum: f64 = kept.iter().map(|p| p.1).sum();
    let mut u = rng.next_f64() * sum;
    for p in kept {
        u -= p.1;
        if u < 0.0 {
            return p.0;
        }
    }
    kept[kept.len() - 1].0
}

/// Adds up to `max_new` tokens to `prompt` (≥ 1 token) with `model`, stopping after a token in
/// `stop`; returns them and the seconds spent after the prompt's forward.
pub fn continue_ids(
    model: &dyn CausalLm,
    prompt: &[u32],
    max_new: usize,
    stop: &[u32],
    choice: Choice,
) -> Result<(Vec<u32>, f64)> {
    if prompt.is_empty() {
        return Err(Error::invalid("generate", "the prompt has no tokens"));
    }
    let positions = model.max_positions();
    let _ng = rewind::tape::NoGradGuard::new();
    let mut cache: Vec<KvCache> = Vec::new();
    let mut rng = match choice {
        Choice::Sample { seed, .. } => SplitMix(seed),
        Choice::Greedy => SplitMix(0),
    };
    let mut input: Vec<i64> = prompt.iter().map(|&t| i64::from(t)).collect();
    let mut out = Vec::new();
    let mut start = None;
    if prompt.len() > positions {
        return Err(Error::invalid(
            "generate",
            format!(
                "the prompt's {} tokens exceed the model's {positions} positions",
                prompt.len()
            ),
        ));
    }
    while out.len() < max_new {
        let n = input.len();
        let logits = model.decode(
            &Indices::new(std::mem::take(&mut input), &[1, n])?,
            &mut cache,
        )?;
        let v = logits.shape()[2];
        let last = logits.narrow(1, n - 1, 1)?.to_vec_f32();
        let next = match choice {
            Choice::Greedy => argmax(&last[..v]),
            Choice::Sample {
                temperature, top_p, ..
            } => sample(&last[..v], temperature, top_p, &mut rng),
        } as u32;
        start.get_or_insert_with(std::time::Instant::now);
        out.push(next);
        // The next input would sit at position prompt + out − 1.
        if stop.contains(&next) || prompt.len() + out.len() > positions {
            break;
        }
        input.push(i64::from(next));
    }
    Ok((out, start.map_or(0.0, |s| s.elapsed().as_secs_f64())))
}

/// The ids a checkpoint stops generating at: `eos_token_id` of `generation_config.json` (where
/// ChatGLM3 lists its turn-ending tokens too), else of `config.json`.
pub fn stop_ids(ckpt: &Checkpoint) -> Result<Vec<u32>> {
    let path = ckpt.dir.join("generation_config.json");
    let generation: serde_json::Value = match path.exists() {
        true => {
            let text =
                std::fs::read_to_string(&path).map_err(|e| Error::io("generate", &path, e))?;
            serde_json::from_str(&text)
                .map_err(|e| Error::invalid("generate", format!("{}: {e}", path.display())))?
        }
        false => serde_json::Value::Null,
    };
    let eos = match &generation["eos_token_id"] {
        serde_json::Value::Null => &ckpt.config["eos_token_id"],
        v => v,
    };
    let ids = match eos {
        serde_json::Value::Array(a) => a.iter().filter_map(|v| v.as_u64()).collect(),
        v => v.as_u64().into_iter().collect::<Vec<_>>(),
    };
    Ok(ids
        .into_iter()
        .filter_map(|i| u32::try_from(i).ok())
        .collect())
}

/// The prompt's ids: the text with the tokenizer's special tokens, or with `chat` one user turn
/// of ChatGLM3's format ending where the assistant's answer starts (`build_chat_input`).
pub fn prompt_ids(tok: &Tokenizer, prompt: &str, chat: bool) -> Result<Vec<u32>> {
    if !chat {
        return tok.encode_with_special_tokens(prompt);
    }
    let id = |t: &str| {
        tok.special_id(t).ok_or_else(|| {
            Error::invalid(
                "generate",
                format!("--chat needs a chat format rewind knows (ChatGLM3's); this tokenizer has no {t}"),
            )
        })
    };
    let mut ids = vec![id("[gMASK]")?, id("sop")?, id("<|user|>")?];
    ids.extend(tok.encode("\n")?);
    ids.extend(tok.encode(prompt)?);
    ids.push(id("<|assistant|>")?);
    Ok(ids)
}

/// Runs `rewind generate`.
pub fn run(opts: &GenerateOptions) -> Result<Generated> {
    let model = crate::eval::load_model(&opts.model, opts.adapter.as_deref())?;
    let tok = Tokenizer::from_dir(&opts.model.dir)?;
    let prompt_ids = prompt_ids(&tok, &opts.prompt, opts.chat)?;
    if prompt_ids.len() >= model.max_positions() {
        return Err(Error::invalid(
            "generate",
            format!(
                "the prompt's {} tokens leave none of the model's {} positions",
                prompt_ids.len(),
                model.max_positions()
            ),
        ));
    }
    let stop = stop_ids(&opts.model)?;
    let (new_ids, decode_seconds) = continue_ids(
        model.as_ref(),
        &prompt_ids,
        opts.max_new_tokens,
        &stop,
        opts.choice,
    )?;
    let shown = match new_ids.last() {
        Some(t) if stop.contains(t) => &new_ids[..new_ids.len() - 1],
        _ => &new_ids[..],
    };
    Ok(Generated {
        text: tok.decode(shown),
        prompt_ids,
        new_ids,
        decode_seconds,
    })
}
