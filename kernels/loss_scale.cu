// Dynamic loss scaling on the device.
// unscale_found_inf_f32: one launch over many gradient tensors (pointers and element-offset
// prefix sums in device arrays): g *= inv_scale in place, found_inf = 1 if any incoming
// (still scaled) value is inf/NaN, as PyTorch's _amp_foreach_non_finite_check_and_unscale_.
// update_scale: PyTorch's _amp_update_scale_ with the growth tracker kept on the device.
#include "common.cuh"

extern "C" __global__ void __launch_bounds__(256) unscale_found_inf_f32(
    float* const* ptrs, const long long* offsets, int tensors, long long total, const float* inv_scale, int* found_inf) {
    const float inv = *inv_scale;
    bool bad = false;
    long long stride = (long long)gridDim.x * blockDim.x;
    int t = 0;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += stride) {
        // Advance to the tensor holding element i (offsets are increasing; i only grows).
        while (t + 1 < tensors && offsets[t + 1] <= i) ++t;
        float* p = ptrs[t] + (i - offsets[t]);
        float v = *p;
        bad |= !is_finite(v);
        *p = v * inv;
    }
    if (__any_sync(0xffffffffu, bad) && (threadIdx.x & 31) == 0) *found_inf = 1;
}

extern "C" __global__ void update_scale(float* scale, int* growth_tracker, const int* found_inf,
                                        float growth_factor, float backoff_factor, int growth_interval) {
    if (threadIdx.x != 0 || blockIdx.x != 0) return;
    if (*found_inf) {
        *scale = *scale * backoff_factor;
        *growth_tracker = 0;
    } else {
        int successful = *growth_tracker + 1;
        if (successful == growth_interval) {
            float grown = *scale * growth_factor;
            if (is_finite(grown)) *scale = grown;
            *growth_tracker = 0;
        } else {
            *growth_tracker = successful;
        }
    }
}
