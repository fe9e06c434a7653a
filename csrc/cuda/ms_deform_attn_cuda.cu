// CUDA kernels of multi-scale deformable attention: float, double, half and bfloat16 inputs,
// accumulation in at::opmath_type (float for half/bfloat16).
//
// Forward: one thread per output element (batch, query, head, channel), grid-stride, so
// any batch size and any D work (no im2col_step: the batch is just part of the index).
// Backward: one warp per (batch, query, head); lanes walk the channels, the dot products
// behind the location and weight gradients are reduced with warp shuffles, and the value
// gradient is scattered with atomics into an opmath_type buffer (cast back to the input
// dtype at the end for half/bfloat16, so no precision is lost in the sum itself).
#include "ms_deform_attn.h"

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/cuda/Atomic.cuh>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <algorithm>

namespace adaseg {
namespace {

constexpr int kThreads = 256;
constexpr int kWarp = 32;

struct Dims {
  int64_t n, s, m, d, lq, levels, points;
};

// Same convention as the CPU kernel (grid_sample, align_corners=False, zero padding): pixel
// coordinate = loc * size - 0.5; x = -1 exactly still touches column 0 with weight 0.
// idx[j] is the token offset of corner j inside the level, or -1 when outside; corners are
// (x0,y0), (x1,y0), (x0,y1), (x1,y1).
template <typename acc_t>
__device__ __forceinline__ bool bilinear_taps(acc_t loc_x, acc_t loc_y, int64_t h, int64_t w,
                                              int64_t idx[4], acc_t wt[4], acc_t& fx,
                                              acc_t& fy) {
  const acc_t x = loc_x * static_cast<acc_t>(w) - acc_t(0.5);
  const acc_t y = loc_y * static_cast<acc_t>(h) - acc_t(0.5);
  if (!(x >= acc_t(-1) && y >= acc_t(-1) && x < static_cast<acc_t>(w) &&
        y < static_cast<acc_t>(h))) {
    return false;
  }
  const acc_t xf = floor(x), yf = floor(y);
  const int64_t x0 = static_cast<int64_t>(xf), y0 = static_cast<int64_t>(yf);
  const int64_t x1 = x0 + 1, y1 = y0 + 1;
  fx = x - xf;
  fy = y - yf;
  const acc_t gx = acc_t(1) - fx, gy = acc_t(1) - fy;
  const bool x0_in = x0 >= 0, x1_in = x1 < w, y0_in = y0 >= 0, y1_in = y1 < h;
  idx[0] = (x0_in && y0_in) ? y0 * w + x0 : -1;
  idx[1] = (x1_in && y0_in) ? y0 * w + x1 : -1;
  idx[2] = (x0_in && y1_in) ? y1 * w + x0 : -1;
  idx[3] = (x1_in && y1_in) ? y1 * w + x1 : -1;
  wt[0] = gx * gy;
  wt[1] = fx * gy;
  wt[2] = gx * fy;
  wt[3] = fx * fy;
  return true;
}

template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
  for (int offset = kWarp / 2; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

template <typename scalar_t>
__global__ void forward_kernel(Dims dm, const int64_t* __restrict__ shapes,
                               const int64_t* __restrict__ starts,
                               const scalar_t* __restrict__ value,
                               const scalar_t* __restrict__ loc,
                               const scalar_t* __restrict__ attn, scalar_t* __restrict__ out) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t md = dm.m * dm.d;
  const int64_t lp = dm.levels * dm.points;
  const int64_t total = dm.n * dm.lq * dm.m * dm.d;
  const int64_t stride = static_cast<int64_t>(blockDim.x) * gridDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += stride) {
    const int64_t c = i % dm.d;
    const int64_t row = i / dm.d;  // (n * Lq + q) * M + m
    const int64_t m = row % dm.m;
    const int64_t n = row / (dm.m * dm.lq);
    const scalar_t* v_head = value + n * dm.s * md + m * dm.d + c;
    const scalar_t* row_loc = loc + row * lp * 2;
    const scalar_t* row_attn = attn + row * lp;
    acc_t acc = 0;
    for (int64_t l = 0; l < dm.levels; ++l) {
      const int64_t h = shapes[2 * l], w = shapes[2 * l + 1];
      const scalar_t* v_level = v_head + starts[l] * md;
      for (int64_t p = 0; p < dm.points; ++p) {
        const int64_t k = l * dm.points + p;
        int64_t idx[4];
        acc_t wt[4], fx, fy;
        if (!bilinear_taps<acc_t>(static_cast<acc_t>(row_loc[2 * k]),
                                  static_cast<acc_t>(row_loc[2 * k + 1]), h, w, idx, wt, fx, fy)) {
          continue;
        }
        const acc_t a = static_cast<acc_t>(row_attn[k]);
        acc_t sampled = 0;
        for (int j = 0; j < 4; ++j) {
          if (idx[j] >= 0) sampled += wt[j] * static_cast<acc_t>(v_level[idx[j] * md]);
        }
        acc += a * sampled;
      }
    }
    out[i] = static_cast<scalar_t>(acc);
  }
}

// grad_value_acc has value's shape in acc_t (it is grad_value itself for float/double).
template <typename scalar_t>
__global__ void backward_kernel(Dims dm, const int64_t* __restrict__ shapes,
                                const int64_t* __restrict__ starts,
                                const scalar_t* __restrict__ grad_out,
                                const scalar_t* __restrict__ value,
                                const scalar_t* __restrict__ loc,
                                const scalar_t* __restrict__ attn,
                                at::opmath_type<scalar_t>* __restrict__ grad_value_acc,
                                scalar_t* __restrict__ grad_loc, scalar_t* __restrict__ grad_attn) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t md = dm.m * dm.d;
  const int64_t lp = dm.levels * dm.points;
  const int64_t rows = dm.n * dm.lq * dm.m;
  const int lane = threadIdx.x % kWarp;
  const int64_t warps = static_cast<int64_t>(blockDim.x) * gridDim.x / kWarp;
  // The loop bound is uniform across a warp, so every lane reaches every shuffle.
  for (int64_t row = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / kWarp;
       row < rows; row += warps) {
    const int64_t m = row % dm.m;
    const int64_t n = row / (dm.m * dm.lq);
    const scalar_t* g = grad_out + row * dm.d;
    const scalar_t* v_head = value + n * dm.s * md + m * dm.d;
    acc_t* gv_head = grad_value_acc + n * dm.s * md + m * dm.d;
    const scalar_t* row_loc = loc + row * lp * 2;
    const scalar_t* row_attn = attn + row * lp;
    for (int64_t l = 0; l < dm.levels; ++l) {
      const int64_t h = shapes[2 * l], w = shapes[2 * l + 1];
      const int64_t start = starts[l];
      for (int64_t p = 0; p < dm.points; ++p) {
        const int64_t k = l * dm.points + p;
        int64_t idx[4];
        acc_t wt[4], fx, fy;
        const bool inside =
            bilinear_taps<acc_t>(static_cast<acc_t>(row_loc[2 * k]),
                                 static_cast<acc_t>(row_loc[2 * k + 1]), h, w, idx, wt, fx, fy);
        if (!inside) {  // uniform across the warp: every lane read the same location
          if (lane == 0) {
            grad_loc[(row * lp + k) * 2] = scalar_t(0);
            grad_loc[(row * lp + k) * 2 + 1] = scalar_t(0);
            grad_attn[row * lp + k] = scalar_t(0);
          }
          continue;
        }
        const acc_t a = static_cast<acc_t>(row_attn[k]);
        acc_t s[4] = {0, 0, 0, 0};  // <grad_out, corner value>, this lane's channels
        for (int64_t c = lane; c < dm.d; c += kWarp) {
          const acc_t gc = static_cast<acc_t>(g[c]);
          for (int j = 0; j < 4; ++j) {
            if (idx[j] < 0) continue;
            const int64_t off = (start + idx[j]) * md + c;
            s[j] += gc * static_cast<acc_t>(v_head[off]);
            gpuAtomicAdd(gv_head + off, a * wt[j] * gc);
          }
        }
        for (int j = 0; j < 4; ++j) s[j] = warp_sum(s[j]);
        if (lane == 0) {
          grad_attn[row * lp + k] =
              static_cast<scalar_t>(wt[0] * s[0] + wt[1] * s[1] + wt[2] * s[2] + wt[3] * s[3]);
          const acc_t gx = (acc_t(1) - fy) * (s[1] - s[0]) + fy * (s[3] - s[2]);
          const acc_t gy = (acc_t(1) - fx) * (s[2] - s[0]) + fx * (s[3] - s[1]);
          grad_loc[(row * lp + k) * 2] = static_cast<scalar_t>(a * gx * static_cast<acc_t>(w));
          grad_loc[(row * lp + k) * 2 + 1] = static_cast<scalar_t>(a * gy * static_cast<acc_t>(h));
        }
      }
    }
  }
}

Dims dims_of(const at::Tensor& value, const at::Tensor& sampling_locations) {
  return {value.size(0),
          value.size(1),
          value.size(2),
          value.size(3),
          sampling_locations.size(1),
          sampling_locations.size(3),
          sampling_locations.size(4)};
}

unsigned int blocks_for(int64_t threads) {
  // Grid-stride loops cover the rest; 2^20 blocks saturate any current GPU.
  return static_cast<unsigned int>(
      std::min<int64_t>((threads + kThreads - 1) / kThreads, int64_t(1) << 20));
}

at::Tensor forward_cuda(const at::Tensor& value, const at::Tensor& spatial_shapes,
                        const at::Tensor& level_start_index, const at::Tensor& sampling_locations,
                        const at::Tensor& attention_weights) {
  check_ms_deform_attn_inputs(value, spatial_shapes, level_start_index, sampling_locations,
                              attention_weights, "ms_deform_attn");
  const c10::cuda::CUDAGuard guard(value.device());
  const Dims dm = dims_of(value, sampling_locations);
  auto out = at::empty({dm.n, dm.lq, dm.m * dm.d}, value.options());
  if (out.numel() == 0) return out;
  const auto v = value.contiguous();
  const auto loc = sampling_locations.contiguous();
  const auto attn = attention_weights.contiguous();
  const auto shapes = spatial_shapes.contiguous();
  const auto starts = level_start_index.contiguous();
  const auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, value.scalar_type(),
                                  "ms_deform_attn_forward_cuda", [&] {
    forward_kernel<scalar_t><<<blocks_for(out.numel()), kThreads, 0, stream>>>(
        dm, shapes.data_ptr<int64_t>(), starts.data_ptr<int64_t>(), v.data_ptr<scalar_t>(),
        loc.data_ptr<scalar_t>(), attn.data_ptr<scalar_t>(), out.data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> backward_cuda(
    const at::Tensor& grad_output, const at::Tensor& value, const at::Tensor& spatial_shapes,
    const at::Tensor& level_start_index, const at::Tensor& sampling_locations,
    const at::Tensor& attention_weights) {
  check_ms_deform_attn_inputs(value, spatial_shapes, level_start_index, sampling_locations,
                              attention_weights, "ms_deform_attn_backward");
  check_ms_deform_attn_grad_output(grad_output, value, sampling_locations);
  const c10::cuda::CUDAGuard guard(value.device());
  const Dims dm = dims_of(value, sampling_locations);
  // The value gradient is accumulated with atomics in opmath precision.
  const auto acc_dtype = at::toOpMathType(value.scalar_type());
  auto grad_value_acc = at::zeros(value.sizes(), value.options().dtype(acc_dtype));
  auto grad_loc = at::zeros(sampling_locations.sizes(), value.options());
  auto grad_attn = at::zeros(attention_weights.sizes(), value.options());
  if (grad_output.numel() > 0 && grad_loc.numel() > 0) {
    const auto g = grad_output.contiguous();
    const auto v = value.contiguous();
    const auto loc = sampling_locations.contiguous();
    const auto attn = attention_weights.contiguous();
    const auto shapes = spatial_shapes.contiguous();
    const auto starts = level_start_index.contiguous();
    const auto stream = c10::cuda::getCurrentCUDAStream();
    const int64_t rows = dm.n * dm.lq * dm.m;
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, value.scalar_type(),
                                    "ms_deform_attn_backward_cuda", [&] {
      using acc_t = at::opmath_type<scalar_t>;
      backward_kernel<scalar_t><<<blocks_for(rows * kWarp), kThreads, 0, stream>>>(
          dm, shapes.data_ptr<int64_t>(), starts.data_ptr<int64_t>(), g.data_ptr<scalar_t>(),
          v.data_ptr<scalar_t>(), loc.data_ptr<scalar_t>(), attn.data_ptr<scalar_t>(),
          grad_value_acc.data_ptr<acc_t>(), grad_loc.data_ptr<scalar_t>(),
          grad_attn.data_ptr<scalar_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }
  auto grad_value = grad_value_acc.scalar_type() == value.scalar_type()
                        ? grad_value_acc
                        : grad_value_acc.to(value.scalar_type());
  return {grad_value, grad_loc, grad_attn};
}

}  // namespace
}  // namespace adaseg

TORCH_LIBRARY_IMPL(adaseg, CUDA, m) {
  m.impl("ms_deform_attn", &adaseg::forward_cuda);
  m.impl("ms_deform_attn_backward", &adaseg::backward_cuda);
}
