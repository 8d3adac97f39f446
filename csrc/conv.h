// Convolutions for inference on the CPU (compact models).
#pragma once

#include <ATen/ATen.h>

namespace metarecipe {

// x (B, T, F) float32 -> relu(conv2d(x as one channel, w (C, 1, 3, 3), b (C), stride 2)) (B, C, T', F'),
// T' = (T - 3) / 2 + 1, F' = (F - 3) / 2 + 1.
at::Tensor conv1_relu_infer_cpu(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b);

}  // namespace metarecipe
