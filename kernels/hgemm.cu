// hgemm: C[M,N] = op(A)·op(B) with f16 inputs, f32 accumulation on tensor cores
// (mma.sync m16n8k16), f32 or f16 output. Block tile 128×128×32, 8 warps (2×4, 64×32 each),
// 3-stage cp.async pipeline in dynamic shared memory. Any M, N, K: chunks that are not fully
// inside the matrix (or not 16-byte aligned, or transposed) are loaded element by element
// with zero fill. op(A) = A [M,K] or Aᵀ with A stored [K,M] (TA); likewise B [K,N] or [N,K] (TB).
#include "common.cuh"

namespace hg {
constexpr int BM = 128, BN = 128, BK = 32, STAGES = 3, THREADS = 256;
constexpr int A_LD = BK + 8;   // halves per A row in shared memory (padding against conflicts)
constexpr int B_LD = BN + 8;   // halves per B row
constexpr int A_TILE = BM * A_LD, B_TILE = BK * B_LD;
}  // namespace hg

// Loads A's tile (rows m0.., cols k0..) into sA[BM][A_LD].
template <bool TA>
REWIND_DEVICE void load_a(__half* sA, const __half* A, int M, int K, int m0, int k0) {
    using namespace hg;
    for (int c = threadIdx.x; c < BM * BK / 8; c += THREADS) {
        int r = c / (BK / 8), col = (c % (BK / 8)) * 8;
        int gm = m0 + r, gk = k0 + col;
        __half* dst = sA + r * A_LD + col;
        if (!TA) {
            const __half* src = A + (size_t)gm * K + gk;
            bool full = gm < M && gk + 8 <= K && ((reinterpret_cast<size_t>(src) & 15) == 0);
            if (full) { cp_async16(dst, src, 16); continue; }
            for (int e = 0; e < 8; ++e) dst[e] = (gm < M && gk + e < K) ? A[(size_t)gm * K + gk + e] : __float2half(0.0f);
        } else {
            for (int e = 0; e < 8; ++e) dst[e] = (gm < M && gk + e < K) ? A[(size_t)(gk + e) * M + gm] : __float2half(0.0f);
        }
    }
}

// Loads B's tile (rows k0.., cols n0..) into sB[BK][B_LD].
template <bool TB>
REWIND_DEVICE void load_b(__half* sB, const __half* B, int K, int N, int k0, int n0) {
    using namespace hg;
    for (int c = threadIdx.x; c < BK * BN / 8; c += THREADS) {
        int r = c / (BN / 8), col = (c % (BN / 8)) * 8;
        int gk = k0 + r, gn = n0 + col;
        __half* dst = sB + r * B_LD + col;
        if (!TB) {
            const __half* src = B + (size_t)gk * N + gn;
            bool full = gk < K && gn + 8 <= N && ((reinterpret_cast<size_t>(src) & 15) == 0);
            if (full) { cp_async16(dst, src, 16); continue; }
            for (int e = 0; e < 8; ++e) dst[e] = (gk < K && gn + e < N) ? B[(size_t)gk * N + gn + e] : __float2half(0.0f);
        } else {
            for (int e = 0; e < 8; ++e) dst[e] = (gk < K && gn + e < N) ? B[(size_t)(gn + e) * K + gk] : __float2half(0.0f);
        }
    }
}

REWIND_DEVICE void ldmatrix_x4(unsigned* r, const __half* p) {
    unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(p));
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(s));
}

REWIND_DEVICE void ldmatrix_x4_trans(unsigned* r, const __half* p) {
    unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(p));
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(s));
}

REWIND_DEVICE void mma16816(float* c, const unsigned* a, const unsigned* b) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

template <bool TA, bool TB, typename OutT>
REWIND_DEVICE void hgemm(const __half* A, const __half* B, OutT* C, int M, int N, int K) {
    using namespace hg;
    extern __shared__ __align__(16) unsigned char smem_raw[];
    __half* sA = reinterpret_cast<__half*>(smem_raw);
    __half* sB = sA + STAGES * A_TILE;
    const int m0 = blockIdx.y * BM, n0 = blockIdx.x * BN;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int wm = (warp / 4) * 64, wn = (warp % 4) * 32;
    float acc[4][4][4];
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j)
#pragma unroll
            for (int e = 0; e < 4; ++e) acc[i][j][e] = 0.0f;

    const int tiles = (K + BK - 1) / BK;
#pragma unroll
    for (int s = 0; s < STAGES - 1; ++s) {
        if (s < tiles) {
            load_a<TA>(sA + s * A_TILE, A, M, K, m0, s * BK);
            load_b<TB>(sB + s * B_TILE, B, K, N, s * BK, n0);
        }
        cp_async_commit();
    }
    for (int t = 0; t < tiles; ++t) {
        cp_async_wait<STAGES - 2>();
        __syncthreads();
        int pre = t + STAGES - 1;
        if (pre < tiles) {
            load_a<TA>(sA + (pre % STAGES) * A_TILE, A, M, K, m0, pre * BK);
            load_b<TB>(sB + (pre % STAGES) * B_TILE, B, K, N, pre * BK, n0);
        }
        cp_async_commit();
        const __half* a = sA + (t % STAGES) * A_TILE;
        const __half* b = sB + (t % STAGES) * B_TILE;
#pragma unroll
        for (int kk = 0; kk < BK; kk += 16) {
            unsigned af[4][4], bf[4][2];
#pragma unroll
            for (int i = 0; i < 4; ++i) {
                int row = wm + i * 16 + (lane % 16);
                int col = kk + (lane / 16) * 8;
                ldmatrix_x4(af[i], a + row * A_LD + col);
            }
#pragma unroll
            for (int j = 0; j < 4; j += 2) {
                // Lanes 0–15 address k rows 0–15 of n-tile j, lanes 16–31 those of n-tile j+1.
                int krow = kk + (lane % 16);
                int col = wn + (j + lane / 16) * 8;
                unsigned r[4];
                ldmatrix_x4_trans(r, b + krow * B_LD + col);
                bf[j][0] = r[0]; bf[j][1] = r[1]; bf[j + 1][0] = r[2]; bf[j + 1][1] = r[3];
            }
#pragma unroll
            for (int i = 0; i < 4; ++i)
#pragma unroll
                for (int j = 0; j < 4; ++j) mma16816(acc[i][j], af[i], bf[j]);
        }
    }
    cp_async_wait<0>();
    const int g = lane >> 2, q = lane & 3;
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j)
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                int r = m0 + wm + i * 16 + g + (e >= 2 ? 8 : 0);
                int c = n0 + wn + j * 8 + q * 2 + (e & 1);
                if (r < M && c < N) {
                    if constexpr (sizeof(OutT) == 4) C[(size_t)r * N + c] = acc[i][j][e];
                    else C[(size_t)r * N + c] = __float2half(acc[i][j][e]);
                }
            }
}

#define HGEMM_ENTRY(name, TA, TB, OutT)                                                             \
    extern "C" __global__ void __launch_bounds__(256) name(const __half* A, const __half* B, OutT* C, \
                                                           int M, int N, int K) {                   \
        hgemm<TA, TB, OutT>(A, B, C, M, N, K);                                                      \
    }

HGEMM_ENTRY(hgemm_nn_f32, false, false, float)
HGEMM_ENTRY(hgemm_nn_f16, false, false, __half)
HGEMM_ENTRY(hgemm_nt_f32, false, true, float)
HGEMM_ENTRY(hgemm_nt_f16, false, true, __half)
HGEMM_ENTRY(hgemm_tn_f32, true, false, float)
HGEMM_ENTRY(hgemm_tn_f16, true, false, __half)
