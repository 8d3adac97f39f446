#!/usr/bin/env bash
# Low-resource ASR by meta-learning: meta-train a CTC model on source languages, adapt it to each target language
# on a few minutes of speech, decode with a beam search and the target's n-gram LM, score.
#
#   ./run.sh                                   # built-in real speech (asterisk-core-sounds), every stage
#   ./run.sh --corpus demo                     # the built-in synthetic (espeak-ng) corpus of earlier releases
#   ./run.sh --target-corpus local/my_corpus.py --target-corpus-dir /data/my_lang --target-langs xx
#                                              # your own recordings as the target, the built-in sources
#   ./run.sh --cv-root /data/cv-corpus-21.0 --source-langs "de es it" --target-langs "eo"
#   ./run.sh --stage 6 --stop-stage 6 --beam 32  # re-decode with another beam, nothing before it redone
#   ./run.sh --mini                            # every stage on a tiny slice (conf/mini.conf), for CI
#
# Stages: 0 corpus, 1 data prep, 2 features, 3 tokens + LM, 4 meta-train, 5 adapt, 6 decode + score (and a recognizer.pt per model for `metarecipe transcribe`), 7 report,
# 8 compress (pruned, int8 and pruned + int8 models of the largest budget's first seed, decoded on 1 thread;
# RESULTS.md again).
# Every unit of work leaves a .done marker holding the command that made it (written last); a re-run skips
# what is done with the same command and redoes what changed or was interrupted. --force redoes the stages run.
set -euo pipefail
cd "$(dirname "$0")"

# begin options
stage=0                 # first stage to run
stop_stage=8            # last stage to run
nj=2                    # parallel jobs (corpus, features, adaptation, decoding)
corpus=asterisk         # asterisk: built-in real speech; demo: built-in espeak-ng speech; or a plug-in name or file
corpus_dir=""           # the directory of --corpus (asterisk: /usr/share/asterisk/sounds)
cv_root=""              # a Common Voice release (dir with <lang>/): short for --corpus commonvoice --corpus-dir DIR
target_corpus=""        # the target languages' corpus when it is another one (a plug-in name or file)
target_corpus_dir=""    # the directory of --target-corpus
source_langs=""         # languages meta-trained on (empty: the corpus's; asterisk: en fr ru, demo: de es it pl cs ru)
target_langs=""         # languages adapted to, never seen in meta-training (empty: asterisk: es it, demo: eo pt)
synthetic_langs=""      # espeak-ng languages added as synthetic source tasks (never a target language)
demo_minutes=30.0       # demo and synthetic corpora: minutes of speech per language
sample_rate=0           # feature sample rate in Hz, every corpus resampled to it (0: 8000 for asterisk, else 16000)
num_mel_bins=0          # fbank bins (0: 40 at 8 kHz, 80 above)
budgets="1 2 5"         # adaptation budgets, minutes of target speech
adapt_seeds="0 1"       # adaptation seeds: each draws other minutes of the budget (mean and CI over them)
algos="default"         # methods: default = scratch multilingual metasgd; all adds fomaml maml reptile anil pnn
meta_config=conf/meta_train.yaml  # metarecipe meta-train config (model, inner loop, augmentation)
adapt_config=conf/adapt.yaml      # metarecipe adapt config of every method but scratch
scratch_config=conf/scratch.yaml  # the scratch baseline's model (a size for minutes of speech)
scratch_adapt_config=conf/adapt_scratch.yaml  # and its training schedule
augment=true            # false: no augmentation in meta-training and adaptation (an ablation; use another --exp)
meta_init=multilingual  # meta-learners start from this method's model (empty: from scratch)
meta_steps=400          # meta-training steps (of every method without --meta-init)
meta_steps_after_init=150  # steps of the methods that start from --meta-init, and of multilingual's continuation
meta_lr_after_init=0.0005  # their outer learning rate
meta_nproc=1            # processes per meta-training run (torchrun when above 1)
lm_unit=char            # n-gram LM over char (the model's tokens) or word
lm_order=6              # n-gram order
beam=16                 # beam size
lm_weight=0.8           # LM weight (shallow fusion)
insertion_bonus=1.5     # per token, balances the LM's cost of every character (chosen on source dev sets)
token_threshold=-6      # per frame, tokens more than this (ln) below the best are not tried
decode_set=test         # the target split decoded and scored
compress_keep_units=0.9     # stage 8: share of GRU units and projection outputs kept by structured pruning
compress_keep_channels=0.75 # stage 8: share of convolution channels kept
compress_sparsity=0.2       # stage 8: share of the remaining weights zeroed by global magnitude pruning
compress_finetune=true      # stage 8: fine-tune pruned models on their adaptation budget
compress_distill=1.0        # stage 8: fine-tune objective, (1 - w) x CTC + w x KL from the unpruned model
compress_methods="multilingual"  # stage 8: the methods whose adapted models are compressed (empty: all)
compress_finetune_steps=60  # stage 8: at most this many fine-tune steps of a pruned model
seed=0                  # corpus and sampling seed
data=data               # data directories
exp=exp                 # experiment directories
report_dir=.            # where RESULTS.md and cer_vs_minutes.png go (another run's report: another dir)
force=false             # redo the work of the stages run even when done
# end options
help_message="Stages: 0 corpus, 1 data prep, 2 features, 3 tokens + LM, 4 meta-train, 5 adapt, 6 decode + score,
7 report (RESULTS.md, cer_vs_minutes.png), 8 compress (+ RESULTS.md). --mini is short for --config conf/mini.conf."

. utils/parse_options.sh
[ $# -eq 0 ] || { echo "run.sh: unexpected argument '$1'; see --help" >&2; exit 1; }
. ./path.sh
. ./cmd.sh
. utils/lib.sh

case $algos in
  default) algos="scratch multilingual metasgd" ;;
  all) algos="scratch multilingual fomaml maml metasgd reptile anil pnn" ;;
esac
for algo in $algos; do
  case $algo in scratch|multilingual|fomaml|maml|metasgd|reptile|anil|pnn) ;;
    *) echo "run.sh: --algos: unknown method '$algo'" >&2; exit 1 ;; esac
done
case $augment in true|false) ;; *) echo "run.sh: --augment must be true or false, got '$augment'" >&2; exit 1 ;; esac
case $corpus in
  asterisk) corpus_dir=${corpus_dir:-/usr/share/asterisk/sounds} default_sources="en fr ru" default_targets="es it" ;;
  demo) corpus_dir=${corpus_dir:-$data/corpus} default_sources="de es it pl cs ru" default_targets="eo pt" ;;
  *) default_sources="" default_targets="" ;;
esac
[ -z "$cv_root" ] || corpus=commonvoice corpus_dir=$cv_root
source_langs=${source_langs:-$default_sources}
target_langs=${target_langs:-$default_targets}
[ -n "$corpus_dir" ] || { echo "run.sh: --corpus $corpus needs --corpus-dir" >&2; exit 1; }
[ -n "$source_langs" ] && [ -n "$target_langs" ] ||
  { echo "run.sh: --corpus $corpus needs --source-langs and --target-langs" >&2; exit 1; }
if [ -n "$target_corpus" ]; then
  [ -n "$target_corpus_dir" ] || { echo "run.sh: --target-corpus $target_corpus needs --target-corpus-dir" >&2; exit 1; }
else
  target_corpus=$corpus target_corpus_dir=$corpus_dir
fi
for lang in $target_langs; do  # a target is never seen in meta-training, in any form
  [[ " $source_langs $synthetic_langs " != *" $lang "* ]] ||
    { echo "run.sh: $lang is a target language and also a source (--source-langs or --synthetic-langs)" >&2; exit 1; }
done
[ "$sample_rate" -gt 0 ] || sample_rate=$([ "$corpus" = asterisk ] && echo 8000 || echo 16000)
[ "$num_mel_bins" -gt 0 ] || num_mel_bins=$([ "$sample_rate" -le 8000 ] && echo 40 || echo 80)
langs="$source_langs $target_langs"
# every data dir of the run by split: the corpus's languages under $data/<lang>, the synthetic sources under
# $data/synthetic/<lang>
source_dirs() { for l in $source_langs; do echo "$data/$l/$1"; done; for l in $synthetic_langs; do echo "$data/synthetic/$l/$1"; done; }
all_dirs() { source_dirs "$1"; for l in $target_langs; do echo "$data/$l/$1"; done; }
threads_per_job=$(( $(nproc) / nj > 0 ? $(nproc) / nj : 1 ))
mkdir -p "$exp"
log "options: $(for n in stage stop_stage nj corpus corpus_dir target_corpus target_corpus_dir source_langs target_langs \
  synthetic_langs sample_rate num_mel_bins budgets adapt_seeds algos augment meta_init meta_nproc beam lm_weight \
  token_threshold decode_set; do printf '%s=%q ' "$n" "${!n}"; done)"

# the corpora of the run as "corpus dir name": name is where the languages' data dirs go ($data/<lang>, or
# $data/synthetic/<lang> for the synthetic source languages)
corpora() {
  if [ "$target_corpus" = "$corpus" ] && [ "$target_corpus_dir" = "$corpus_dir" ]; then
    echo "$corpus $corpus_dir corpus $langs"
  else
    echo "$corpus $corpus_dir corpus $source_langs"
    echo "$target_corpus $target_corpus_dir target $target_langs"
  fi
  [ -z "$synthetic_langs" ] || echo "demo $data/synthetic_corpus synthetic $synthetic_langs"
}

mapfile -t corpus_specs < <(corpora)

# fetch_corpus CORPUS DIR NAME LANG...: the corpus installed (asterisk), generated (demo) or checked
fetch_corpus() {
  local corpus=$1 dir=$2 name=$3
  shift 3
  case $corpus in
    asterisk) install_asterisk_sounds "$@" ;;
    demo)
      install_demo_tools "$@"
      once "$dir" "$exp/log/corpus_$name.log" \
        metarecipe make-demo-corpus "$dir" --langs "$@" --minutes "$demo_minutes" --seed "$seed" --nj "$nj" ;;
    commonvoice)
      for lang in "$@"; do
        [ -f "$dir/$lang/train.tsv" ] || [ -f "$dir/$lang/validated.tsv" ] ||
          { log "$dir has no $lang/train.tsv or $lang/validated.tsv (a Common Voice release?)"; return 1; }
      done ;;
    *) [ -d "$dir" ] || { log "corpus directory $dir: not a directory"; return 1; } ;;
  esac
}

# prepare_corpus CORPUS DIR NAME LANG...: the data dirs of these languages (the demo corpus in Common Voice layout)
prepare_corpus() {
  local corpus=$1 dir=$2 name=$3 out=$data
  shift 3
  [ "$name" != synthetic ] || out=$data/synthetic
  [ "$corpus" != demo ] || corpus=commonvoice
  once "$out/.prepared/$name" "$exp/log/prepare_data_$name.log" \
    metarecipe prepare-data "$corpus" "$dir" "$out" --langs "$@" --splits train dev test
}

if stage 0 corpus; then
  install_noise_recordings
  for spec in "${corpus_specs[@]}"; do fetch_corpus $spec; done
  stage_end
fi

if stage 1 "data prep"; then
  for spec in "${corpus_specs[@]}"; do prepare_corpus $spec; done
  stage_end
fi

if stage 2 features; then
  for dir in $(all_dirs train) $(all_dirs dev) $(all_dirs test); do
    spawn once "$dir/fbank" "$exp/log/feats_$(echo "${dir#"$data"/}" | tr / _).log" \
      metarecipe compute-feats "$dir" --nj 1 --sample-rate "$sample_rate" --num-mel-bins "$num_mel_bins"
  done
  wait_all
  stage_end
fi

if stage 3 "tokens + LM"; then
  once "$data/lang" "$exp/log/tokens.log" metarecipe make-tokens "$data/lang/tokens.txt" $(all_dirs train)
  for lang in $target_langs; do
    lm_source=(--kaldi-text "$data/$lang/train/text")  # the target's transcripts (more text helps)
    [ "$target_corpus" != demo ] || lm_source=(--demo)
    mkdir -p "$data/lm/$lang/text"
    once "$data/lm/$lang/text" "$exp/log/lm_text_$lang.log" metarecipe lm-text "$data/lm/$lang/text/lm.txt" --lang "$lang" \
      "${lm_source[@]}" --exclude "$data/$lang/dev/text" "$data/$lang/test/text"
    cut -s -d' ' -f2- "$data/$lang/dev/text" > "$data/lm/$lang/text/dev.txt"
    once "$data/lm/$lang/${lm_unit}$lm_order" "$exp/log/lm_$lang.log" metarecipe train-lm --text "$data/lm/$lang/text/lm.txt" \
      --unit "$lm_unit" --order "$lm_order" --out "$data/lm/$lang/${lm_unit}$lm_order/lm.arpa" --dev "$data/lm/$lang/text/dev.txt"
  done
  stage_end
fi

# meta_dir METHOD: the meta-training run whose final.pt the method adapts from. With --meta-init, multilingual's
# own row adapts from its continuation for --meta-steps-after-init steps, so that every method but scratch has
# trained as many steps; pnn grows a column on that same model.
meta_dir() {
  case $1 in
    multilingual|pnn)
      if [ "$meta_init" = multilingual ] && [ "$meta_steps_after_init" -gt 0 ]; then echo "$exp/meta_multilingual_long"
      else echo "$exp/meta_multilingual"; fi ;;
    *) echo "$exp/meta_$1" ;;
  esac
}
model_of() { echo "$(meta_dir "$1")/final.pt"; }
adapt_options_of() {
  case $1 in
    pnn) echo "--config $adapt_config rule=pnn" ;;
    scratch) echo "--config $scratch_adapt_config" ;;
    *) echo "--config $adapt_config" ;;
  esac
}
augment_overrides() { [ "$augment" = true ] || echo augment.enabled=false; }  # last on a command line
list() { local IFS=,; echo "[$*]"; }

# meta_train DIR STEPS INIT OPTION...: one meta-training run (INIT: a model file to start from, or "")
meta_train() {
  local dir=$1 steps=$2 init=$3
  shift 3
  local options=(data.train="$(list $(source_dirs train))" data.held_out="$(list $(source_dirs dev))"
                 data.tokens="$data/lang/tokens.txt" model.num_mel_bins="$num_mel_bins" train.seed="$seed"
                 train.steps="$steps")
  [ -z "$init" ] || options+=(init="$init" train.meta_lr="$meta_lr_after_init")
  options+=($(augment_overrides))
  [ "$force" = false ] || set_aside "$dir"
  once "$dir" "$exp/log/$(basename "$dir").log" meta_train_cmd "$meta_nproc" --exp-dir "$dir" "$@" "${options[@]}"
}

if stage 4 meta-train; then
  meta_algos=$(for a in $algos; do case $a in pnn) echo multilingual ;; *) echo "$a" ;; esac; done | awk '!seen[$0]++')
  if [ -n "$meta_init" ]; then  # the initialising method first
    meta_train "$exp/meta_$meta_init" "$meta_steps" "" --config "$meta_config" algorithm="$meta_init"
  fi
  for algo in $meta_algos; do
    if [ "$algo" = scratch ]; then  # its own small model: the seeded initial parameters only
      meta_train "$exp/meta_scratch" 1 "" --config "$scratch_config" algorithm=scratch
    elif [ -z "$meta_init" ]; then
      meta_train "$exp/meta_$algo" "$meta_steps" "" --config "$meta_config" algorithm="$algo"
    elif [ "$algo" = "$meta_init" ]; then
      [ "$(meta_dir "$algo")" = "$exp/meta_$algo" ] ||
        meta_train "$(meta_dir "$algo")" "$meta_steps_after_init" "$exp/meta_$meta_init/final.pt" \
          --config "$meta_config" algorithm="$algo"
    else
      meta_train "$exp/meta_$algo" "$meta_steps_after_init" "$exp/meta_$meta_init/final.pt" \
        --config "$meta_config" algorithm="$algo"
    fi
  done
  stage_end
fi

adapt_dir() { echo "$exp/adapt/${1}_${2}_${3}m_s$4"; }
# every adaptation of the run as method:lang:minutes:seed
adaptations=$(for a in $algos; do for l in $target_langs; do for m in $budgets; do for s in $adapt_seeds; do
  echo "$a:$l:$m:$s"; done; done; done; done)

if stage 5 adapt; then
  export OMP_NUM_THREADS=$threads_per_job
  for run in $adaptations; do
    IFS=: read -r algo lang minutes adapt_seed <<< "$run"
    dir=$(adapt_dir "$algo" "$lang" "$minutes" "$adapt_seed")
    [ "$force" = false ] || set_aside "$dir"
    spawn once "$dir" "$exp/log/adapt_$(basename "$dir").log" \
      run_cmd metarecipe adapt $(adapt_options_of "$algo") --exp-dir "$dir" model="$(model_of "$algo")" \
      data="$data/$lang/train" adapt.minutes="$minutes" adapt.seed="$adapt_seed" $(augment_overrides)
  done
  wait_all
  unset OMP_NUM_THREADS
  stage_end
fi

# decode_and_score ADAPT_DIR METHOD LANG MINUTES SEED DECODE_OPTION...: hypotheses and scores of the decode set, and
# ADAPT_DIR/recognizer.pt: the adapted model bundled with its LM and these options (`metarecipe transcribe` reads it)
decode_and_score() {
  local dir=$1/decode_$decode_set
  run_cmd metarecipe decode "$1/adapted.pt" "$data/$3/$decode_set" "$dir" "${@:6}" &&
  metarecipe score --ref "$data/$3/$decode_set/text" --hyp "$dir/hyp" --utt2spk "$data/$3/$decode_set/utt2spk" \
    --out-dir "$dir" --tag method="$2" --tag target="$3" --tag minutes="$4" --tag seed="$5" --tag set="$decode_set" &&
  metarecipe bundle "$1/adapted.pt" "$1/recognizer.pt" "${@:6}"
}

if stage 6 "decode + score"; then
  export OMP_NUM_THREADS=$threads_per_job
  for run in $adaptations; do
    IFS=: read -r algo lang minutes adapt_seed <<< "$run"
    dir=$(adapt_dir "$algo" "$lang" "$minutes" "$adapt_seed")
    spawn once "$dir/decode_$decode_set" "$exp/log/decode_$(basename "$dir").log" \
      decode_and_score "$dir" "$algo" "$lang" "$minutes" "$adapt_seed" --lm "$data/lm/$lang/${lm_unit}$lm_order/lm.arpa" \
      --lm-unit "$([ "$lm_unit" = char ] && echo token || echo word)" --beam "$beam" --lm-weight "$lm_weight" --insertion-bonus "$insertion_bonus" \
      --token-threshold "$token_threshold"
  done
  wait_all
  unset OMP_NUM_THREADS
  stage_end
fi

# write_report: RESULTS.md and cer_vs_minutes.png from every score of the run (compressed models' included),
# unless the scores, adaptation summaries and meta-training runs are those of the last report
write_report() {
  local scores signature meta_dirs=() algo
  for algo in $algos; do meta_dirs+=(--meta-dir "$algo=$(meta_dir "$algo")"); done
  scores=$(for run in $adaptations; do
    IFS=: read -r algo lang minutes adapt_seed <<< "$run"
    dir=$(adapt_dir "$algo" "$lang" "$minutes" "$adapt_seed")
    cat "$dir/decode_$decode_set/.done" 2>/dev/null || echo "missing $run"
    cat "$dir/adapt.json" "$dir"/compress/*/.done "$dir"/decode_"$decode_set"/{scores,decode}.json \
      "$dir"/compress/*/decode_"$decode_set"/{scores,decode}.json 2>/dev/null || true
  done; for algo in $algos; do cat "$(meta_dir "$algo")/.done" 2>/dev/null || true; done)
  signature="report $report_dir $algos $(printf '%s' "$scores" | md5sum | cut -c1-16)"
  if ! is_done "$exp/report" "$signature"; then
    mkdir -p "$report_dir"
    metarecipe report "$exp/adapt" --out "$report_dir/RESULTS.md" --plot "$report_dir/cer_vs_minutes.png" --set "$decode_set" \
      --methods $algos "${meta_dirs[@]}" --title "Results: recipes/cv_lowresource" \
      --setting "corpus=$corpus_dir ($corpus)$([ "$target_corpus_dir" = "$corpus_dir" ] ||
        echo ", targets: $target_corpus_dir ($target_corpus)")" \
      --setting "source languages=$source_langs$([ -z "$synthetic_langs" ] || echo " + synthetic $synthetic_langs")" \
      --setting "target languages=$target_langs" \
      --setting "features=$num_mel_bins-bin fbank at $sample_rate Hz (every corpus resampled to it)" \
      --setting "budgets (min)=$budgets, adaptation seeds $adapt_seeds" \
      --setting "meta-training=$meta_config, initialised from: ${meta_init:-none}" \
      --setting "adaptation=$adapt_config (scratch: $scratch_config, $scratch_adapt_config)" \
      --setting "decoding=beam $beam, token threshold $token_threshold, $lm_unit $lm_order-gram LM weight $lm_weight, insertion bonus $insertion_bonus, set $decode_set" \
      --setting "augmentation=$([ "$augment" = true ] && echo "on (the configs' augment: sections)" || echo off)" > /dev/null
    mark_done "$exp/report" "$signature"
  fi
  cat "$report_dir/RESULTS.md"
}

if stage 7 report; then
  write_report
  stage_end
fi

# compress_decode_score ADAPT_DIR VARIANT METHOD LANG MINUTES MODEL "DECODE_OPTIONS" SEED COMPRESS_OPTION...: compresses
# MODEL into ADAPT_DIR/compress/VARIANT, decodes it on 1 thread and scores it (the decoding options are one word of
# the command, so that its done-marker changes with them)
compress_decode_score() {
  local dir=$1/compress/$2 lang=$4 decoding
  read -ra decoding <<< "$7"
  run_cmd metarecipe compress "$6" "$dir/model.pt" "${@:9}" &&
  run_cmd metarecipe decode "$dir/model.pt" "$data/$lang/$decode_set" "$dir/decode_$decode_set" --threads 1 \
    --lm "$data/lm/$lang/${lm_unit}$lm_order/lm.arpa" --lm-unit "$([ "$lm_unit" = char ] && echo token || echo word)" \
    "${decoding[@]}" &&
  metarecipe score --ref "$data/$lang/$decode_set/text" --hyp "$dir/decode_$decode_set/hyp" \
    --out-dir "$dir/decode_$decode_set" --tag method="$3" --tag target="$lang" --tag minutes="$5" \
    --tag seed="$8" --tag set="$decode_set" --tag variant="$2"
}

# compress_variants ADAPT_DIR METHOD LANG MINUTES SEED: fp32 (the adapted model exported), int8, pruned (and
# fine-tuned), pruned + int8 (the pruned model quantized)
compress_variants() {
  local dir=$1 name=$(basename "$1") model=$1/adapted.pt
  local decoding="--beam $beam --lm-weight $lm_weight --insertion-bonus $insertion_bonus --token-threshold $token_threshold"
  local prune=(--keep-units "$compress_keep_units" --keep-channels "$compress_keep_channels"
               --sparsity "$compress_sparsity")
  $compress_finetune && prune+=(--finetune-data "$data/$3/train" --finetune-minutes "$4" --seed "$5"
                                --distill "$compress_distill" --finetune-steps "$compress_finetune_steps")
  once "$dir/compress/fp32" "$exp/log/compress_${name}_fp32.log" \
    compress_decode_score "$dir" fp32 "$2" "$3" "$4" "$model" "$decoding" "$5" &&
  once "$dir/compress/int8" "$exp/log/compress_${name}_int8.log" \
    compress_decode_score "$dir" int8 "$2" "$3" "$4" "$model" "$decoding" "$5" --int8 &&
  once "$dir/compress/pruned" "$exp/log/compress_${name}_pruned.log" \
    compress_decode_score "$dir" pruned "$2" "$3" "$4" "$model" "$decoding" "$5" "${prune[@]}" &&
  once "$dir/compress/pruned_int8" "$exp/log/compress_${name}_pruned_int8.log" \
    compress_decode_score "$dir" pruned_int8 "$2" "$3" "$4" "$dir/compress/pruned/model.pt" "$decoding" "$5" --int8
}

if stage 8 compress; then
  largest_budget=$(printf '%s\n' $budgets | sort -g | tail -n1)
  export OMP_NUM_THREADS=1
  for run in $adaptations; do
    IFS=: read -r algo lang minutes adapt_seed <<< "$run"
    if [ -n "$compress_methods" ] && ! [[ " $compress_methods " == *" $algo "* ]]; then continue; fi
    if [ "$algo" = pnn ]; then log "pnn: progressive networks are not compressed"; continue; fi
    [ "$adapt_seed" = "${adapt_seeds%% *}" ] || continue  # the first adaptation seed's models...
    [ "$minutes" = "$largest_budget" ] || continue  # ...of the largest budget: the recognizers a user would ship
    spawn compress_variants "$(adapt_dir "$algo" "$lang" "$minutes" "$adapt_seed")" "$algo" "$lang" "$minutes" \
      "$adapt_seed"
  done
  wait_all
  unset OMP_NUM_THREADS
  write_report
  stage_end
fi
