// pybind11 bindings of metarecipe._C: each op dispatches on the device of log_probs.
#include <torch/extension.h>

#include "beam_search.h"
#include "conv.h"
#include "ctc_loss.h"
#include "gru.h"

namespace metarecipe {
namespace {

bool built_with_cuda() {
#ifdef WITH_CUDA
  return true;
#else
  return false;
#endif
}

// Calls name_cuda for CUDA tensors where built, name_cpu otherwise.
#ifdef WITH_CUDA
#define METARECIPE_DISPATCH(name, tensor, ...) ((tensor).is_cuda() ? name##_cuda(__VA_ARGS__) : name##_cpu(__VA_ARGS__))
#else
#define METARECIPE_DISPATCH(name, tensor, ...) (require_cpu(tensor), name##_cpu(__VA_ARGS__))
#endif

void require_cpu(const at::Tensor& tensor) {
  TORCH_CHECK(!tensor.is_cuda(), "metarecipe._C was built without CUDA; rebuild on a machine with nvcc");
}

auto ctc_forward(const at::Tensor& log_probs, const at::Tensor& targets, const at::Tensor& input_lengths,
                 const at::Tensor& target_lengths, int64_t blank) {
  return METARECIPE_DISPATCH(ctc_forward, log_probs, log_probs, targets, input_lengths, target_lengths, blank);
}

at::Tensor ctc_grad(const at::Tensor& grad_loss, const at::Tensor& log_probs, const at::Tensor& targets,
                    const at::Tensor& input_lengths, const at::Tensor& target_lengths, const at::Tensor& alpha_m,
                    const at::Tensor& alpha_l, int64_t blank) {
  return METARECIPE_DISPATCH(ctc_grad, log_probs, grad_loss, log_probs, targets, input_lengths, target_lengths, alpha_m,
                             alpha_l, blank);
}

auto ctc_hvp(const at::Tensor& v, const at::Tensor& grad_loss, const at::Tensor& log_probs, const at::Tensor& targets,
             const at::Tensor& input_lengths, const at::Tensor& target_lengths, const at::Tensor& alpha_m,
             const at::Tensor& alpha_l, int64_t blank) {
  return METARECIPE_DISPATCH(ctc_hvp, log_probs, v, grad_loss, log_probs, targets, input_lengths, target_lengths,
                             alpha_m, alpha_l, blank);
}

std::vector<std::vector<Hypothesis>> ctc_beam_search(const at::Tensor& log_probs, const at::Tensor& lengths,
                                                     const DecoderLM* lm, int64_t beam, double beam_threshold,
                                                     double token_threshold, int64_t token_beam, double blank_skip,
                                                     double lm_weight, double insertion_bonus, double oov_penalty,
                                                     int64_t nbest,
                                                     int64_t blank, int64_t space, bool lexicon_only) {
  TORCH_CHECK(beam >= 1 && token_beam >= 1 && nbest >= 1, "beam, token_beam and nbest must be at least 1");
  const BeamSearchOptions options{beam,        beam_threshold, token_threshold, token_beam, blank_skip, lm_weight,
                                  insertion_bonus, oov_penalty, nbest, blank, space, lexicon_only};
  return ctc_beam_search_cpu(log_probs, lengths, options, lm);
}

}  // namespace
}  // namespace metarecipe

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "metarecipe compiled kernels (C++/OpenMP, CUDA where built)";
  m.def("built_with_cuda", &metarecipe::built_with_cuda);
  m.def("ctc_forward", &metarecipe::ctc_forward, "CTC forward: (log_z, alpha_m, alpha_l)");
  m.def("ctc_grad", &metarecipe::ctc_grad, "gradient of the CTC loss w.r.t. log_probs, scaled by grad_loss");
  m.def("gru_forward", &metarecipe::gru_forward_cpu, "task-batched GRU forward: (outputs, cache)");
  m.def("gru_backward", &metarecipe::gru_backward_cpu, "GRU backward: (d gates_x, d w, d b, gbar)");
  m.def("gru_double_backward", &metarecipe::gru_double_backward_cpu,
        "backward of gru_backward: cotangents of (grad_out, gates_x, w, b)");
  m.def("gru_infer", &metarecipe::gru_infer_cpu, "GRU recurrence for inference (float32): outputs (T, B, H)");
  m.def("gru_int8_pack", &metarecipe::gru_int8_pack, "int8 recurrent weights (H, 3H) -> the layout of gru_infer_int8");
  m.def("gru_infer_int8", &metarecipe::gru_infer_int8_cpu,
        "GRU recurrence for inference with int8 recurrent weights and state: outputs (T, B, H)");
  m.def("conv1_relu_infer", &metarecipe::conv1_relu_infer_cpu,
        "relu(conv2d) of one input channel, 3 x 3, stride 2, for inference: (B, C, T', F')");
  m.def("cpu_has_vnni", &metarecipe::cpu_has_vnni, "whether this CPU and build run AVX-512 VNNI");
  pybind11::class_<metarecipe::DecoderLM>(m, "DecoderLM", "an n-gram LM as a back-off state machine")
      .def(pybind11::init<int64_t, const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                          const at::Tensor&, int64_t, int64_t, int64_t, const at::Tensor&, const at::Tensor&,
                          const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&>())
      .def("score", &metarecipe::DecoderLM::score, "(ln P(word | node), next node)");
  m.def("ctc_beam_search", &metarecipe::ctc_beam_search, "CTC prefix beam search: per utterance its n-best",
        pybind11::arg("log_probs"), pybind11::arg("lengths"), pybind11::arg("lm").none(true), pybind11::arg("beam"),
        pybind11::arg("beam_threshold"), pybind11::arg("token_threshold"), pybind11::arg("token_beam"),
        pybind11::arg("blank_skip"), pybind11::arg("lm_weight"), pybind11::arg("insertion_bonus"), pybind11::arg("oov_penalty"),
        pybind11::arg("nbest"), pybind11::arg("blank"), pybind11::arg("space"), pybind11::arg("lexicon_only"));
  m.def("ctc_hvp", &metarecipe::ctc_hvp, "backward of ctc_grad: (grad_loss * H v, -<gamma, v>)");
}
