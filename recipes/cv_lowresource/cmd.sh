# How jobs run (Kaldi's cmd.sh). Edit here or set the variables in the environment.
#   cmd_backend=local   processes on this machine (default)
#   cmd_backend=slurm   every job through `srun $slurm_opts` (blocking, so stages keep their order); meta-training
#                       asks for `$slurm_gpu_opts` too and runs torchrun on every node it gets
# Meta-training runs `torchrun --nproc-per-node $meta_nproc` (and --nnodes $meta_nnodes under Slurm) when that is
# more than one process: the tasks of each meta-batch are shared by the processes.
cmd_backend=${cmd_backend:-local}
slurm_opts=${slurm_opts:-"--time=24:00:00 --cpus-per-task=4 --mem=16G"}
slurm_gpu_opts=${slurm_gpu_opts:-"--gres=gpu:1"}
meta_nnodes=${meta_nnodes:-1}

run_cmd() {  # run_cmd CMD...: one job
  case $cmd_backend in
    local) "$@" ;;
    slurm) srun $slurm_opts "$@" ;;
    *) echo "cmd.sh: cmd_backend must be local or slurm, got '$cmd_backend'" >&2; return 1 ;;
  esac
}

meta_train_cmd() {  # meta_train_cmd NPROC ARGS...: `metarecipe meta-train ARGS`, through torchrun when NPROC > 1
  local nproc=$1
  shift
  if [ "$nproc" -le 1 ] && [ "$meta_nnodes" -le 1 ]; then
    run_cmd metarecipe meta-train "$@"
  elif [ "$cmd_backend" = slurm ]; then
    # one torchrun per node; the first node of the allocation is the rendezvous point
    srun $slurm_opts $slurm_gpu_opts --nodes="$meta_nnodes" --ntasks-per-node=1 bash -c \
      'torchrun --nnodes="$0" --nproc-per-node="$1" --rdzv-backend=c10d \
         --rdzv-endpoint="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n1):29400" \
         -m metarecipe meta-train "${@:2}"' "$meta_nnodes" "$nproc" "$@"
  else
    torchrun --standalone --nproc-per-node "$nproc" -m metarecipe meta-train "$@"
  fi
}
