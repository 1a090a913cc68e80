//! What a micro-kernel is. Each computes an mr×nr tile of C from a panel of A and a panel of B,
//! and every one computes each element the same way: one fused multiply-add per k, in k order,
//! starting from the tile's value (or from 0). So kernels of any width, on any CPU with or
//! without FMA hardware, give the same bits; they differ only in speed.

/// A micro-kernel: the mr×nr tile at `c` (rows `ldc` apart) becomes, element by element, the
/// chain `acc = fma(a_q, b_q, acc)` over the `kc` values of the packed panels `a` (`[kc][mr]`)
/// and `b` (`[kc][nr]`), with `acc` starting from the tile, or from 0 when `zero`. (A bf16
/// pair kernel's value is two k, see `pairs.rs`; its C is f32.) The C ABI: a fixed calling
/// convention, so a test can run a kernel's machine code under an emulator (`emulated.rs`).
///
/// # Safety
/// `a` and `b` hold `kc·mr` and `kc·nr` elements; `c` points to `mr` rows of `nr` writable
/// elements `ldc` apart, initialised unless `zero`; none of them alias.
pub(super) type Run<T, C> =
    unsafe extern "C" fn(kc: usize, a: *const T, b: *const T, c: *mut C, ldc: usize, zero: bool);

/// A micro-kernel and the block sizes it runs best with: operands of type `T`, C of type `C`.
#[derive(Debug)]
pub struct Spec<T: 'static, C: 'static = T> {
    /// Its name (`"avx2 6×16"`).
    pub name: &'static str,
    /// Rows of its tile.
    pub mr: usize,
    /// Columns of its tile.
    pub nr: usize,
    /// Rows of A packed at once (a multiple of `mr`; the block stays in the L2 cache).
    pub mc: usize,
    /// k values per block (the panels stay in the L1 cache).
    pub kc: usize,
    /// Columns of B packed at once (a multiple of `nr`).
    pub nc: usize,
    pub(super) run: Run<T, C>,
    /// Whether this CPU runs it.
    pub(super) supported: fn() -> bool,
}
