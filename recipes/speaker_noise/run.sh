#!/usr/bin/env bash
# Speaker, accent and noise adaptation by meta-learning: meta-train a CTC model on many tasks of one kind (speakers,
# accents, or noise conditions), adapt it to unseen ones with seconds to minutes of their speech, decode, score,
# and compare with the unadapted model and with fine-tuning as speaker adaptation usually does it.
#
#   ./run.sh --task-kind speaker    # tasks: synthetic (espeak-ng) speakers of es it de; targets: unseen speakers,
#                                   # synthetic ones and a real one (the asterisk Spanish voice)
#   ./run.sh --task-kind speaker --real-speakers "es it"  # the asterisk Italian voice too (its accented vowels
#                                   # enter the token table: a fresh run, or --stage 2 --force)
#   ./run.sh --task-kind accent     # tasks: English accents (espeak-ng regional voices); targets: unseen accents
#   ./run.sh --task-kind noise      # tasks: noise type x SNR band on real speech (asterisk en fr ru); targets:
#                                   # unseen noise types (babble, brown)
#   ./run.sh --task-kind speaker --stage 5   # re-score and report, nothing before it redone
#   ./run.sh --task-kind noise --mini        # every stage on a tiny corpus (conf/mini.conf), for CI
#
# Stages: 0 corpus, 1 features, 2 tokens, 3 meta-train, 4 adapt, 5 decode + score, 6 report (RESULTS_<kind>.md,
# cer_vs_minutes_<kind>.png; the speaker kind's real voices apart in RESULTS_speaker_real.md). Methods: unadapted
# (the pooled model as it is: the reference), finetune (the pooled model, every parameter), input (the pooled
# model, its input layers only: the usual speaker adaptation), and the meta-learners (metasgd, fomaml, ...). Every
# unit of work leaves a .done marker holding the command that made it; a re-run skips what is done and redoes what
# changed or was interrupted. --force redoes the stages run.
set -euo pipefail
cd "$(dirname "$0")"

# begin options
task_kind=speaker       # speaker, accent or noise
stage=0                 # first stage to run
stop_stage=6            # last stage to run
nj=2                    # parallel jobs (corpus, features, adaptation, decoding)
mini_corpus=false       # true: the generators' tiny corpus (--mini sets it)
budgets="0.25 0.5 1 2"  # adaptation budgets, minutes of the target's speech
adapt_seeds="0 1"       # adaptation seeds: each draws other minutes of the budget (mean and CI over them)
algos="default"         # default = finetune input metasgd; all adds fomaml maml reptile anil pnn
meta_config=conf/meta_train.yaml  # metarecipe meta-train config (model, inner loop, augmentation)
adapt_config=conf/adapt.yaml      # metarecipe adapt config of every method (input: with rule=input)
meta_steps=400          # steps of the pooled model (every method starts from it)
meta_steps_after_init=150  # steps of the meta-learners from it, and of the pooled model's continuation
meta_lr_after_init=0.0005  # their outer learning rate
beam=8                  # beam size (no LM: the comparison is of acoustic adaptation)
decode_set=test         # the target split decoded and scored
seed=0                  # corpus and sampling seed
real_speakers=es        # speaker kind: the asterisk voices of these languages (real speech) are targets too
data=data               # data directories go to <data>/<task kind>
exp=exp                 # experiment directories go to <exp>/<task kind>
report_dir=.            # where RESULTS_<kind>.md and cer_vs_minutes_<kind>.png go
force=false             # redo the work of the stages run even when done
# end options
help_message="Stages: 0 corpus, 1 features, 2 tokens, 3 meta-train, 4 adapt, 5 decode + score, 6 report.
--task-kind speaker|accent|noise; --mini is short for --config conf/mini.conf."

. utils/parse_options.sh
[ $# -eq 0 ] || { echo "run.sh: unexpected argument '$1'; see --help" >&2; exit 1; }
. ./path.sh
. ./cmd.sh
. utils/lib.sh

case $task_kind in
  speaker) group_by=spk sample_rate=16000 ;;
  accent) group_by=accent sample_rate=16000 ;;
  noise) group_by=noise sample_rate=8000 ;;
  *) echo "run.sh: --task-kind must be speaker, accent or noise, got '$task_kind'" >&2; exit 1 ;;
esac
num_mel_bins=$([ "$sample_rate" -le 8000 ] && echo 40 || echo 80)
case $algos in
  default) algos="finetune input metasgd" ;;
  all) algos="finetune input fomaml maml metasgd reptile anil pnn" ;;
esac
for algo in $algos; do
  case $algo in finetune|input|fomaml|maml|metasgd|reptile|anil|pnn) ;;
    *) echo "run.sh: --algos: unknown method '$algo'" >&2; exit 1 ;; esac
done
case $mini_corpus in true) mini_flag=--mini ;; false) mini_flag="" ;;
  *) echo "run.sh: --mini-corpus must be true or false, got '$mini_corpus'" >&2; exit 1 ;; esac
data=$data/$task_kind
exp=$exp/$task_kind
corpus=$data/corpus
threads_per_job=$(( $(nproc) / nj > 0 ? $(nproc) / nj : 1 ))
mkdir -p "$exp"
log "options: $(for n in task_kind stage stop_stage nj mini_corpus budgets adapt_seeds algos meta_config adapt_config \
  meta_steps meta_steps_after_init beam decode_set seed real_speakers data exp; do printf '%s=%q ' "$n" "${!n}"; done)"

# The targets: the corpus's own and, for the speaker kind, real voices (real_<lang>: the asterisk prompts of one
# speaker, 8 kHz, in $data/real/<lang>). The token table covers every target's training transcripts.
[ "$task_kind" = speaker ] || real_speakers=""
corpus_targets() { cat "$corpus/targets/list"; }
real_targets() { for lang in $real_speakers; do echo "real_$lang"; done; }
targets() { corpus_targets; real_targets; }
target_dir() { case $1 in real_*) echo "$data/real/${1#real_}" ;; *) echo "$corpus/targets/$1" ;; esac; }
# every data dir of the run: the source tasks' train and dev, each target's train and test
all_dirs() { echo "$corpus/source/train"; echo "$corpus/source/dev"; for t in $(targets); do
  echo "$(target_dir "$t")/train"; echo "$(target_dir "$t")/test"; done; }

if stage 0 corpus; then
  if [ "$task_kind" = noise ]; then
    install_asterisk_sounds en fr ru
    install_noise_recordings
    once "$data/speech/.prepared" "$exp/log/prepare_speech.log" metarecipe prepare-data asterisk \
      /usr/share/asterisk/sounds "$data/speech" --langs en fr ru --splits train dev test
    speech() { for l in en fr ru; do echo "$data/speech/$l/$1"; done; }
    once "$corpus" "$exp/log/corpus.log" metarecipe make-noise-tasks "$corpus" --speech-train $(speech train) \
      --speech-dev $(speech dev) --speech-test $(speech test) --noise-dir /usr/share/asterisk/moh --seed "$seed" \
      $mini_flag
  else
    install_demo_tools $([ "$task_kind" = speaker ] && echo es it de)
    # the accent kind's English sentences: fortunes-min
    [ "$task_kind" != accent ] || [ -e /usr/share/games/fortunes/fortunes ] || apt_install "the accent corpus" fortunes-min
    once "$corpus" "$exp/log/corpus.log" metarecipe make-variation-corpus "$corpus" --task-kind "$task_kind" \
      --seed "$seed" --nj "$nj" $mini_flag
  fi
  if [ -n "$real_speakers" ]; then
    install_asterisk_sounds $real_speakers
    once "$data/real" "$exp/log/prepare_real.log" metarecipe prepare-data asterisk /usr/share/asterisk/sounds \
      "$data/real" --langs $real_speakers --splits train test
  fi
  stage_end
fi

if stage 1 features; then
  for dir in $(all_dirs); do
    spawn once "$dir/fbank" "$exp/log/feats_$(echo "${dir#"$data"/}" | sed 's,^corpus/,,' | tr / _).log" \
      metarecipe compute-feats "$dir" --nj 1 --sample-rate "$sample_rate" --num-mel-bins "$num_mel_bins"
  done
  wait_all
  stage_end
fi

if stage 2 tokens; then
  once "$data/lang" "$exp/log/tokens.log" metarecipe make-tokens "$data/lang/tokens.txt" $(all_dirs | grep -v "/test$")
  stage_end
fi

# meta_dir METHOD: the meta-training run whose final.pt the method starts from. The baselines adapt the pooled
# model after its continuation, so that every method has trained as many steps.
meta_dir() {
  case $1 in
    unadapted|finetune|input|pnn) echo "$exp/meta_pooled_long" ;;
    *) echo "$exp/meta_$1" ;;
  esac
}

# meta_train DIR STEPS INIT OPTION...: one meta-training run over the source tasks (INIT: a model file, or "")
meta_train() {
  local dir=$1 steps=$2 init=$3
  shift 3
  local options=(data.train="[$corpus/source/train]" data.held_out="[$corpus/source/dev]" data.group_by="$group_by"
                 data.tokens="$data/lang/tokens.txt" model.num_mel_bins="$num_mel_bins" train.seed="$seed"
                 train.steps="$steps")
  [ -z "$init" ] || options+=(init="$init" train.meta_lr="$meta_lr_after_init")
  # the noise kind's tasks are noise conditions: no other noise is mixed in
  [ "$task_kind" != noise ] || options+=(augment.noise_prob=0)
  [ "$force" = false ] || set_aside "$dir"
  once "$dir" "$exp/log/$(basename "$dir").log" meta_train_cmd 1 --exp-dir "$dir" "$@" "${options[@]}"
}

if stage 3 meta-train; then
  meta_train "$exp/meta_pooled" "$meta_steps" "" --config "$meta_config" algorithm=multilingual
  meta_train "$exp/meta_pooled_long" "$meta_steps_after_init" "$exp/meta_pooled/final.pt" --config "$meta_config" \
    algorithm=multilingual
  for algo in $algos; do
    case $algo in finetune|input|pnn) continue ;; esac
    meta_train "$exp/meta_$algo" "$meta_steps_after_init" "$exp/meta_pooled/final.pt" --config "$meta_config" \
      algorithm="$algo"
  done
  stage_end
fi

adapt_dir() { echo "$exp/adapt/${1}_${2}_${3}m_s$4"; }
# every adaptation of the run as method:target:minutes:seed
adaptations() { for a in $algos; do for t in $(targets); do for m in $budgets; do for s in $adapt_seeds; do
  echo "$a:$t:$m:$s"; done; done; done; done; }
rule_of() { case $1 in input) echo rule=input ;; pnn) echo rule=pnn ;; esac; }

if stage 4 adapt; then
  export OMP_NUM_THREADS=$threads_per_job
  for run in $(adaptations); do
    IFS=: read -r algo target minutes adapt_seed <<< "$run"
    dir=$(adapt_dir "$algo" "$target" "$minutes" "$adapt_seed")
    [ "$force" = false ] || set_aside "$dir"
    spawn once "$dir" "$exp/log/adapt_$(basename "$dir").log" \
      run_cmd metarecipe adapt --config "$adapt_config" --exp-dir "$dir" model="$(meta_dir "$algo")/final.pt" \
      data="$(target_dir "$target")/train" adapt.minutes="$minutes" adapt.seed="$adapt_seed" $(rule_of "$algo") \
      $([ "$task_kind" != noise ] || echo augment.noise_prob=0)
  done
  wait_all
  unset OMP_NUM_THREADS
  stage_end
fi

# decode_and_score MODEL OUT_DIR METHOD TARGET MINUTES SEED: hypotheses and scores of the target's decode set
decode_and_score() {
  local test=$(target_dir "$4")/$decode_set
  run_cmd metarecipe decode "$1" "$test" "$2" --beam "$beam" &&
  metarecipe score --ref "$test/text" --hyp "$2/hyp" --utt2spk "$test/utt2spk" --out-dir "$2" --tag method="$3" \
    --tag target="$4" --tag minutes="$5" --tag seed="$6" --tag set="$decode_set"
}

if stage 5 "decode + score"; then
  export OMP_NUM_THREADS=$threads_per_job
  for target in $(targets); do  # the reference: the pooled model, not adapted
    dir=$(adapt_dir unadapted "$target" 0 0)/decode_$decode_set
    spawn once "$dir" "$exp/log/decode_unadapted_$target.log" \
      decode_and_score "$(meta_dir unadapted)/final.pt" "$dir" unadapted "$target" 0 0
  done
  for run in $(adaptations); do
    IFS=: read -r algo target minutes adapt_seed <<< "$run"
    dir=$(adapt_dir "$algo" "$target" "$minutes" "$adapt_seed")
    spawn once "$dir/decode_$decode_set" "$exp/log/decode_$(basename "$dir").log" \
      decode_and_score "$dir/adapted.pt" "$dir/decode_$decode_set" "$algo" "$target" "$minutes" "$adapt_seed"
  done
  wait_all
  unset OMP_NUM_THREADS
  stage_end
fi

# report NAME NOTE TARGET...: RESULTS_<NAME>.md and cer_vs_minutes_<NAME>.png over the targets
report() {
  local name=$1 note=$2
  shift 2
  metarecipe task-report "$exp/adapt" --out "$report_dir/RESULTS_$name.md" --targets "$@" \
    --plot "$report_dir/cer_vs_minutes_$name.png" --set "$decode_set" --reference unadapted \
    --baselines finetune input --methods unadapted $algos --title "Results: recipes/speaker_noise, $name" \
    --note "$note" \
    --setting "task kind=$task_kind (tasks grouped by utt2$group_by)" \
    --setting "features=$num_mel_bins-bin fbank at $sample_rate Hz" \
    --setting "budgets (min)=$budgets, adaptation seeds $adapt_seeds" \
    --setting "meta-training=$meta_config: pooled $meta_steps steps, then $meta_steps_after_init more for every method (pooled continued for the baselines)" \
    --setting "adaptation=$adapt_config (input: rule=input)" \
    --setting "decoding=beam $beam, no LM, set $decode_set" > /dev/null
  cat "$report_dir/RESULTS_$name.md"
}

if stage 6 report; then
  mkdir -p "$report_dir"
  what=$(case $task_kind in
    speaker) echo "Targets are speakers never seen in meta-training; the speech is synthetic (espeak-ng voice variant x pitch x rate)." ;;
    accent) echo "Targets are English accents never seen in meta-training (espeak-ng regional voices); the speech is synthetic." ;;
    noise) echo "Targets are noise types never seen in meta-training, mixed into real speech (asterisk prompts)." ;;
  esac)
  report "$task_kind" "$what See $corpus/corpus.json for every task and target." $(corpus_targets)
  if [ -n "$real_speakers" ]; then
    report "${task_kind}_real" "Targets are real speakers, one per language: the asterisk prompts of $real_speakers \
(professional voices, 8 kHz telephone band, resampled to $sample_rate Hz; see $data/real/*/test/utt2spk). Meta-training \
saw synthetic speakers only. With few voices the intervals say little of other speakers: with one, they resample \
its adaptation seeds only." $(real_targets)
  fi
  stage_end
fi
