// Multi-scale deformable attention (Deformable-DETR semantics): declarations shared by
// the schema file, the CPU kernels and the CUDA kernels.
//
// Shapes (N batch, S flattened value tokens of all levels, M heads, D channels per head,
// Lq queries, L levels, P points per level):
//   value               (N, S, M, D)          float / double (CUDA also half, bfloat16)
//   spatial_shapes      (L, 2) int64           (H_l, W_l) of each level, sum H_l*W_l == S
//   level_start_index   (L,)   int64           offset of level l in S (an exclusive prefix sum)
//   sampling_locations  (N, Lq, M, L, P, 2)    (x, y) normalised to [0, 1]
//   attention_weights   (N, Lq, M, L, P)
//   output              (N, Lq, M*D)
// Sampling is bilinear with grid_sample's conventions: align_corners=False (pixel
// coordinate x = loc_x * W - 0.5) and zero padding (corners outside the level read 0).
#pragma once

#include <torch/types.h>

#include <tuple>

namespace adaseg {

// Validates the five inputs of the op (ranks, sizes against each other and against the
// values of spatial_shapes / level_start_index, dtypes, devices). `op` names the caller
// in the messages. Reads spatial_shapes / level_start_index on the host (a small copy for
// device tensors).
void check_ms_deform_attn_inputs(const at::Tensor& value, const at::Tensor& spatial_shapes,
                                 const at::Tensor& level_start_index,
                                 const at::Tensor& sampling_locations,
                                 const at::Tensor& attention_weights, const char* op);

// Additionally checks grad_output (N, Lq, M*D) for the backward.
void check_ms_deform_attn_grad_output(const at::Tensor& grad_output, const at::Tensor& value,
                                      const at::Tensor& sampling_locations);

at::Tensor ms_deform_attn_forward_cpu(const at::Tensor& value, const at::Tensor& spatial_shapes,
                                      const at::Tensor& level_start_index,
                                      const at::Tensor& sampling_locations,
                                      const at::Tensor& attention_weights);

// Returns (grad_value, grad_sampling_locations, grad_attention_weights).
std::tuple<at::Tensor, at::Tensor, at::Tensor> ms_deform_attn_backward_cpu(
    const at::Tensor& grad_output, const at::Tensor& value, const at::Tensor& spatial_shapes,
    const at::Tensor& level_start_index, const at::Tensor& sampling_locations,
    const at::Tensor& attention_weights);

}  // namespace adaseg
