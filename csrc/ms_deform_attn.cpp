// The schema of adaseg::ms_deform_attn and its backward, and the input checks every
// backend shares. Backend kernels register themselves with TORCH_LIBRARY_IMPL in cpu/ and
// cuda/; autograd and fake (meta) kernels are registered from Python
// (adaseg/ops/_registration.py) with torch.library.
#include "ms_deform_attn.h"

#include <torch/library.h>

#include <vector>

namespace adaseg {

namespace {

std::string shape_str(const at::Tensor& t) { return c10::str(t.sizes()); }

}  // namespace

void check_ms_deform_attn_inputs(const at::Tensor& value, const at::Tensor& spatial_shapes,
                                 const at::Tensor& level_start_index,
                                 const at::Tensor& sampling_locations,
                                 const at::Tensor& attention_weights, const char* op) {
  TORCH_CHECK(value.dim() == 4, op, ": value must be (N, S, M, D), got shape ", shape_str(value));
  TORCH_CHECK(spatial_shapes.dim() == 2 && spatial_shapes.size(1) == 2, op,
              ": spatial_shapes must be (L, 2) holding (H, W) per level, got shape ",
              shape_str(spatial_shapes));
  const int64_t n = value.size(0), s = value.size(1), m = value.size(2);
  const int64_t levels = spatial_shapes.size(0);
  TORCH_CHECK(level_start_index.dim() == 1 && level_start_index.size(0) == levels, op,
              ": level_start_index must be (L,) with L=", levels,
              " (the levels of spatial_shapes), got shape ", shape_str(level_start_index));
  TORCH_CHECK(sampling_locations.dim() == 6 && sampling_locations.size(5) == 2, op,
              ": sampling_locations must be (N, Lq, M, L, P, 2), got shape ",
              shape_str(sampling_locations));
  TORCH_CHECK(sampling_locations.size(0) == n && sampling_locations.size(2) == m &&
                  sampling_locations.size(3) == levels,
              op, ": sampling_locations ", shape_str(sampling_locations),
              " does not match value ", shape_str(value), " and spatial_shapes ",
              shape_str(spatial_shapes), " (expected N=", n, ", M=", m, ", L=", levels, ")");
  TORCH_CHECK(attention_weights.dim() == 5 &&
                  attention_weights.sizes() == sampling_locations.sizes().slice(0, 5),
              op, ": attention_weights must be (N, Lq, M, L, P) = ",
              c10::str(sampling_locations.sizes().slice(0, 5)), ", got shape ",
              shape_str(attention_weights));

  TORCH_CHECK(at::isFloatingType(value.scalar_type()), op,
              ": value must be a floating-point tensor, got ", value.scalar_type());
  TORCH_CHECK(sampling_locations.scalar_type() == value.scalar_type() &&
                  attention_weights.scalar_type() == value.scalar_type(),
              op, ": value, sampling_locations and attention_weights must share one dtype, got ",
              value.scalar_type(), ", ", sampling_locations.scalar_type(), ", ",
              attention_weights.scalar_type());
  TORCH_CHECK(spatial_shapes.scalar_type() == at::kLong &&
                  level_start_index.scalar_type() == at::kLong,
              op, ": spatial_shapes and level_start_index must be int64, got ",
              spatial_shapes.scalar_type(), " and ", level_start_index.scalar_type());

  const auto device = value.device();
  TORCH_CHECK(spatial_shapes.device() == device && level_start_index.device() == device &&
                  sampling_locations.device() == device && attention_weights.device() == device,
              op, ": all inputs must be on one device, got value on ", device,
              ", spatial_shapes on ", spatial_shapes.device(), ", level_start_index on ",
              level_start_index.device(), ", sampling_locations on ",
              sampling_locations.device(), ", attention_weights on ",
              attention_weights.device());

  // The kernels index value with these numbers, so an inconsistency would read out of
  // bounds: check them on the host (a tiny copy for device tensors).
  const auto shapes = spatial_shapes.to(at::kCPU).contiguous();
  const auto starts = level_start_index.to(at::kCPU).contiguous();
  const int64_t* hw = shapes.data_ptr<int64_t>();
  const int64_t* st = starts.data_ptr<int64_t>();
  int64_t total = 0;
  for (int64_t l = 0; l < levels; ++l) {
    TORCH_CHECK(hw[2 * l] >= 0 && hw[2 * l + 1] >= 0, op, ": spatial_shapes[", l,
                "] = (", hw[2 * l], ", ", hw[2 * l + 1], ") must be non-negative");
    TORCH_CHECK(st[l] == total, op, ": level_start_index[", l, "] = ", st[l],
                " but the levels before it hold ", total,
                " tokens (level_start_index must be the exclusive prefix sum of H*W)");
    total += hw[2 * l] * hw[2 * l + 1];
  }
  TORCH_CHECK(total == s, op, ": value has S=", s, " tokens but spatial_shapes sums to ", total,
              " (sum of H*W over levels)");
}

void check_ms_deform_attn_grad_output(const at::Tensor& grad_output, const at::Tensor& value,
                                      const at::Tensor& sampling_locations) {
  const std::vector<int64_t> expected = {value.size(0), sampling_locations.size(1),
                                         value.size(2) * value.size(3)};
  TORCH_CHECK(grad_output.sizes() == at::IntArrayRef(expected),
              "ms_deform_attn_backward: grad_output must be (N, Lq, M*D) = ",
              c10::str(at::IntArrayRef(expected)), ", got ", shape_str(grad_output));
  TORCH_CHECK(grad_output.scalar_type() == value.scalar_type(),
              "ms_deform_attn_backward: grad_output dtype ", grad_output.scalar_type(),
              " differs from value dtype ", value.scalar_type());
  TORCH_CHECK(grad_output.device() == value.device(),
              "ms_deform_attn_backward: grad_output is on ", grad_output.device(),
              " but value is on ", value.device());
}

}  // namespace adaseg

TORCH_LIBRARY(adaseg, m) {
  // Where the fake (meta) kernels live: torch.compile imports it when it meets the op.
  m.set_python_module("adaseg.ops._registration");
  m.def(
      "ms_deform_attn(Tensor value, Tensor spatial_shapes, Tensor level_start_index, "
      "Tensor sampling_locations, Tensor attention_weights) -> Tensor");
  m.def(
      "ms_deform_attn_backward(Tensor grad_output, Tensor value, Tensor spatial_shapes, "
      "Tensor level_start_index, Tensor sampling_locations, Tensor attention_weights) "
      "-> (Tensor, Tensor, Tensor)");
}
