//! A run's tokenized data: the synthetic corpus, a text file or conversations in the
//! model's chat format, split into training and held-out samples.

use super::config::TrainConfig;
use crate::data::{
    Sample, Tokenizer, read_conversations, read_paragraphs, render_chatglm3, synthetic_corpus,
};
use rewind::error::{Error, Result};

/// Tokenized samples: the training split and a held-out split for the final loss.
#[derive(Debug, Clone)]
pub struct Data {
    /// The BPE trained on the whole corpus, or the model's (`tokenizer.json` or SentencePiece's `tokenizer.model`).
    pub tokenizer: Tokenizer,
    /// Training samples (truncated to `max_len`).
    pub train: Vec<Sample>,
    /// Held-out samples.
    pub eval: Vec<Sample>,
    /// Content hash of the text or conversation file trained on (`None`: the synthetic
    /// corpus).
    pub text_hash: Option<u64>,
    /// Conversations left out because truncation to `max_len` left none of their assistant
    /// tokens.
    pub skipped: usize,
}

impl Data {
    /// Generates (or reads), tokenizes and splits the corpus of `cfg` (the last
    /// `eval_fraction` held out).
    pub fn build(cfg: &TrainConfig) -> Result<Data> {
        if let Some(path) = &cfg.data_file {
            return Data::conversations(cfg, path);
        }
        let (texts, text_hash) = match &cfg.text_file {
            None => (synthetic_corpus(cfg.corpus), None),
            Some(path) => {
                let (texts, hash) = read_paragraphs("train", path)?;
                (texts, Some(hash))
            }
        };
        if texts.len() < 2 {
            return Err(Error::invalid(
                "train",
                format!(
                    "the corpus holds {} samples; at least 2 are needed",
                    texts.len()
                ),
            ));
        }
        let tokenizer = match &cfg.model {
            Some(ckpt) => Tokenizer::from_dir(&ckpt.dir)?,
            None => Tokenizer::train(&texts, cfg.vocab)?,
        };
        let mut samples = Vec::with_capacity(texts.len());
        for t in &texts {
            let mut ids = tokenizer.encode_with_special_tokens(t)?;
            ids.truncate(cfg.max_len);
            if ids.len() >= 2 {
                samples.push(Sample { ids, labels: None });
            }
        }
        Data::split(cfg, tokenizer, samples, text_hash, 0)
    }

    /// Conversations (`cfg.data_file`) rendered in the model's chat format, the loss on the
    /// assistant's turns.
    fn conversations(cfg: &TrainConfig, path: &std::path::Path) -> Result<Data> {
        let ckpt = cfg.model.as_ref().ok_or_else(|| {
            Error::invalid("train", "conversation data needs --model (its chat format)")
        })?;
        let tokenizer = Tokenizer::from_dir(&ckpt.dir)?;
        let (convs, hash) = read_conversations(path)?;
        let (mut samples, mut skipped) = (Vec::with_capacity(convs.len()), 0);
        for c in &convs {
            let (mut ids, mut labels) = render_chatglm3(&tokenizer, c)?;
            ids.truncate(cfg.max_len);
            labels.truncate(cfg.max_len);
            if labels.iter().skip(1).any(|&l| l >= 0) {
                samples.push(Sample {
                    ids,
                    labels: Some(labels),
                });
            } else {
                skipped += 1;
            }
        }
        Data::split(cfg, tokenizer, samples, Some(hash), skipped)
    }

    /// The last `eval_fraction` of `samples` held out.
    fn split(
        cfg: &TrainConfig,
        tokenizer: Tokenizer,
        mut samples: Vec<Sample>,
        text_hash: Option<u64>,
        skipped: usize,
    ) -> Result<Data> {
        if samples.len() < 2 {
            return Err(Error::invalid(
                "train",
                "fewer than 2 samples have 2 or more tokens",
            ));
        }
        let n_eval = ((samples.len() as f64 * cfg.eval_fraction) as usize).min(samples.len() - 1);
        let eval = samples.split_off(samples.len() - n_eval);
        Ok(Data {
            tokenizer,
            train: samples,
            eval,
            text_hash,
            skipped,
        })
    }
}
