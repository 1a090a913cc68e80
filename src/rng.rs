//! The engine's random generator: counter-based (a SplitMix64 hash of seed and position), so
//! any element's draw is independent of thread count, and the whole state is two integers
//! that checkpointing saves and restores to replay dropout masks exactly.

use std::cell::Cell;

/// The generator's full state: replaying from a saved state repeats every draw.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GeneratorState {
    /// The seed set by [`manual_seed`].
    pub seed: u64,
    /// How many values have been drawn since seeding.
    pub offset: u64,
}

thread_local! {
    static STATE: Cell<GeneratorState> = const { Cell::new(GeneratorState { seed: 0x5EED, offset: 0 }) };
}

/// Seeds the thread's generator (PyTorch's `torch.manual_seed`).
pub fn manual_seed(seed: u64) {
    STATE.with(|s| s.set(GeneratorState { seed, offset: 0 }));
}

/// The current state.
pub fn get_state() -> GeneratorState {
    STATE.with(|s| s.get())
}

/// Restores a state saved by [`get_state`].
pub fn set_state(state: GeneratorState) {
    STATE.with(|s| s.set(state));
}

/// Reserves `n` consecutive draws and returns the state they start from.
pub(crate) fn reserve(n: usize) -> GeneratorState {
    STATE.with(|s| {
        let st = s.get();
        s.set(GeneratorState {
            seed: st.seed,
            offset: st.offset.wrapping_add(n as u64),
        });
        st
    })
}

/// The `i`-th 64-bit draw after `state`.
pub(crate) fn draw(state: GeneratorState, i: u64) -> u64 {
    let mut z = state.seed.wrapping_mul(0xD1B5_4A32_D192_ED03).wrapping_add(
        state
            .offset
            .wrapping_add(i)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15),
    );
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The `i`-th draw after `state` as a uniform value in [0, 1) with 53 random bits.
pub(crate) fn uniform(state: GeneratorState, i: u64) -> f64 {
    (draw(state, i) >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// `n` uniform draws in [0, 1).
pub fn uniform_vec(n: usize) -> Vec<f64> {
    let st = reserve(n);
    (0..n as u64).map(|i| uniform(st, i)).collect()
}

/// The `i`-th standard-normal draw after `state` (Box–Muller on a pair of uniforms).
fn normal(state: GeneratorState, i: u64) -> f64 {
    let u1 = 1.0 - uniform(state, 2 * i);
    let u2 = uniform(state, 2 * i + 1);
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// `n` standard-normal draws.
pub fn normal_vec(n: usize) -> Vec<f64> {
    let st = reserve(2 * n);
    (0..n as u64).map(|i| normal(st, i)).collect()
}

/// Fills `out` with the draws [`normal_vec`] would return, rounded to f32.
pub fn fill_normal_f32(out: &mut [f32]) {
    let st = reserve(2 * out.len());
    for (i, o) in out.iter_mut().enumerate() {
        *o = normal(st, i as u64) as f32;
    }
}
