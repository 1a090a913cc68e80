// Blockwise 8-bit AdamW: one thread block per 256-element quantization block, one thread per
// element, with the CPU reference's maps, order of operations and rounding (compile with
// --fmad=false so no multiply-add is fused): codes, absmax and parameters match it bit for bit.
#include "common.cuh"

constexpr int QBLOCK = 256;

// bitsandbytes' search: 7 halvings from the middle code, then the midpoint comparison.
__device__ int nearest_code(const float* code, float x) {
    int pivot = 127, upper_pivot = 255, lower_pivot = 0;
    float lower = -1.0f, upper = 1.0f;
    float val = code[pivot];
    for (int step = 64; step > 0; step >>= 1) {
        if (x > val) { lower_pivot = pivot; lower = val; pivot += step; }
        else { upper_pivot = pivot; upper = val; pivot -= step; }
        val = code[pivot];
    }
    if (upper_pivot == 255) upper = code[upper_pivot];
    if (lower_pivot == 0) lower = code[lower_pivot];
    if (x > val) return x > (upper + val) * 0.5f ? upper_pivot : pivot;
    return x < (lower + val) * 0.5f ? lower_pivot : pivot;
}

__device__ unsigned char quantize(const float* code, float x, bool is_signed) {
    int q = nearest_code(code, x);
    if (is_signed && (signbit(code[q]) != signbit(x))) q += x > 0.0f ? 1 : -1;
    return (unsigned char)q;
}

template <typename G>
__device__ void adam8bit_step(float* p, const G* g, unsigned char* qm, unsigned char* qv, float* absmax_m,
                              float* absmax_v, const float* code_m, const float* code_v, long long n, float b1,
                              float b2, float eps, float c1, float c2, float decay) {
    __shared__ float sm_code[2][256];
    __shared__ float scratch[32];
    sm_code[0][threadIdx.x] = code_m[threadIdx.x];
    sm_code[1][threadIdx.x] = code_v[threadIdx.x];
    __syncthreads();
    const long long i = (long long)blockIdx.x * QBLOCK + threadIdx.x;
    const bool in = i < n;
    float gj = in ? (float)g[i] : 0.0f;
    bool finite = in && is_finite(gj);
    float m = 0.0f, v = 0.0f;
    if (finite) {
        float am = absmax_m[blockIdx.x], av = absmax_v[blockIdx.x];
        float t1 = sm_code[0][qm[i]] * am;
        m = b1 * t1 + (1.0f - b1) * gj;
        float t2 = sm_code[1][qv[i]] * av;
        v = b2 * t2 + (1.0f - b2) * gj * gj;
    }
    float new_am = block_max(fabsf(m), scratch);
    float new_av = block_max(v, scratch);
    if (finite) {
        float w = p[i] * decay;
        p[i] = w - c1 * m / (sqrtf(v) * c2 + eps);
    }
    float im = new_am > 0.0f ? 1.0f / new_am : 0.0f;
    float iv = new_av > 0.0f ? 1.0f / new_av : 0.0f;
    if (in) {
        qm[i] = quantize(sm_code[0], m * im, true);
        qv[i] = quantize(sm_code[1], v * iv, false);
    }
    if (threadIdx.x == 0) {
        absmax_m[blockIdx.x] = new_am;
        absmax_v[blockIdx.x] = new_av;
    }
}

#define ADAM8_ENTRY(name, G)                                                                                  \
    extern "C" __global__ void __launch_bounds__(256) name(                                                   \
        float* p, const G* g, unsigned char* qm, unsigned char* qv, float* absmax_m, float* absmax_v,         \
        const float* code_m, const float* code_v, long long n, float b1, float b2, float eps, float c1,       \
        float c2, float decay) {                                                                              \
        adam8bit_step<G>(p, g, qm, qv, absmax_m, absmax_v, code_m, code_v, n, b1, b2, eps, c1, c2, decay);    \
    }

ADAM8_ENTRY(adam8bit_step_f32, float)
ADAM8_ENTRY(adam8bit_step_f16, __half)
