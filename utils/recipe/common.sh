# Helpers shared by the submit_*.sh recipes; sourced by them, not a recipe itself.
#
# Reads the recipe variables ngpu, nnodes, seed and disable_cudnn, the training options of
# utils/recipe/launcher.sh (precision, compile, fast_conv, batch_size_per_rank, micro_batch), and the environment
# variables PYTHON (interpreter, default: python), MASTER_ADDR / MASTER_PORT / RDZV_ID (multi-node
# rendezvous).

# Print a command, then run it (with --dry-run only print it).
run_command() {
    if [ "${dry_run:-false}" = true ]; then
        echo "+ $*   (dry run: not run)"
        return 0
    fi
    echo "+ $*"
    "$@"
}

# recipe_whole_number <variable> [minimum]: stop with one line unless the recipe option is a whole
# number (at least minimum), before a typo reaches bash arithmetic or a training process.
recipe_whole_number() {
    local name=$1 minimum=${2:-} value=${!1}
    if ! [[ ${value} =~ ^-?[0-9]+$ ]] || { [ -n "${minimum}" ] && [ "${value}" -lt "${minimum}" ]; }; then
        echo "$0: --${name} must be a whole number${minimum:+ of ${minimum} or more}, not '${value}'" >&2
        exit 1
    fi
}

# The newest checkpoint-<N>steps.pkl in a folder (by N), or nothing.
latest_checkpoint() {
    local folder=$1
    [ -d "${folder}" ] || return 0
    find "${folder}" -maxdepth 1 -name 'checkpoint-*steps.pkl' \
        | sed -E 's/^(.*checkpoint-([0-9]+)steps\.pkl)$/\2 \1/' \
        | sort -n | tail -n 1 | cut -d' ' -f2-
}

# Set the array resume_args to the --resume arguments of codecTrain.py for a resume request:
# "" (train from scratch or from the config's `initial`), "latest" (the newest checkpoint in the
# experiment folder, if any), a step number N (<folder>/checkpoint-Nsteps.pkl), or a checkpoint path.
set_resume_args() {
    local request=$1 folder=$2 checkpoint
    resume_args=()
    case "${request}" in
        "") ;;
        latest)
            checkpoint=$(latest_checkpoint "${folder}")
            if [ -n "${checkpoint}" ]; then
                resume_args=(--resume "${checkpoint}")
            else
                echo "No checkpoint in ${folder} yet: training from the start"
            fi
            ;;
        *[!0-9]*) resume_args=(--resume "${request}") ;;
        *) resume_args=(--resume "${folder}/checkpoint-${request}steps.pkl") ;;
    esac
}

# Run codecTrain.py with the given arguments, plus --seed when the recipe's seed is set, --ngpu (the
# GPUs per node it must find; 0 trains on CPUs) and the training options given: one process for
# ngpu <= 1 and nnodes=1, else torchrun with ngpu processes (one with ngpu=0) on each of nnodes nodes.
run_train() {
    local python=${PYTHON:-python}
    local -a args=("$@")
    local processes=$((ngpu > 0 ? ngpu : 1))
    if [ -n "${seed}" ]; then
        args+=(--seed "${seed}")
    fi
    args+=(--ngpu "${ngpu}")
    [ -n "${precision:-}" ] && args+=(--precision "${precision}")
    case "${compile:-false}" in
        true) args+=(--compile) ;;
        generator | all) args+=(--compile "${compile}") ;;
    esac
    [ "${fast_conv:-false}" = true ] && args+=(--fast_conv)
    [ -n "${batch_size_per_rank:-}" ] && args+=(--batch_size_per_rank "${batch_size_per_rank}")
    [ -n "${micro_batch:-}" ] && args+=(--micro_batch "${micro_batch}")
    if [ "${nnodes}" -gt 1 ]; then
        if [ -z "${MASTER_ADDR:-}" ]; then
            echo "--nnodes ${nnodes} needs MASTER_ADDR (and MASTER_PORT, default 29500) set to the rendezvous host" >&2
            return 1
        fi
        run_command "${python}" -m torch.distributed.run --nnodes "${nnodes}" --nproc_per_node "${processes}" \
            --rdzv_backend c10d --rdzv_endpoint "${MASTER_ADDR}:${MASTER_PORT:-29500}" \
            --rdzv_id "${RDZV_ID:-audiodec}" codecTrain.py "${args[@]}"
    elif [ "${processes}" -gt 1 ]; then
        run_command "${python}" -m torch.distributed.run --standalone --nproc_per_node "${processes}" \
            codecTrain.py "${args[@]}"
    else
        run_command "${python}" codecTrain.py "${args[@]}"
    fi
}

# Run codecStatistic.py or codecTest.py (single process).
run_python() {
    run_command "${PYTHON:-python}" "$@"
}
