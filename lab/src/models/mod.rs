//! The lab's models: the repro model (the shape of the real failure), a small decoder-only
//! transformer, and transformers checkpoints of the families in [`lm::FAMILIES`] (GPT-2, Llama,
//! Qwen2, ChatGLM3, GLM). The residual MLP of the benchmarks is the engine's [`rewind::nn::ResidualMlp`].

pub mod glm;
mod glm_config;
pub mod gpt2;
pub mod hf;
pub mod llama;
pub mod lm;
pub mod peft;
pub mod prefix;
pub mod repro;
pub mod rope_config;
pub mod transformer;

pub use glm::{Glm, GlmConfig};
pub use gpt2::{Gpt2, Gpt2Config};
pub use llama::{Llama, LlamaConfig};

pub use lm::{CausalLm, FAMILIES, Family, family};
pub use repro::{ReproConfig, ReproModel};
pub(crate) use rewind::nn::attention::causal_attention;
pub use transformer::{Transformer, TransformerConfig};
