#!/usr/bin/env bash
# Low-resource ASR by meta-learning, Common Voice style: meta-train a CTC model on source languages, adapt it to
# each target language on a few minutes of speech, decode with a beam search and the target's n-gram LM, score.
#
#   ./run.sh                                   # the built-in demo corpus, every stage (sets itself up)
#   ./run.sh --cv-root /data/cv-corpus-21.0 --source-langs "de es it" --target-langs "eo"
#   ./run.sh --stage 6 --stop-stage 6 --beam 32  # re-decode with another beam, nothing before it redone
#   ./run.sh --mini                            # every stage on a tiny slice (conf/mini.conf), for CI
#
# Stages: 0 corpus, 1 data prep, 2 features, 3 tokens + LM, 4 meta-train, 5 adapt, 6 decode + score, 7 report,
# 8 compress (pruned, int8 and pruned + int8 models of every adaptation, decoded on 1 thread; RESULTS.md again).
# Every unit of work leaves a .done marker holding the command that made it (written last); a re-run skips
# what is done with the same command and redoes what changed or was interrupted. --force redoes the stages run.
set -euo pipefail
cd "$(dirname "$0")"

# begin options
stage=0                 # first stage to run
stop_stage=8            # last stage to run
nj=2                    # parallel jobs (corpus, features, adaptation, decoding)
cv_root=""              # a Common Voice release (dir with <lang>/); empty: generate the built-in demo corpus
corpus=""               # another corpus: a plug-in name or file (local/my_corpus.py, see recipes/TEMPLATE)
corpus_dir=""           # the directory of --corpus
demo_minutes=30.0        # demo corpus: minutes of speech per language
source_langs="de es it pl cs ru"  # languages meta-trained on
target_langs="eo pt"    # languages adapted to (never seen in meta-training)
budgets="1 2 5"         # adaptation budgets, minutes of target speech
algos="default"         # methods: default = scratch multilingual fomaml maml metasgd; all adds reptile anil pnn
meta_config=conf/meta_train.yaml  # metarecipe meta-train config (model, inner loop, steps)
adapt_config=conf/adapt.yaml      # metarecipe adapt config
meta_init=multilingual  # meta-learners start from this method's model (empty: from scratch)
meta_steps=400          # meta-training steps (of every method without --meta-init)
meta_steps_after_init=150  # meta-training steps of the methods that start from --meta-init
meta_lr_after_init=0.0005  # their outer learning rate
meta_nproc=1            # processes per meta-training run (torchrun when above 1)
lm_unit=char            # n-gram LM over char (the model's tokens) or word
lm_order=6              # n-gram order
beam=16                 # beam size
lm_weight=0.8           # LM weight (shallow fusion)
token_threshold=-6      # per frame, tokens more than this (ln) below the best are not tried
decode_set=test         # the target split decoded and scored
compress_keep_units=0.9     # stage 8: share of GRU units and projection outputs kept by structured pruning
compress_keep_channels=0.75 # stage 8: share of convolution channels kept
compress_sparsity=0.2       # stage 8: share of the remaining weights zeroed by global magnitude pruning
compress_finetune=true      # stage 8: fine-tune pruned models on their adaptation budget
compress_distill=1.0        # stage 8: fine-tune objective, (1 - w) x CTC + w x KL from the unpruned model
compress_methods=""         # stage 8: the methods whose adapted models are compressed (empty: all)
seed=0                  # corpus and sampling seed
data=data               # data directories
exp=exp                 # experiment directories
force=false             # redo the work of the stages run even when done
# end options
help_message="Stages: 0 corpus, 1 data prep, 2 features, 3 tokens + LM, 4 meta-train, 5 adapt, 6 decode + score,
7 report (RESULTS.md, cer_vs_minutes.png), 8 compress (+ RESULTS.md). --mini is short for --config conf/mini.conf."

args=()
for arg in "$@"; do
  if [ "$arg" = --mini ]; then args+=(--config conf/mini.conf); else args+=("$arg"); fi
done
set -- "${args[@]+"${args[@]}"}"
. utils/parse_options.sh
[ $# -eq 0 ] || { echo "run.sh: unexpected argument '$1'; see --help" >&2; exit 1; }
. ./path.sh
. ./cmd.sh
. utils/lib.sh

case $algos in
  default) algos="scratch multilingual fomaml maml metasgd" ;;
  all) algos="scratch multilingual fomaml maml metasgd reptile anil pnn" ;;
esac
for algo in $algos; do
  case $algo in scratch|multilingual|fomaml|maml|metasgd|reptile|anil|pnn) ;;
    *) echo "run.sh: --algos: unknown method '$algo'" >&2; exit 1 ;; esac
done
langs="$source_langs $target_langs"
demo=false
if [ -n "$cv_root" ]; then
  corpus=commonvoice corpus_dir=$cv_root
elif [ -z "$corpus_dir" ]; then
  [ -z "$corpus" ] || { echo "run.sh: --corpus $corpus needs --corpus-dir" >&2; exit 1; }
  demo=true corpus=commonvoice corpus_dir=$data/corpus
fi
[ -n "$corpus" ] || { echo "run.sh: --corpus-dir $corpus_dir needs --corpus (a plug-in name or .py file)" >&2; exit 1; }
threads_per_job=$(( $(nproc) / nj > 0 ? $(nproc) / nj : 1 ))
mkdir -p "$exp"
log "options: $(for n in stage stop_stage nj cv_root source_langs target_langs budgets algos meta_init meta_nproc \
  beam lm_weight token_threshold decode_set; do printf '%s=%q ' "$n" "${!n}"; done)"

if stage 0 corpus; then
  if $demo; then
    install_demo_tools $langs
    once "$corpus_dir" "$exp/log/corpus.log" \
      metarecipe make-demo-corpus "$corpus_dir" --langs $langs --minutes "$demo_minutes" --seed "$seed" --nj "$nj"
  elif [ "$corpus" = commonvoice ]; then
    for lang in $langs; do
      [ -f "$corpus_dir/$lang/train.tsv" ] || [ -f "$corpus_dir/$lang/validated.tsv" ] ||
        { log "$corpus_dir has no $lang/train.tsv or $lang/validated.tsv (a Common Voice release?)"; exit 1; }
    done
  else
    [ -d "$corpus_dir" ] || { log "--corpus-dir $corpus_dir: not a directory"; exit 1; }
  fi
  stage_end
fi

if stage 1 "data prep"; then
  once "$data" "$exp/log/prepare_data.log" \
    metarecipe prepare-data "$corpus" "$corpus_dir" "$data" --langs $langs --splits train dev test
  stage_end
fi

if stage 2 features; then
  for lang in $langs; do
    for split in train dev test; do
      spawn once "$data/$lang/$split/fbank" "$exp/log/feats_${lang}_$split.log" \
        metarecipe compute-feats "$data/$lang/$split" --nj 1
    done
  done
  wait_all
  stage_end
fi

if stage 3 "tokens + LM"; then
  once "$data/lang" "$exp/log/tokens.log" metarecipe make-tokens "$data/lang/tokens.txt" $(for l in $langs; do echo "$data/$l/train"; done)
  for lang in $target_langs; do
    lm_source=(--demo)
    $demo || lm_source=(--kaldi-text "$data/$lang/train/text")  # the target's transcripts (more text helps)
    mkdir -p "$data/lm/$lang/text"
    once "$data/lm/$lang/text" "$exp/log/lm_text_$lang.log" metarecipe lm-text "$data/lm/$lang/text/lm.txt" --lang "$lang" \
      "${lm_source[@]}" --exclude "$data/$lang/dev/text" "$data/$lang/test/text"
    cut -s -d' ' -f2- "$data/$lang/dev/text" > "$data/lm/$lang/text/dev.txt"
    once "$data/lm/$lang/${lm_unit}$lm_order" "$exp/log/lm_$lang.log" metarecipe train-lm --text "$data/lm/$lang/text/lm.txt" \
      --unit "$lm_unit" --order "$lm_order" --out "$data/lm/$lang/${lm_unit}$lm_order/lm.arpa" --dev "$data/lm/$lang/text/dev.txt"
  done
  stage_end
fi

# the model file each method adapts from, and its adaptation options
model_of() {
  case $1 in
    pnn) echo "$exp/meta_multilingual/final.pt" ;;
    *) echo "$exp/meta_$1/final.pt" ;;
  esac
}
adapt_options_of() { [ "$1" = pnn ] && echo rule=pnn || true; }
list() { local IFS=,; echo "[$*]"; }

if stage 4 meta-train; then
  meta_algos=$(for a in $algos; do case $a in pnn) echo multilingual ;; *) echo "$a" ;; esac; done | awk '!seen[$0]++')
  if [ -n "$meta_init" ]; then  # the initialising method first
    meta_algos=$( (echo "$meta_init"; echo "$meta_algos") | awk '!seen[$0]++')
  fi
  train_dirs=$(list $(for l in $source_langs; do echo "$data/$l/train"; done))
  held_out_dirs=$(list $(for l in $source_langs; do echo "$data/$l/dev"; done))
  for algo in $meta_algos; do
    init=(train.steps="$meta_steps")
    if [ -n "$meta_init" ] && [ "$algo" != "$meta_init" ] && [ "$algo" != scratch ]; then
      init=(init="$(model_of "$meta_init")" train.steps="$meta_steps_after_init" train.meta_lr="$meta_lr_after_init")
    fi
    once "$exp/meta_$algo" "$exp/log/meta_$algo.log" meta_train_cmd "$meta_nproc" --config "$meta_config" \
      --exp-dir "$exp/meta_$algo" algorithm="$algo" data.train="$train_dirs" data.held_out="$held_out_dirs" \
      data.tokens="$data/lang/tokens.txt" train.seed="$seed" "${init[@]}"
  done
  stage_end
fi

adapt_dir() { echo "$exp/adapt/${1}_${2}_${3}m"; }
# every adaptation of the run as method:lang:minutes
adaptations=$(for a in $algos; do for l in $target_langs; do for m in $budgets; do echo "$a:$l:$m"; done; done; done)

if stage 5 adapt; then
  export OMP_NUM_THREADS=$threads_per_job
  for run in $adaptations; do
    IFS=: read -r algo lang minutes <<< "$run"
    dir=$(adapt_dir "$algo" "$lang" "$minutes")
    spawn once "$dir" "$exp/log/adapt_${algo}_${lang}_${minutes}m.log" \
      run_cmd metarecipe adapt --config "$adapt_config" --exp-dir "$dir" model="$(model_of "$algo")" \
      data="$data/$lang/train" adapt.minutes="$minutes" adapt.seed="$seed" $(adapt_options_of "$algo")
  done
  wait_all
  unset OMP_NUM_THREADS
  stage_end
fi

# decode_and_score ADAPT_DIR METHOD LANG MINUTES DECODE_OPTION...: hypotheses and scores of the decode set
decode_and_score() {
  local dir=$1/decode_$decode_set
  run_cmd metarecipe decode "$1/adapted.pt" "$data/$3/$decode_set" "$dir" "${@:5}" &&
  metarecipe score --ref "$data/$3/$decode_set/text" --hyp "$dir/hyp" --utt2spk "$data/$3/$decode_set/utt2spk" \
    --out-dir "$dir" --tag method="$2" --tag target="$3" --tag minutes="$4" --tag set="$decode_set"
}

if stage 6 "decode + score"; then
  export OMP_NUM_THREADS=$threads_per_job
  for run in $adaptations; do
    IFS=: read -r algo lang minutes <<< "$run"
    dir=$(adapt_dir "$algo" "$lang" "$minutes")
    spawn once "$dir/decode_$decode_set" "$exp/log/decode_${algo}_${lang}_${minutes}m.log" \
      decode_and_score "$dir" "$algo" "$lang" "$minutes" --lm "$data/lm/$lang/${lm_unit}$lm_order/lm.arpa" \
      --lm-unit "$([ "$lm_unit" = char ] && echo token || echo word)" --beam "$beam" --lm-weight "$lm_weight" --token-threshold "$token_threshold"
  done
  wait_all
  unset OMP_NUM_THREADS
  stage_end
fi

# write_report: RESULTS.md and cer_vs_minutes.png from every score of the run (compressed models' included),
# unless the scores and decoding times are those of the last report
write_report() {
  local scores signature
  scores=$(for run in $adaptations; do
    IFS=: read -r algo lang minutes <<< "$run"
    dir=$(adapt_dir "$algo" "$lang" "$minutes")
    cat "$dir/decode_$decode_set/.done" 2>/dev/null || echo "missing $run"
    cat "$dir"/compress/*/.done "$dir"/decode_"$decode_set"/{scores,decode}.json \
      "$dir"/compress/*/decode_"$decode_set"/{scores,decode}.json 2>/dev/null || true
  done)
  signature="report $algos $(printf '%s' "$scores" | md5sum | cut -c1-16)"
  if ! is_done "$exp/report" "$signature"; then
    metarecipe report "$exp/adapt" --out RESULTS.md --plot cer_vs_minutes.png --set "$decode_set" \
      --methods $algos --title "Results: recipes/cv_lowresource" \
      --setting "corpus=$($demo && echo "built-in demo corpus ($demo_minutes min per language, seed $seed)" ||
        echo "$corpus_dir ($corpus)")" \
      --setting "source languages=$source_langs" --setting "target languages=$target_langs" \
      --setting "budgets (min)=$budgets" --setting "meta-training=$meta_config, initialised from: ${meta_init:-none}" \
      --setting "adaptation=$adapt_config" \
      --setting "decoding=beam $beam, token threshold $token_threshold, $lm_unit $lm_order-gram LM weight $lm_weight, set $decode_set" > /dev/null
    mark_done "$exp/report" "$signature"
  fi
  cat RESULTS.md
}

if stage 7 report; then
  write_report
  stage_end
fi

# compress_decode_score ADAPT_DIR VARIANT METHOD LANG MINUTES MODEL "DECODE_OPTIONS" COMPRESS_OPTION...: compresses
# MODEL into ADAPT_DIR/compress/VARIANT, decodes it on 1 thread and scores it (the decoding options are one word of
# the command, so that its done-marker changes with them)
compress_decode_score() {
  local dir=$1/compress/$2 lang=$4 decoding
  read -ra decoding <<< "$7"
  run_cmd metarecipe compress "$6" "$dir/model.pt" "${@:8}" &&
  run_cmd metarecipe decode "$dir/model.pt" "$data/$lang/$decode_set" "$dir/decode_$decode_set" --threads 1 \
    --lm "$data/lm/$lang/${lm_unit}$lm_order/lm.arpa" --lm-unit "$([ "$lm_unit" = char ] && echo token || echo word)" \
    "${decoding[@]}" &&
  metarecipe score --ref "$data/$lang/$decode_set/text" --hyp "$dir/decode_$decode_set/hyp" \
    --out-dir "$dir/decode_$decode_set" --tag method="$3" --tag target="$lang" --tag minutes="$5" \
    --tag set="$decode_set" --tag variant="$2"
}

# compress_variants ADAPT_DIR METHOD LANG MINUTES: fp32 (the adapted model exported), int8, pruned (and
# fine-tuned), pruned + int8 (the pruned model quantized)
compress_variants() {
  local dir=$1 name="${2}_${3}_${4}m" model=$1/adapted.pt
  local decoding="--beam $beam --lm-weight $lm_weight --token-threshold $token_threshold"
  local prune=(--keep-units "$compress_keep_units" --keep-channels "$compress_keep_channels"
               --sparsity "$compress_sparsity")
  $compress_finetune && prune+=(--finetune-data "$data/$3/train" --finetune-minutes "$4" --seed "$seed"
                                --distill "$compress_distill")
  once "$dir/compress/fp32" "$exp/log/compress_${name}_fp32.log" \
    compress_decode_score "$dir" fp32 "$2" "$3" "$4" "$model" "$decoding" &&
  once "$dir/compress/int8" "$exp/log/compress_${name}_int8.log" \
    compress_decode_score "$dir" int8 "$2" "$3" "$4" "$model" "$decoding" --int8 &&
  once "$dir/compress/pruned" "$exp/log/compress_${name}_pruned.log" \
    compress_decode_score "$dir" pruned "$2" "$3" "$4" "$model" "$decoding" "${prune[@]}" &&
  once "$dir/compress/pruned_int8" "$exp/log/compress_${name}_pruned_int8.log" \
    compress_decode_score "$dir" pruned_int8 "$2" "$3" "$4" "$dir/compress/pruned/model.pt" "$decoding" --int8
}

if stage 8 compress; then
  export OMP_NUM_THREADS=1
  for run in $adaptations; do
    IFS=: read -r algo lang minutes <<< "$run"
    if [ -n "$compress_methods" ] && ! [[ " $compress_methods " == *" $algo "* ]]; then continue; fi
    if [ "$algo" = pnn ]; then log "pnn: progressive networks are not compressed"; continue; fi
    spawn compress_variants "$(adapt_dir "$algo" "$lang" "$minutes")" "$algo" "$lang" "$minutes"
  done
  wait_all
  unset OMP_NUM_THREADS
  write_report
  stage_end
fi
