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

// An n-gram model as a back-off state machine over "nodes" (the n-grams of order < N, node 0 the empty
// context). Built from the arrays of metarecipe.kernels.beam_search.LMTables; everything in natural log.
struct DecoderLM {
  DecoderLM(int64_t mode, const at::Tensor& keys, const at::Tensor& logprob, const at::Tensor& next_node,
            const at::Tensor& backoff, const at::Tensor& suffix, int64_t start_node, int64_t end_word,
            int64_t unk_word, const at::Tensor& token_word, const at::Tensor& child_start,
            const at::Tensor& child_token, const at::Tensor& child_node, const at::Tensor& node_word,
            const at::Tensor& node_smear);

  // (ln P(word | node), the node after word) by the ARPA back-off rule.
  std::pair<float, int32_t> score(int32_t node, int32_t word) const;
  // The vocabulary-trie node reached from trie_node by token, -1 when no word continues that way.
  int32_t trie_child(int32_t trie_node, int32_t token) const;

  int64_t mode;  // 1: an LM over tokens, scored on every token; 2: an LM over words, scored at word ends
  int32_t start_node, end_word, unk_word;
  IdMap entries;
  std::vector<float> logprob, backoff, node_smear;
  std::vector<float> best_next;  // per node: an upper bound of score(node, word).first over all words
  std::vector<int32_t> next_node, suffix, token_word, child_start, child_token, child_node, node_word;
};

struct BeamSearchOptions {
  int64_t beam;
  double beam_threshold;   // drop hypotheses more than this below the best (ln)
  double token_threshold;  // per frame, tokens more than this below the frame's best are not tried (ln)
  int64_t token_beam;      // per frame, at most this many tokens are tried
  double blank_skip;       // ln P(blank) at or above this: only blank and the repeat continue the frame
  double lm_weight;
  double insertion_bonus;  // per token (no LM, token LM) or per word (word LM)
  double oov_penalty;      // word LM: added (unweighted) for each word outside the LM's vocabulary
  int64_t nbest;
  int64_t blank;
  int64_t space;           // the word boundary token of a word LM
  bool lexicon_only;       // word LM: drop prefixes whose partial word leaves the vocabulary (an unfinished
                           // last word scores as <unk>)
};

// (tokens, total score, acoustic score, LM score incl. bonuses), best first.
using Hypothesis = std::tuple<std::vector<int64_t>, double, double, double>;

// log_probs (B, T, V) float32 CPU, lengths (B,) int64 -> for each utterance its n-best list.
std::vector<std::vector<Hypothesis>> ctc_beam_search_cpu(const at::Tensor& log_probs, const at::Tensor& lengths,
                                                         const BeamSearchOptions& options, const DecoderLM* lm);

}  // namespace metarecipe
