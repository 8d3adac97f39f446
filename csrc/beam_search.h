// CTC prefix beam search with n-gram shallow fusion (docs/beam_search.md).
#pragma once

#include <torch/extension.h>

#include <cstdint>
#include <tuple>
#include <vector>

namespace metarecipe {

// uint64 key -> int32 value, open addressing with linear probing; grows at half load.
class IdMap {
 public:
  explicit IdMap(size_t capacity = 64);
  int32_t find(uint64_t key) const;  // -1 when absent
  void insert(uint64_t key, int32_t value);
  void clear();

 private:
  void grow();
  std::vector<uint64_t> keys_;
  std::vector<int32_t> values_;
  uint64_t mask_;
  size_t size_ = 0;
};

// An n-gram LM as the kernels take it: the arrays of metarecipe.kernels.beam_search.LMTables (where each is
// documented) under the same names, as contiguous 1-D CPU tensors, int32 unless said otherwise.
struct LMArrays {
  int64_t mode = 0;        // 1: an LM over tokens, scored on every token; 2: an LM over words, scored at word ends
  at::Tensor keys;         // (E,) int64 sorted, node << 32 | word of each n-gram
  at::Tensor logprob;      // (E,) float32
  at::Tensor next_node;    // (E,)
  at::Tensor backoff;      // (M,) float32, per node
  at::Tensor suffix;       // (M,)
  int64_t start_node = 0;  // the node of the context <s>
  int64_t end_word = 0;    // the word </s>
  int64_t unk_word = 0;    // the word <unk>
  at::Tensor token_word;   // (V,) token LM
  at::Tensor child_start;  // word LM: the vocabulary trie, (N + 1,)
  at::Tensor child_token;  // (C,)
  at::Tensor child_node;   // (C,)
  at::Tensor node_word;    // (N,)
  at::Tensor node_smear;   // (N,) float32
};

// An n-gram model as a back-off state machine over "nodes" (the n-grams of order < N, node 0 the empty
// context), everything in natural log.
struct DecoderLM {
  explicit DecoderLM(const LMArrays& arrays);

  // (ln P(word | node), the node after word) by the ARPA back-off rule.
  std::pair<float, int32_t> score(int32_t node, int32_t word) const;
  // The vocabulary-trie node reached from trie_node by token, -1 when no word continues that way.
  int32_t trie_child(int32_t trie_node, int32_t token) const;

  int64_t mode;
  int32_t start_node, end_word, unk_word;
  IdMap entries;  // keys -> index of the n-gram
  std::vector<float> logprob, backoff, node_smear;
  std::vector<float> best_next;  // per node: an upper bound of score(node, word).first over all words
  std::vector<int32_t> next_node, suffix, token_word, child_start, child_token, child_node, node_word;
};

// The settings of a search, built from metarecipe.kernels.beam_search.BeamSearchOptions by search_options()
// there (numba reads a namedtuple of the same fields). Scores in natural log.
struct SearchOptions {
  int64_t beam = 0;              // at most this many hypotheses are kept per frame
  double beam_threshold = 0.0;   // drop hypotheses more than this below the best
  double token_threshold = 0.0;  // per frame, only tokens with ln P >= the frame's best + this are tried (<= 0)
  int64_t token_beam = 0;        // per frame, at most this many tokens are tried
  double blank_skip = 0.0;       // ln P(blank) at or above this: only blank and the repeat continue the frame
  double lm_weight = 0.0;        // weight of ln P_LM
  double insertion_bonus = 0.0;  // per token (no LM, token LM) or per word (word LM)
  double oov_penalty = 0.0;      // word LM: added (unweighted) for each word outside the LM's vocabulary
  int64_t nbest = 0;             // hypotheses returned per utterance, at most
  int64_t blank = 0;             // the blank token
  int64_t space = -1;            // the word boundary token of a word LM
  bool lexicon_only = false;     // word LM: drop prefixes whose partial word leaves the vocabulary (an unfinished
                                 // last word scores as <unk>)
};

// (tokens, total score, acoustic score, LM score incl. bonuses), best first.
using Hypothesis = std::tuple<std::vector<int64_t>, double, double, double>;

// log_probs (B, T, V) float32 CPU, lengths (B,) int64 -> for each utterance its n-best list.
std::vector<std::vector<Hypothesis>> ctc_beam_search_cpu(const at::Tensor& log_probs, const at::Tensor& lengths,
                                                         const SearchOptions& options, const DecoderLM* lm);

}  // namespace metarecipe
