// CPU kernels of multi-scale deformable attention (float and double).
//
// Forward: one task per (batch, query, head); for each level and point the four bilinear
// taps are fused with the attention weight and accumulated straight into the output row,
// so no (Lq x L*P x D) intermediate exists. The inner loops run over the D channels of a
// head, which are contiguous in value (N, S, M, D) and in the output (N, Lq, M*D).
//
// Backward, race-free and deterministic (no atomics, no per-thread buffers, the same
// summation order for any thread count, so bitwise identical results): the value gradient
// is a scatter-add into grad_value[n, :, m, :], so tasks own (batch, heads) slices and walk
// the queries in order. When such tasks split evenly over the threads, one pass computes
// all three gradients; otherwise two passes:
//   1. one task per (batch, query, head): the gradients of the locations and the weights,
//      which only read value and grad_output and write the task's own entries;
//   2. one task per (batch, head, channel block): the value gradient, each task owning
//      grad_value[n, :, m, d0:d1].
#include "ms_deform_attn.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <vector>

namespace adaseg {
namespace {

// Sizes of one call; all strides follow from them because the kernels see contiguous tensors.
struct Dims {
  int64_t n, s, m, d, lq, levels, points;
};

struct Level {
  int64_t h, w, start;
};

// The four bilinear taps of one sampling point: corners (x0,y0), (x1,y0), (x0,y1), (x1,y1).
template <typename T>
struct Taps {
  int64_t idx[4];  // token offset inside the level, or -1 when the corner is outside
  T w[4];          // bilinear weights
  T fx, fy;        // fractional parts of the pixel coordinates, for the derivatives
};

// grid_sample's convention with align_corners=False: pixel coordinate = loc * size - 0.5.
// Returns false when no corner lies inside the level. x = -1 exactly still touches column 0
// with weight 0, which matters for the location gradient (as in grid_sample), hence >= -1.
template <typename T>
inline bool bilinear_taps(T loc_x, T loc_y, const Level& lv, Taps<T>& t) {
  const T x = loc_x * static_cast<T>(lv.w) - T(0.5);
  const T y = loc_y * static_cast<T>(lv.h) - T(0.5);
  // Written so that NaN fails too.
  if (!(x >= T(-1) && y >= T(-1) && x < static_cast<T>(lv.w) && y < static_cast<T>(lv.h))) {
    return false;
  }
  // floor via truncation (exact here, |x| is bounded by the level size): without -msse4.1
  // std::floor is a libm call, two per sample.
  int64_t x0 = static_cast<int64_t>(x), y0 = static_cast<int64_t>(y);
  x0 -= static_cast<T>(x0) > x;
  y0 -= static_cast<T>(y0) > y;
  const T xf = static_cast<T>(x0), yf = static_cast<T>(y0);
  const int64_t x1 = x0 + 1, y1 = y0 + 1;
  t.fx = x - xf;
  t.fy = y - yf;
  const T gx = T(1) - t.fx, gy = T(1) - t.fy;
  // From the bounds above: x0 <= w-1 and x1 >= 0 always hold; only x0 >= 0, x1 < w can fail.
  const bool x0_in = x0 >= 0, x1_in = x1 < lv.w, y0_in = y0 >= 0, y1_in = y1 < lv.h;
  t.idx[0] = (x0_in && y0_in) ? y0 * lv.w + x0 : -1;
  t.idx[1] = (x1_in && y0_in) ? y0 * lv.w + x1 : -1;
  t.idx[2] = (x0_in && y1_in) ? y1 * lv.w + x0 : -1;
  t.idx[3] = (x1_in && y1_in) ? y1 * lv.w + x1 : -1;
  t.w[0] = gx * gy;
  t.w[1] = t.fx * gy;
  t.w[2] = gx * t.fy;
  t.w[3] = t.fx * t.fy;
  return true;
}

std::vector<Level> read_levels(const at::Tensor& spatial_shapes,
                               const at::Tensor& level_start_index) {
  const int64_t levels = spatial_shapes.size(0);
  const auto shapes = spatial_shapes.contiguous();
  const auto starts = level_start_index.contiguous();
  const int64_t* hw = shapes.data_ptr<int64_t>();
  const int64_t* st = starts.data_ptr<int64_t>();
  std::vector<Level> out(levels);
  for (int64_t l = 0; l < levels; ++l) out[l] = {hw[2 * l], hw[2 * l + 1], st[l]};
  return out;
}

// Lanes of the blocked dot products: independent partial sums let the compiler vectorise
// without reassociating a single float sum (which it may not do without -ffast-math).
constexpr int64_t kLanes = 8;

// out[0:d] += sum_k c[k] * v[k][0:d]
template <typename T>
inline void axpy4(T* __restrict__ out, const T* __restrict__ v0, const T* __restrict__ v1,
                  const T* __restrict__ v2, const T* __restrict__ v3, const T* c, int64_t d) {
  const T c0 = c[0], c1 = c[1], c2 = c[2], c3 = c[3];
  for (int64_t i = 0; i < d; ++i) out[i] += c0 * v0[i] + c1 * v1[i] + c2 * v2[i] + c3 * v3[i];
}

// dots[k] = <g, v[k]> for k < 4, over d channels.
template <typename T>
inline void dot4(const T* __restrict__ g, const T* __restrict__ v0, const T* __restrict__ v1,
                 const T* __restrict__ v2, const T* __restrict__ v3, int64_t d, T* dots) {
  // The lane arrays are only indexed by the unrolled constant j, so they live in vector
  // registers; the tail goes to scalars (indexing the arrays with a variable would force
  // them to the stack and cost a store-to-load round trip per block).
  T a0[kLanes] = {}, a1[kLanes] = {}, a2[kLanes] = {}, a3[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= d; i += kLanes) {
    for (int64_t j = 0; j < kLanes; ++j) {
      const T gj = g[i + j];
      a0[j] += gj * v0[i + j];
      a1[j] += gj * v1[i + j];
      a2[j] += gj * v2[i + j];
      a3[j] += gj * v3[i + j];
    }
  }
  T s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  for (int64_t j = 0; j < kLanes; ++j) {
    s0 += a0[j];
    s1 += a1[j];
    s2 += a2[j];
    s3 += a3[j];
  }
  for (; i < d; ++i) {
    const T gi = g[i];
    s0 += gi * v0[i];
    s1 += gi * v1[i];
    s2 += gi * v2[i];
    s3 += gi * v3[i];
  }
  dots[0] = s0;
  dots[1] = s1;
  dots[2] = s2;
  dots[3] = s3;
}

// Gradients of one sample's attention weight a and location loc[0..1]: computes the sample's
// bilinear taps into t, writes grad_attn[0] and grad_loc[0..1], and returns true; a sample
// outside its map gets zero gradients and returns false. v_level: the head's value rows of
// the sample's level (row stride md); zeros: d zeros for taps outside the map.
template <typename T>
inline bool sample_loc_attn_grads(const T* __restrict__ g, const T* v_level, int64_t md, int64_t d,
                                  const T* zeros, const T* loc, T a, const Level& lv, Taps<T>& t,
                                  T* grad_loc, T* grad_attn) {
  if (!bilinear_taps(loc[0], loc[1], lv, t)) {
    grad_loc[0] = T(0);
    grad_loc[1] = T(0);
    grad_attn[0] = T(0);
    return false;
  }
  const T* v[4];
  for (int j = 0; j < 4; ++j) v[j] = t.idx[j] >= 0 ? v_level + t.idx[j] * md : zeros;
  T s[4];  // <grad_out, corner value>
  dot4(g, v[0], v[1], v[2], v[3], d, s);
  grad_attn[0] = t.w[0] * s[0] + t.w[1] * s[1] + t.w[2] * s[2] + t.w[3] * s[3];
  // d/dx of the bilinear weights: -(1-fy), (1-fy), -fy, fy; d/dy: -(1-fx), -fx, (1-fx), fx.
  const T gx = (T(1) - t.fy) * (s[1] - s[0]) + t.fy * (s[3] - s[2]);
  const T gy = (T(1) - t.fx) * (s[2] - s[0]) + t.fx * (s[3] - s[1]);
  // pixel x = loc_x * W - 0.5, so d/dloc_x = W * d/dx.
  grad_loc[0] = a * gx * static_cast<T>(lv.w);
  grad_loc[1] = a * gy * static_cast<T>(lv.h);
  return true;
}

// grad_value rows of the sample's in-map corners += a * w_corner * g[0:dn].
template <typename T>
inline void sample_value_grads(const T* __restrict__ g, T* gv_level, int64_t md, int64_t dn,
                               const Taps<T>& t, T a) {
  for (int j = 0; j < 4; ++j) {
    if (t.idx[j] < 0) continue;
    const T c = a * t.w[j];
    T* __restrict__ dst = gv_level + t.idx[j] * md;
    for (int64_t i = 0; i < dn; ++i) dst[i] += c * g[i];
  }
}

// Tasks of the per-(batch, query, head) passes hold L*P*4*D multiply-adds each; aim for
// chunks of a few thousand so the thread start-up is amortised on small calls.
int64_t grain_for(const Dims& dm) {
  const int64_t work = std::max<int64_t>(1, dm.levels * dm.points * 4 * dm.d);
  return std::max<int64_t>(1, 16384 / work);
}

template <typename T>
void forward_kernel(const Dims& dm, const std::vector<Level>& levels, const T* value,
                    const T* loc, const T* attn, T* out) {
  const int64_t md = dm.m * dm.d;
  const int64_t lp = dm.levels * dm.points;
  at::parallel_for(0, dm.n * dm.lq * dm.m, grain_for(dm), [&](int64_t begin, int64_t end) {
    // Invalid corners read this zero row with coefficient 0: one branch-free pass per point.
    std::vector<T> zeros(dm.d, T(0));
    for (int64_t row = begin; row < end; ++row) {  // row = (n * Lq + q) * M + m
      const int64_t m = row % dm.m;
      const int64_t n = row / (dm.m * dm.lq);
      T* o = out + row * dm.d;
      std::fill(o, o + dm.d, T(0));
      const T* row_loc = loc + row * lp * 2;
      const T* row_attn = attn + row * lp;
      const T* v_head = value + n * dm.s * md + m * dm.d;
      for (int64_t l = 0; l < dm.levels; ++l) {
        const Level& lv = levels[l];
        const T* v_level = v_head + lv.start * md;
        for (int64_t p = 0; p < dm.points; ++p) {
          const int64_t k = l * dm.points + p;
          Taps<T> t;
          if (!bilinear_taps(row_loc[2 * k], row_loc[2 * k + 1], lv, t)) continue;
          const T a = row_attn[k];
          const T* v[4];
          T c[4];
          for (int j = 0; j < 4; ++j) {
            const bool in = t.idx[j] >= 0;
            v[j] = in ? v_level + t.idx[j] * md : zeros.data();
            c[j] = in ? a * t.w[j] : T(0);
          }
          axpy4(o, v[0], v[1], v[2], v[3], c, dm.d);
        }
      }
    }
  });
}

// Pass 1 of the backward: gradients of the sampling locations and the attention weights.
template <typename T>
void backward_loc_attn_kernel(const Dims& dm, const std::vector<Level>& levels,
                              const T* grad_out, const T* value, const T* loc, const T* attn,
                              T* grad_loc, T* grad_attn) {
  const int64_t md = dm.m * dm.d;
  const int64_t lp = dm.levels * dm.points;
  at::parallel_for(0, dm.n * dm.lq * dm.m, grain_for(dm), [&](int64_t begin, int64_t end) {
    std::vector<T> zeros(dm.d, T(0));
    for (int64_t row = begin; row < end; ++row) {
      const int64_t m = row % dm.m;
      const int64_t n = row / (dm.m * dm.lq);
      const T* g = grad_out + row * dm.d;
      const T* row_loc = loc + row * lp * 2;
      const T* row_attn = attn + row * lp;
      T* row_gloc = grad_loc + row * lp * 2;
      T* row_gattn = grad_attn + row * lp;
      const T* v_head = value + n * dm.s * md + m * dm.d;
      for (int64_t l = 0; l < dm.levels; ++l) {
        const Level& lv = levels[l];
        const T* v_level = v_head + lv.start * md;
        for (int64_t p = 0; p < dm.points; ++p) {
          const int64_t k = l * dm.points + p;
          Taps<T> t;
          sample_loc_attn_grads(g, v_level, md, dm.d, zeros.data(), row_loc + 2 * k, row_attn[k], lv, t,
                                row_gloc + 2 * k, row_gattn + k);
        }
      }
    }
  });
}

// Pass 2 of the backward: grad_value[n, s, m, :] += a * w_corner * grad_out[n, q, m*D:(m+1)*D].
template <typename T>
void backward_value_kernel(const Dims& dm, const std::vector<Level>& levels,
                           const T* grad_out, const T* loc, const T* attn, T* grad_value) {
  const int64_t md = dm.m * dm.d;
  const int64_t lp = dm.levels * dm.points;
  // Split the channels into blocks only when (batch, head) pairs alone cannot feed every
  // thread; each block recomputes the taps, so keep blocks at least kLanes wide.
  const int64_t pairs = dm.n * dm.m;
  const int64_t threads = at::get_num_threads();
  const int64_t max_blocks = std::max<int64_t>(1, (dm.d + kLanes - 1) / kLanes);
  const int64_t blocks =
      std::min<int64_t>(max_blocks, std::max<int64_t>(1, (2 * threads + pairs - 1) / pairs));
  const int64_t block_d = (dm.d + blocks - 1) / blocks;
  at::parallel_for(0, pairs * blocks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task % blocks;
      const int64_t pair = task / blocks;
      const int64_t m = pair % dm.m;
      const int64_t n = pair / dm.m;
      const int64_t d0 = b * block_d;
      const int64_t dn = std::min(dm.d, d0 + block_d) - d0;
      if (dn <= 0) continue;
      T* gv_head = grad_value + n * dm.s * md + m * dm.d + d0;
      for (int64_t q = 0; q < dm.lq; ++q) {
        const int64_t row = (n * dm.lq + q) * dm.m + m;
        const T* __restrict__ g = grad_out + row * dm.d + d0;
        const T* row_loc = loc + row * lp * 2;
        const T* row_attn = attn + row * lp;
        for (int64_t l = 0; l < dm.levels; ++l) {
          const Level& lv = levels[l];
          T* gv_level = gv_head + lv.start * md;
          for (int64_t p = 0; p < dm.points; ++p) {
            const int64_t k = l * dm.points + p;
            Taps<T> t;
            if (!bilinear_taps(row_loc[2 * k], row_loc[2 * k + 1], lv, t)) continue;
            sample_value_grads(g, gv_level, md, dn, t, row_attn[k]);
          }
        }
      }
    }
  });
}

// Single-pass backward: one task per (batch, group of heads) computes all three gradients
// for its queries. Heads are the innermost task loop, as in the forward, so the corner rows
// of all heads of a token (contiguous in value and grad_value) are touched together; the
// task reads each corner of value for the dot products and updates the same corner of
// grad_value right after. Every grad_value element receives its contributions in the same
// order as in the two-pass path (queries ascending, then level, point), so both paths give
// bitwise identical results.
template <typename T>
void backward_fused_kernel(const Dims& dm, const std::vector<Level>& levels, const T* grad_out,
                           const T* value, const T* loc, const T* attn, T* grad_value,
                           T* grad_loc, T* grad_attn, int64_t head_groups) {
  const int64_t md = dm.m * dm.d;
  const int64_t lp = dm.levels * dm.points;
  at::parallel_for(0, dm.n * head_groups, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> zeros(dm.d, T(0));
    for (int64_t task = begin; task < end; ++task) {
      const int64_t n = task / head_groups;
      const int64_t group = task % head_groups;
      const int64_t m_begin = group * dm.m / head_groups;
      const int64_t m_end = (group + 1) * dm.m / head_groups;
      for (int64_t q = 0; q < dm.lq; ++q) {
        for (int64_t m = m_begin; m < m_end; ++m) {
          const int64_t row = (n * dm.lq + q) * dm.m + m;
          const T* __restrict__ g = grad_out + row * dm.d;
          const T* row_loc = loc + row * lp * 2;
          const T* row_attn = attn + row * lp;
          T* row_gloc = grad_loc + row * lp * 2;
          T* row_gattn = grad_attn + row * lp;
          const T* v_head = value + n * dm.s * md + m * dm.d;
          T* gv_head = grad_value + n * dm.s * md + m * dm.d;
          for (int64_t l = 0; l < dm.levels; ++l) {
            const Level& lv = levels[l];
            const T* v_level = v_head + lv.start * md;
            T* gv_level = gv_head + lv.start * md;
            for (int64_t p = 0; p < dm.points; ++p) {
              const int64_t k = l * dm.points + p;
              Taps<T> t;
              if (sample_loc_attn_grads(g, v_level, md, dm.d, zeros.data(), row_loc + 2 * k, row_attn[k], lv, t,
                                        row_gloc + 2 * k, row_gattn + k)) {
                sample_value_grads(g, gv_level, md, dm.d, t, row_attn[k]);
              }
            }
          }
        }
      }
    }
  });
}

// Head groups for the single-pass backward: the fewest (so that heads stay together) that
// give N * groups tasks splitting evenly over the threads, or at least 4 per thread; 0 when
// no grouping does (then the two-pass backward runs).
int64_t fused_head_groups(const Dims& dm, int64_t threads) {
  for (int64_t groups = 1; groups <= dm.m; ++groups) {
    if (dm.m % groups != 0) continue;
    const int64_t tasks = dm.n * groups;
    if (tasks % threads == 0 || tasks >= 4 * threads) return groups;
  }
  return 0;
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

void check_cpu_dtype(const at::Tensor& value, const char* op) {
  TORCH_CHECK(value.scalar_type() == at::kFloat || value.scalar_type() == at::kDouble, op,
              ": the CPU kernel supports float32 and float64, got ", value.scalar_type(),
              " (cast the inputs, or use adaseg.ops.reference.ms_deform_attn)");
}

}  // namespace

at::Tensor ms_deform_attn_forward_cpu(const at::Tensor& value, const at::Tensor& spatial_shapes,
                                      const at::Tensor& level_start_index,
                                      const at::Tensor& sampling_locations,
                                      const at::Tensor& attention_weights) {
  check_ms_deform_attn_inputs(value, spatial_shapes, level_start_index, sampling_locations,
                              attention_weights, "ms_deform_attn");
  check_cpu_dtype(value, "ms_deform_attn");
  const Dims dm = dims_of(value, sampling_locations);
  // Every row is written by the kernel (zero-filled first), so no separate zero pass.
  auto out = at::empty({dm.n, dm.lq, dm.m * dm.d}, value.options());
  if (out.numel() == 0) return out;
  const auto v = value.contiguous();
  const auto loc = sampling_locations.contiguous();
  const auto attn = attention_weights.contiguous();
  const auto levels = read_levels(spatial_shapes, level_start_index);
  AT_DISPATCH_FLOATING_TYPES(value.scalar_type(), "ms_deform_attn_forward_cpu", [&] {
    forward_kernel<scalar_t>(dm, levels, v.data_ptr<scalar_t>(), loc.data_ptr<scalar_t>(),
                             attn.data_ptr<scalar_t>(), out.data_ptr<scalar_t>());
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> ms_deform_attn_backward_cpu(
    const at::Tensor& grad_output, const at::Tensor& value, const at::Tensor& spatial_shapes,
    const at::Tensor& level_start_index, const at::Tensor& sampling_locations,
    const at::Tensor& attention_weights) {
  check_ms_deform_attn_inputs(value, spatial_shapes, level_start_index, sampling_locations,
                              attention_weights, "ms_deform_attn_backward");
  check_cpu_dtype(value, "ms_deform_attn_backward");
  check_ms_deform_attn_grad_output(grad_output, value, sampling_locations);
  const Dims dm = dims_of(value, sampling_locations);
  auto grad_value = at::zeros_like(value, at::MemoryFormat::Contiguous);
  // Pass 1 writes every entry of these two.
  auto grad_loc = at::empty(sampling_locations.sizes(), value.options());
  auto grad_attn = at::empty(attention_weights.sizes(), value.options());
  if (grad_output.numel() == 0 || grad_loc.numel() == 0) {
    return {grad_value, grad_loc.zero_(), grad_attn.zero_()};
  }
  const auto g = grad_output.contiguous();
  const auto v = value.contiguous();
  const auto loc = sampling_locations.contiguous();
  const auto attn = attention_weights.contiguous();
  const auto levels = read_levels(spatial_shapes, level_start_index);
  AT_DISPATCH_FLOATING_TYPES(value.scalar_type(), "ms_deform_attn_backward_cpu", [&] {
    const int64_t groups = fused_head_groups(dm, at::get_num_threads());
    if (groups > 0) {
      backward_fused_kernel<scalar_t>(dm, levels, g.data_ptr<scalar_t>(), v.data_ptr<scalar_t>(),
                                      loc.data_ptr<scalar_t>(), attn.data_ptr<scalar_t>(),
                                      grad_value.data_ptr<scalar_t>(), grad_loc.data_ptr<scalar_t>(),
                                      grad_attn.data_ptr<scalar_t>(), groups);
      return;
    }
    backward_loc_attn_kernel<scalar_t>(dm, levels, g.data_ptr<scalar_t>(),
                                       v.data_ptr<scalar_t>(), loc.data_ptr<scalar_t>(),
                                       attn.data_ptr<scalar_t>(), grad_loc.data_ptr<scalar_t>(),
                                       grad_attn.data_ptr<scalar_t>());
    backward_value_kernel<scalar_t>(dm, levels, g.data_ptr<scalar_t>(),
                                    loc.data_ptr<scalar_t>(), attn.data_ptr<scalar_t>(),
                                    grad_value.data_ptr<scalar_t>());
  });
  return {grad_value, grad_loc, grad_attn};
}

}  // namespace adaseg

TORCH_LIBRARY_IMPL(adaseg, CPU, m) {
  m.impl("ms_deform_attn", &adaseg::ms_deform_attn_forward_cpu);
  m.impl("ms_deform_attn_backward", &adaseg::ms_deform_attn_backward_cpu);
}
