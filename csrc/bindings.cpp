// pybind11 bindings of metarecipe._C: each op dispatches on the device of log_probs.
#include <torch/extension.h>

#include "beam_search.h"
#include "conv.h"
#include "ctc_align.h"
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
  pybind11::class_<metarecipe::LMArrays>(m, "LMArrays", "an n-gram LM's arrays as tensors (see LMTables)")
      .def(pybind11::init<>())
      .def_readwrite("mode", &metarecipe::LMArrays::mode)
      .def_readwrite("keys", &metarecipe::LMArrays::keys)
      .def_readwrite("logprob", &metarecipe::LMArrays::logprob)
      .def_readwrite("next_node", &metarecipe::LMArrays::next_node)
      .def_readwrite("backoff", &metarecipe::LMArrays::backoff)
      .def_readwrite("suffix", &metarecipe::LMArrays::suffix)
      .def_readwrite("start_node", &metarecipe::LMArrays::start_node)
      .def_readwrite("end_word", &metarecipe::LMArrays::end_word)
      .def_readwrite("unk_word", &metarecipe::LMArrays::unk_word)
      .def_readwrite("token_word", &metarecipe::LMArrays::token_word)
      .def_readwrite("child_start", &metarecipe::LMArrays::child_start)
      .def_readwrite("child_token", &metarecipe::LMArrays::child_token)
      .def_readwrite("child_node", &metarecipe::LMArrays::child_node)
      .def_readwrite("node_word", &metarecipe::LMArrays::node_word)
      .def_readwrite("node_smear", &metarecipe::LMArrays::node_smear);
  pybind11::class_<metarecipe::DecoderLM>(m, "DecoderLM", "an n-gram LM as a back-off state machine")
      .def(pybind11::init<const metarecipe::LMArrays&>(), pybind11::arg("arrays"))
      .def("score", &metarecipe::DecoderLM::score, "(ln P(word | node), next node)");
  pybind11::class_<metarecipe::SearchOptions>(m, "SearchOptions", "settings of a CTC prefix beam search")
      .def(pybind11::init<>())
      .def_readwrite("beam", &metarecipe::SearchOptions::beam)
      .def_readwrite("beam_threshold", &metarecipe::SearchOptions::beam_threshold)
      .def_readwrite("token_threshold", &metarecipe::SearchOptions::token_threshold)
      .def_readwrite("token_beam", &metarecipe::SearchOptions::token_beam)
      .def_readwrite("blank_skip", &metarecipe::SearchOptions::blank_skip)
      .def_readwrite("lm_weight", &metarecipe::SearchOptions::lm_weight)
      .def_readwrite("insertion_bonus", &metarecipe::SearchOptions::insertion_bonus)
      .def_readwrite("oov_penalty", &metarecipe::SearchOptions::oov_penalty)
      .def_readwrite("nbest", &metarecipe::SearchOptions::nbest)
      .def_readwrite("blank", &metarecipe::SearchOptions::blank)
      .def_readwrite("space", &metarecipe::SearchOptions::space)
      .def_readwrite("lexicon_only", &metarecipe::SearchOptions::lexicon_only);
  m.def("ctc_beam_search", &metarecipe::ctc_beam_search_cpu, "CTC prefix beam search: per utterance its n-best",
        pybind11::arg("log_probs"), pybind11::arg("lengths"), pybind11::arg("options"), pybind11::arg("lm").none(true));
  m.def("ctc_hvp", &metarecipe::ctc_hvp, "backward of ctc_grad: (grad_loss * H v, -<gamma, v>)");
  m.def("ctc_forced_align", &metarecipe::ctc_forced_align_cpu,
        "CTC Viterbi forced alignment: (starts, ends, token_scores, path_scores)", pybind11::arg("log_probs"),
        pybind11::arg("lengths"), pybind11::arg("targets"), pybind11::arg("target_lengths"), pybind11::arg("blank"));
}
