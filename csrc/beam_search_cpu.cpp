// CTC prefix beam search on the CPU, parallel over utterances (docs/beam_search.md).
//
// Hypotheses are nodes of a tree of label sequences (prefixes) that grows as the search goes. A node caches
// everything that depends on the labels alone: its LM state and weighted LM score, the position of its
// partial word in the vocabulary trie and that word's look-ahead. Per frame a hypothesis carries the
// probabilities of its prefix ending in blank (pb) and in its last label (pnb).
//
// With a token LM, most of a frame's extensions fall out of the beam whatever the LM says, and the search
// avoids their cost without changing its result. A prefix's LM term is bounded by the largest score the LM
// gives after the parent's state (DecoderLM::best_next). (1) An extension whose bound is below the beam-th
// best of the hypotheses that merely continue (a lower bound of where the beam will end) is not made, unless
// its prefix is in the beam already and so may gather more. (2) A new prefix's LM score is left pending;
// pruning takes hypotheses best bound first and scores them until no bound can reach the beam.
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>

#include "beam_search.h"

namespace metarecipe {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();
constexpr uint64_t kEmpty = ~uint64_t{0};

uint64_t mix(uint64_t x) {  // splitmix64 finaliser
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ULL;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

float log_add(float a, float b) {
  if (a < b) std::swap(a, b);
  if (b == kNegInf) return a;
  return a + std::log1p(std::exp(b - a));
}

template <typename T>
std::vector<T> to_vector(const at::Tensor& tensor) {
  at::Tensor flat = tensor.contiguous();
  return std::vector<T>(flat.data_ptr<T>(), flat.data_ptr<T>() + flat.numel());
}

struct Prefix {
  int32_t parent, token;
  int32_t lm_node;    // n-gram state after the prefix
  int32_t word_node;  // vocabulary-trie node of the partial word (0: no partial word, -1: outside the trie)
  float lm_score;     // weighted LM scores and bonuses of the finished units
  float lookahead;    // weighted look-ahead of the partial word, replaced by its score when the word ends
  bool pending;       // token LM: the last token's LM score and bonus are not in lm_score yet (nor in lm_node)
};

struct Hyp {
  int32_t prefix;
  float pb, pnb, score;
};

// DecoderLM::score results (the whole back-off walk) of recent (node, word) queries, direct-mapped. The LM's
// own table is megabytes and each back-off step a cache miss; the queries of a search repeat (hypotheses share
// their recent history), and this table stays in the CPU's cache.
class ScoreCache {
 public:
  explicit ScoreCache(const DecoderLM* lm) : lm_(lm), slots_(lm != nullptr ? kSlots : 0) {}

  std::pair<float, int32_t> score(int32_t node, int32_t word) {
    const uint64_t key = (static_cast<uint64_t>(node) << 32) | static_cast<uint32_t>(word);
    Slot& slot = slots_[mix(key) & (kSlots - 1)];
    if (slot.key != key) {
      const auto [logprob, next] = lm_->score(node, word);
      slot = {key, logprob, next};
    }
    return {slot.logprob, slot.next};
  }

 private:
  struct Slot {
    uint64_t key = kEmpty;
    float logprob = 0.0f;
    int32_t next = 0;
  };
  static constexpr size_t kSlots = size_t{1} << 11;  // 32 KiB
  const DecoderLM* lm_;
  std::vector<Slot> slots_;
};

// The search over one utterance.
class Search {
 public:
  Search(const SearchOptions& options, const DecoderLM* lm, ScoreCache& cache, int64_t vocab)
      : opt_(options),
        lm_(lm),
        cache_(cache),
        vocab_(vocab),
        children_(4096),
        lazy_(lm != nullptr && lm->mode == 1 && options.lm_weight >= 0.0),
        weight_(static_cast<float>(options.lm_weight)),
        bonus_(static_cast<float>(options.insertion_bonus)) {
    prefixes_.push_back({-1, -1, lm ? lm->start_node : 0, 0, 0.0f, 0.0f, false});
    stamp_.push_back(-1);
    slot_.push_back(0);
    parent_stamp_.push_back(-1);
  }

  std::vector<Hypothesis> run(const float* log_probs, int64_t frames) {
    std::vector<Hyp> beam{{0, 0.0f, kNegInf, 0.0f}};
    std::vector<int32_t> tokens;
    for (int64_t t = 0; t < frames; ++t) {
      const float* lp = log_probs + t * vocab_;
      if (lp[opt_.blank] >= opt_.blank_skip) {
        blank_frame(beam, lp);
        continue;
      }
      select_tokens(lp, tokens);
      expand(beam, lp, tokens, static_cast<int32_t>(t));
      prune(beam);
    }
    return finish(beam);
  }

 private:
  // A frame the blank dominates: every prefix stays as it is.
  void blank_frame(std::vector<Hyp>& beam, const float* lp) const {
    for (Hyp& h : beam) {
      const int32_t last = prefixes_[h.prefix].token;
      const float pnb = last >= 0 ? h.pnb + lp[last] : kNegInf;
      h.pb = log_add(h.pb, h.pnb) + lp[opt_.blank];
      h.pnb = pnb;
    }
  }

  // The non-blank tokens worth trying this frame: within token_threshold of the best, at most token_beam.
  void select_tokens(const float* lp, std::vector<int32_t>& tokens) const {
    tokens.clear();
    float best = kNegInf;
    for (int64_t v = 0; v < vocab_; ++v)
      if (v != opt_.blank) best = std::max(best, lp[v]);
    for (int64_t v = 0; v < vocab_; ++v)
      if (v != opt_.blank && lp[v] >= best + opt_.token_threshold) tokens.push_back(static_cast<int32_t>(v));
    if (static_cast<int64_t>(tokens.size()) > opt_.token_beam) {
      std::nth_element(tokens.begin(), tokens.begin() + opt_.token_beam, tokens.end(),
                       [lp](int32_t a, int32_t b) { return lp[a] > lp[b]; });
      tokens.resize(opt_.token_beam);
    }
  }

  void expand(std::vector<Hyp>& beam, const float* lp, const std::vector<int32_t>& tokens, int32_t t) {
    next_.clear();
    const bool walk_lexicon = lm_ != nullptr && lm_->mode == 2 && opt_.lexicon_only;
    if (walk_lexicon) {
      candidate_.assign(vocab_, 0);
      for (int32_t c : tokens) candidate_[c] = 1;
    }
    const float floor = lazy_ ? extension_floor(beam, lp, t) : kNegInf;
    for (const Hyp& h : beam) {
      const int32_t last = prefixes_[h.prefix].token, word_node = prefixes_[h.prefix].word_node;
      const float total = log_add(h.pb, h.pnb);
      add(h.prefix, t, total + lp[opt_.blank], kNegInf);
      if (last >= 0) add(h.prefix, t, kNegInf, h.pnb + lp[last]);
      // extensions below this cannot enter the beam, unless a child of h.prefix is in it already
      const Prefix& p = prefixes_[h.prefix];
      const float need = !lazy_ || parent_stamp_[h.prefix] == t ? kNegInf : floor - p.lm_score - pending_bound(p);
      auto grow = [&](int32_t c) {
        if ((c == last ? h.pb : total) + lp[c] < need) return;
        const int32_t child = extend(h.prefix, c);
        if (child >= 0) add(child, t, kNegInf, (c == last ? h.pb : total) + lp[c]);
      };
      if (!walk_lexicon) {
        for (int32_t c : tokens) grow(c);
        continue;
      }
      // only the tokens that continue a word of the lexicon (and the space that ends one) can grow the prefix
      for (int32_t i = lm_->child_start[word_node]; i < lm_->child_start[word_node + 1]; ++i)
        if (candidate_[lm_->child_token[i]]) grow(lm_->child_token[i]);
      if (candidate_[opt_.space]) grow(static_cast<int32_t>(opt_.space));
    }
    beam.swap(next_);
  }

  // A lower bound of the score the beam-th best hypothesis will have after frame t (of those within the
  // beam threshold): the beam-th best of the hypotheses that only continue with blank or their last token.
  // Marks the parents of the beam's prefixes with t (parent_stamp_).
  float extension_floor(const std::vector<Hyp>& beam, const float* lp, int32_t t) {
    stays_.clear();
    for (const Hyp& h : beam) {
      const Prefix& p = prefixes_[h.prefix];
      const float pnb = p.token >= 0 ? h.pnb + lp[p.token] : kNegInf;
      stays_.push_back(log_add(log_add(h.pb, h.pnb) + lp[opt_.blank], pnb) + p.lm_score + p.lookahead);
      if (p.parent >= 0) parent_stamp_[p.parent] = t;
    }
    const float best = *std::max_element(stays_.begin(), stays_.end());
    float floor = best - static_cast<float>(opt_.beam_threshold);
    if (static_cast<int64_t>(stays_.size()) >= opt_.beam) {
      std::nth_element(stays_.begin(), stays_.begin() + (opt_.beam - 1), stays_.end(), std::greater<float>());
      floor = std::max(floor, stays_[opt_.beam - 1]);
    }
    return floor;
  }

  void add(int32_t prefix, int32_t t, float pb, float pnb) {
    if (stamp_[prefix] != t) {
      stamp_[prefix] = t;
      slot_[prefix] = static_cast<int32_t>(next_.size());
      next_.push_back({prefix, pb, pnb, 0.0f});
      return;
    }
    Hyp& h = next_[slot_[prefix]];
    h.pb = log_add(h.pb, pb);
    h.pnb = log_add(h.pnb, pnb);
  }

  // Keeps the best `beam` hypotheses within beam_threshold of the best.
  void prune(std::vector<Hyp>& beam) {
    bool pending = false;
    for (Hyp& h : beam) {
      const Prefix& p = prefixes_[h.prefix];
      h.score = log_add(h.pb, h.pnb) + p.lm_score + p.lookahead + (p.pending ? pending_bound(p) : 0.0f);
      pending = pending || p.pending;
    }
    if (pending) score_pending(beam);
    float best = kNegInf;
    for (const Hyp& h : beam) best = std::max(best, h.score);
    const float floor = best - static_cast<float>(opt_.beam_threshold);
    beam.erase(std::remove_if(beam.begin(), beam.end(), [floor](const Hyp& h) { return h.score < floor; }), beam.end());
    if (static_cast<int64_t>(beam.size()) > opt_.beam) {
      std::nth_element(beam.begin(), beam.begin() + opt_.beam, beam.end(),
                       [](const Hyp& a, const Hyp& b) { return a.score > b.score; });
      beam.resize(opt_.beam);
    }
  }

  // Leaves in beam the hypotheses that can still be among the best `beam` once scored, all of them scored:
  // best bound first, until the next bound is below the beam-th best score.
  void score_pending(std::vector<Hyp>& beam) {
    const auto by_score = [](const Hyp& a, const Hyp& b) { return a.score < b.score; };
    std::make_heap(beam.begin(), beam.end(), by_score);
    kept_.clear();
    worst_kept_.clear();  // min-heap of the best `beam` scores so far
    const auto size = static_cast<size_t>(opt_.beam);
    for (auto end = beam.end(); end != beam.begin(); --end) {
      if (worst_kept_.size() == size && beam.front().score < worst_kept_.front()) break;
      std::pop_heap(beam.begin(), end, by_score);
      Hyp h = *(end - 1);
      Prefix& p = prefixes_[h.prefix];
      if (p.pending) {
        resolve(p);
        h.score = log_add(h.pb, h.pnb) + p.lm_score + p.lookahead;
      }
      kept_.push_back(h);
      worst_kept_.push_back(h.score);
      std::push_heap(worst_kept_.begin(), worst_kept_.end(), std::greater<float>());
      if (worst_kept_.size() > size) {
        std::pop_heap(worst_kept_.begin(), worst_kept_.end(), std::greater<float>());
        worst_kept_.pop_back();
      }
    }
    beam.swap(kept_);
  }

  // An upper bound of the pending LM score and bonus of p.
  float pending_bound(const Prefix& p) const { return weight_ * lm_->best_next[p.lm_node] + bonus_; }

  // Adds the pending LM score of a prefix's last token.
  void resolve(Prefix& p) {
    const int32_t word = lm_->token_word[p.token] >= 0 ? lm_->token_word[p.token] : lm_->unk_word;
    const auto [logprob, node] = cache_.score(p.lm_node, word);
    p.lm_score += weight_ * logprob + bonus_;
    p.lm_node = node;
    p.pending = false;
  }

  // The child of prefix by token c (created on first use with its LM score), -1 when the lexicon forbids it.
  int32_t extend(int32_t parent, int32_t c) {
    const uint64_t key = static_cast<uint64_t>(parent) * static_cast<uint64_t>(vocab_) + c;
    const int32_t known = children_.find(key);
    if (known != -1) return known;
    Prefix child = prefixes_[parent];
    child.parent = parent;
    child.token = c;
    child.pending = false;
    if (!score_token(child, c)) {
      children_.insert(key, -2);
      return -2;
    }
    const auto id = static_cast<int32_t>(prefixes_.size());
    prefixes_.push_back(child);
    stamp_.push_back(-1);
    slot_.push_back(0);
    parent_stamp_.push_back(-1);
    children_.insert(key, id);
    return id;
  }

  // Updates a new prefix's LM fields for its last token c; false when the lexicon forbids the prefix.
  bool score_token(Prefix& p, int32_t c) {
    if (lm_ == nullptr) {
      p.lm_score += bonus_;
      return true;
    }
    if (lazy_) {
      p.pending = true;
      return true;
    }
    if (lm_->mode == 1) {
      const int32_t word = lm_->token_word[c] >= 0 ? lm_->token_word[c] : lm_->unk_word;
      const auto [logprob, node] = cache_.score(p.lm_node, word);
      p.lm_score += weight_ * logprob + bonus_;
      p.lm_node = node;
      return true;
    }
    if (c == opt_.space) return p.word_node == 0 || end_word(p);
    p.word_node = p.word_node >= 0 ? lm_->trie_child(p.word_node, c) : -1;
    if (p.word_node < 0 && opt_.lexicon_only) return false;
    p.lookahead = p.word_node >= 0
                      ? weight_ * lm_->node_smear[p.word_node]
                      : weight_ * cache_.score(0, lm_->unk_word).first + static_cast<float>(opt_.oov_penalty);
    return true;
  }

  // Scores the partial word of p with the word LM; false when the lexicon has no such word (except for the
  // utterance's last word, which may be unfinished: it scores as <unk>).
  bool end_word(Prefix& p, bool last = false) {
    const int32_t word = p.word_node >= 0 ? lm_->node_word[p.word_node] : -1;
    if (word < 0 && opt_.lexicon_only && !last) return false;
    const auto [logprob, node] = cache_.score(p.lm_node, word >= 0 ? word : lm_->unk_word);
    p.lm_score += weight_ * logprob + bonus_ + (word >= 0 ? 0.0f : static_cast<float>(opt_.oov_penalty));
    p.lm_node = node;
    p.word_node = 0;
    p.lookahead = 0.0f;
    return true;
  }

  // Adds the end of the sentence (and a last word) to every hypothesis; the n-best, best first.
  std::vector<Hypothesis> finish(const std::vector<Hyp>& beam) {
    std::vector<std::tuple<float, float, int32_t>> finals;  // (score, acoustic, prefix)
    for (const Hyp& h : beam) {
      Prefix p = prefixes_[h.prefix];  // pruning left every prefix of the beam scored
      if (lm_ != nullptr) {
        if (lm_->mode == 2 && p.word_node != 0) end_word(p, /*last=*/true);
        p.lm_score += weight_ * cache_.score(p.lm_node, lm_->end_word).first;
      }
      const float acoustic = log_add(h.pb, h.pnb);
      finals.emplace_back(acoustic + p.lm_score, acoustic, h.prefix);
    }
    const auto count = std::min<size_t>(finals.size(), static_cast<size_t>(opt_.nbest));
    std::partial_sort(finals.begin(), finals.begin() + count, finals.end(),
                      [](const auto& a, const auto& b) { return std::get<0>(a) > std::get<0>(b); });
    std::vector<Hypothesis> out;
    for (size_t i = 0; i < count; ++i) {
      const auto [score, acoustic, prefix] = finals[i];
      std::vector<int64_t> labels;
      for (int32_t n = prefix; n > 0; n = prefixes_[n].parent) labels.push_back(prefixes_[n].token);
      std::reverse(labels.begin(), labels.end());
      out.emplace_back(std::move(labels), score, acoustic, score - acoustic);
    }
    return out;
  }

  const SearchOptions& opt_;
  const DecoderLM* lm_;
  ScoreCache& cache_;
  int64_t vocab_;
  std::vector<Prefix> prefixes_;
  std::vector<int32_t> stamp_, slot_;  // per prefix: the frame it was last added to next_, and where
  std::vector<int32_t> parent_stamp_;  // per prefix: the last frame one of its children was in the beam
  std::vector<float> stays_;
  std::vector<Hyp> next_;
  std::vector<char> candidate_;  // per frame, walking the lexicon: whether a token is among those tried
  IdMap children_;               // parent * V + token -> child prefix (-2: forbidden by the lexicon)
  bool lazy_;                    // token LM scores are left pending until pruning
  float weight_, bonus_;         // lm_weight and insertion_bonus
  std::vector<Hyp> kept_;
  std::vector<float> worst_kept_;
};

}  // namespace

IdMap::IdMap(size_t capacity) {
  size_t size = 16;
  while (size < 2 * capacity) size *= 2;
  keys_.assign(size, kEmpty);
  values_.assign(size, -1);
  mask_ = size - 1;
}

int32_t IdMap::find(uint64_t key) const {
  for (uint64_t i = mix(key) & mask_;; i = (i + 1) & mask_) {
    if (keys_[i] == key) return values_[i];
    if (keys_[i] == kEmpty) return -1;
  }
}

void IdMap::insert(uint64_t key, int32_t value) {
  if (2 * (size_ + 1) > keys_.size()) grow();
  uint64_t i = mix(key) & mask_;
  while (keys_[i] != kEmpty && keys_[i] != key) i = (i + 1) & mask_;
  size_ += keys_[i] == kEmpty;
  keys_[i] = key;
  values_[i] = value;
}

void IdMap::clear() {
  std::fill(keys_.begin(), keys_.end(), kEmpty);
  size_ = 0;
}

void IdMap::grow() {
  std::vector<uint64_t> keys;
  std::vector<int32_t> values;
  keys.swap(keys_);
  values.swap(values_);
  keys_.assign(2 * keys.size(), kEmpty);
  values_.assign(2 * keys.size(), -1);
  mask_ = keys_.size() - 1;
  size_ = 0;
  for (size_t i = 0; i < keys.size(); ++i)
    if (keys[i] != kEmpty) insert(keys[i], values[i]);
}

DecoderLM::DecoderLM(const LMArrays& arrays)
    : mode(arrays.mode),
      start_node(static_cast<int32_t>(arrays.start_node)),
      end_word(static_cast<int32_t>(arrays.end_word)),
      unk_word(static_cast<int32_t>(arrays.unk_word)),
      entries(static_cast<size_t>(arrays.keys.numel())),
      logprob(to_vector<float>(arrays.logprob)),
      backoff(to_vector<float>(arrays.backoff)),
      node_smear(to_vector<float>(arrays.node_smear)),
      next_node(to_vector<int32_t>(arrays.next_node)),
      suffix(to_vector<int32_t>(arrays.suffix)),
      token_word(to_vector<int32_t>(arrays.token_word)),
      child_start(to_vector<int32_t>(arrays.child_start)),
      child_token(to_vector<int32_t>(arrays.child_token)),
      child_node(to_vector<int32_t>(arrays.child_node)),
      node_word(to_vector<int32_t>(arrays.node_word)) {
  TORCH_CHECK(mode == 1 || mode == 2, "DecoderLM mode must be 1 (token LM) or 2 (word LM), got ", mode);
  const std::vector<int64_t> key_list = to_vector<int64_t>(arrays.keys);
  TORCH_CHECK(key_list.size() == this->logprob.size() && key_list.size() == this->next_node.size(),
              "DecoderLM: keys, logprob and next_node must have one entry per n-gram");
  TORCH_CHECK(this->backoff.size() == this->suffix.size(), "DecoderLM: backoff and suffix need one entry per node");
  for (size_t i = 0; i < key_list.size(); ++i) entries.insert(static_cast<uint64_t>(key_list[i]), int32_t(i));
  // best_next[node] = max(largest logprob stored under node, backoff[node] + best_next[suffix[node]]): a word
  // either has an n-gram under node or backs off to the suffix. Suffixes are shorter, so a node's chain ends.
  std::vector<float> stored(this->backoff.size(), kNegInf);
  for (size_t i = 0; i < key_list.size(); ++i) {
    float& top = stored[static_cast<size_t>(static_cast<uint64_t>(key_list[i]) >> 32)];
    top = std::max(top, this->logprob[i]);
  }
  best_next.assign(this->backoff.size(), std::numeric_limits<float>::quiet_NaN());
  std::vector<int32_t> chain;
  for (size_t node = 0; node < best_next.size(); ++node) {
    chain.clear();
    for (int32_t n = static_cast<int32_t>(node); std::isnan(best_next[n]); n = this->suffix[n]) {
      chain.push_back(n);
      if (n == 0) break;
    }
    for (auto it = chain.rbegin(); it != chain.rend(); ++it) {
      const int32_t n = *it;
      // node 0: a word outside the LM scores as <unk>, stored under node 0 too
      best_next[n] = n == 0 ? stored[0] : std::max(stored[n], this->backoff[n] + best_next[this->suffix[n]]);
    }
  }
}

std::pair<float, int32_t> DecoderLM::score(int32_t node, int32_t word) const {
  float total = 0.0f;
  for (;;) {
    const int32_t e = entries.find((static_cast<uint64_t>(node) << 32) | static_cast<uint32_t>(word));
    if (e >= 0) return {total + logprob[e], next_node[e]};
    if (node == 0) return {total + score(0, unk_word).first, 0};  // a word outside the LM scores as <unk>
    total += backoff[node];
    node = suffix[node];
  }
}

int32_t DecoderLM::trie_child(int32_t trie_node, int32_t token) const {
  for (int32_t i = child_start[trie_node]; i < child_start[trie_node + 1]; ++i)
    if (child_token[i] == token) return child_node[i];
  return -1;
}

std::vector<std::vector<Hypothesis>> ctc_beam_search_cpu(const at::Tensor& log_probs, const at::Tensor& lengths,
                                                         const SearchOptions& options, const DecoderLM* lm) {
  TORCH_CHECK(log_probs.dim() == 3 && log_probs.scalar_type() == at::kFloat && !log_probs.is_cuda(),
              "log_probs must be a (B, T, V) float32 CPU tensor");
  TORCH_CHECK(options.beam >= 1 && options.token_beam >= 1 && options.nbest >= 1,
              "beam, token_beam and nbest must be at least 1");
  const at::Tensor scores = log_probs.contiguous();
  const at::Tensor lens = lengths.to(at::kLong).contiguous();
  const int64_t batch = scores.size(0), frames = scores.size(1), vocab = scores.size(2);
  TORCH_CHECK(lens.numel() == batch, "lengths must have one entry per utterance");
  const float* data = scores.data_ptr<float>();
  const int64_t* len = lens.data_ptr<int64_t>();
  std::vector<std::vector<Hypothesis>> results(batch);
  {
    pybind11::gil_scoped_release no_gil;
    at::parallel_for(0, batch, 1, [&](int64_t begin, int64_t end) {
      ScoreCache cache(lm);  // one per thread: the utterances of a batch share one LM
      for (int64_t b = begin; b < end; ++b)
        results[b] = Search(options, lm, cache, vocab).run(data + b * frames * vocab, std::min(len[b], frames));
    });
  }
  return results;
}

}  // namespace metarecipe
