// Shared helpers for rewind's kernels (compiled by NVRTC; no host headers).
#pragma once
#include <cuda_fp16.h>

#define REWIND_DEVICE __device__ __forceinline__

// 16-byte asynchronous global→shared copy; `bytes` < 16 zero-fills the rest (0 = all zeros).
REWIND_DEVICE void cp_async16(void* smem, const void* gmem, int bytes) {
    unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem), "r"(bytes));
}
REWIND_DEVICE void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N> REWIND_DEVICE void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }

REWIND_DEVICE bool is_finite(float x) { return !isnan(x) && !isinf(x); }

// Block-wide max of non-negative values over `blockDim.x` (a multiple of 32) threads.
REWIND_DEVICE float block_max(float v, float* scratch) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    int warps = blockDim.x >> 5;
    v = lane < warps ? scratch[lane] : 0.0f;
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    __syncthreads();
    return v;
}
