//! Prints the shipped synthetic corpus (the `train` default), one sample per paragraph: what
//! `scripts/gpt2_fixture.py` trains its byte-level BPE on.
fn main() {
    let cfg = rewind_lab::train::TrainConfig::default();
    let texts = rewind_lab::data::synthetic_corpus(cfg.corpus);
    println!("{}", texts.join("\n\n"));
}
