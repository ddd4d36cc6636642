# Helpers shared by the submit_*.sh recipes; sourced by them, not a recipe itself.
#
# Reads the recipe variables ngpu, nnodes, seed and disable_cudnn, the training options of
# utils/recipe/launcher.sh (precision, compile, fast_conv, batch_size_per_rank, micro_batch),
# recipe_python (set by recipe_find_python), and the environment variables MASTER_ADDR / MASTER_PORT /
# RDZV_ID (multi-node rendezvous).

# Print a command, shell-quoted (it can be pasted back), then run it (with --dry-run only print it).
run_command() {
    local line
    printf -v line '%q ' "$@"
    if [ "${dry_run:-false}" = true ]; then
        echo "+ ${line% }   (dry run: not run)"
        return 0
    fi
    echo "+ ${line% }"
    "$@"
}

# Set recipe_python to the interpreter the stages run: $PYTHON when set (a relative path is the
# caller's), else the toolkit's .venv (made by ./test.sh and ./run.sh), else python3, else python.
# Stops with one line unless it finds torch.
recipe_find_python() {
    local candidate
    recipe_python=""
    if [ -n "${PYTHON:-}" ]; then
        recipe_python=${PYTHON}
        [[ ${PYTHON} != */* || ${PYTHON} == /* ]] || recipe_python=${recipe_caller:-${PWD}}/${PYTHON}
        if ! command -v "${recipe_python}" >/dev/null 2>&1; then
            echo "$0: PYTHON=${PYTHON} is not a command: set PYTHON to an interpreter, or unset it to use" \
                ".venv (./test.sh makes it)" >&2
            exit 1
        fi
    elif [ -x .venv/bin/python ]; then
        recipe_python=.venv/bin/python
    else
        for candidate in python3 python; do
            if command -v "${candidate}" >/dev/null 2>&1; then
                recipe_python=${candidate}
                break
            fi
        done
        if [ -z "${recipe_python}" ]; then
            echo "$0: no Python: no .venv here and neither python3 nor python on PATH: run ./test.sh (it makes" \
                ".venv with the pinned requirements) or set PYTHON=/path/to/python" >&2
            exit 1
        fi
    fi
    # find_spec, not an import: seconds cheaper, and a python without torch is what it is there to catch.
    if ! "${recipe_python}" -c 'import importlib.util, sys; sys.exit(importlib.util.find_spec("torch") is None)' \
            >/dev/null 2>&1; then
        echo "$0: ${recipe_python} has no torch: run ./test.sh (it makes .venv with the pinned requirements," \
            "which the recipes then use) or set PYTHON=/path/to/python of an environment that has them" >&2
        exit 1
    fi
}

# recipe_whole_number <variable> [minimum] [maximum]: stop with one line unless the recipe option is a
# whole number in range, before a typo reaches bash arithmetic or a training process; then write it in
# plain decimal, so that bash, torchrun and Python read it alike (bash reads 010 as octal 8, 09 not at all).
recipe_whole_number() {
    local name=$1 minimum=${2:-} maximum=${3:-} value=${!1} number range=""
    if [ -n "${maximum}" ]; then
        range=" from ${minimum} to ${maximum}"
    elif [ -n "${minimum}" ]; then
        range=" of ${minimum} or more"
    fi
    # At most 18 digits besides leading zeros: bash arithmetic wraps beyond.
    if [[ ${value} =~ ^(-?)0*([0-9]{0,18})$ ]] && [ -n "${value#-}" ]; then
        number=$((${BASH_REMATCH[1]}${BASH_REMATCH[2]:-0}))
        if { [ -z "${minimum}" ] || [ "${number}" -ge "${minimum}" ]; } &&
            { [ -z "${maximum}" ] || [ "${number}" -le "${maximum}" ]; }; then
            printf -v "${name}" '%d' "${number}"
            return 0
        fi
    fi
    echo "$0: --${name} must be a whole number${range}, not '${value}'" >&2
    exit 1
}

# recipe_config <file> <option>: stop with one line unless the config file a stage reads exists.
recipe_config() {
    [ -f "$1" ] && return 0
    echo "$0: --$2 ${!2} names no recipe: $1 does not exist (the recipes are the .yaml files under config/)" >&2
    exit 1
}

# recipe_config_value <file> <key>: the value of the config's top-level "<key>: value" line (its comment and
# quotes taken off), or nothing; read with awk, not Python: a dry run names the paths without running anything
# (awk, not a sed block, which BSD sed on macOS reads otherwise).
recipe_config_value() {
    [ -f "$1" ] || return 0
    awk -v key="$2" 'index($0, key ":") == 1 {
        value = substr($0, length(key) + 2)
        sub(/^[ \t]+/, "", value); sub(/[ \t]+#.*$/, "", value)
        sub(/^["\047]/, "", value); sub(/["\047][ \t]*$/, "", value)
        print value; exit
    }' "$1"
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
# "" (none: run_train then passes --resume auto), "latest" (the newest checkpoint in the
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

# Run codecTrain.py with the given arguments, plus --resume auto when they have no --resume (a stage
# run again continues from the experiment's newest checkpoint instead of training over it from step
# 0), --seed when the recipe's seed is set, --ngpu (the GPUs per node it must find; 0 trains on CPUs)
# and the training options given: one process for ngpu <= 1 and nnodes=1, else torchrun with ngpu
# processes (one with ngpu=0) on each of nnodes nodes, through trainer/torchrun.py (a stop signal then
# lets the ranks checkpoint and the run exit 0).
run_train() {
    local python=${recipe_python}
    local -a args=("$@")
    local processes=$((ngpu > 0 ? ngpu : 1)) word resume_given=false
    for word in "$@"; do
        [ "${word}" != --resume ] || resume_given=true
    done
    [ "${resume_given}" = true ] || args+=(--resume auto)
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
        run_command "${python}" -m trainer.torchrun --nnodes "${nnodes}" --nproc_per_node "${processes}" \
            --rdzv_backend c10d --rdzv_endpoint "${MASTER_ADDR}:${MASTER_PORT:-29500}" \
            --rdzv_id "${RDZV_ID:-audiodec}" codecTrain.py ${args[@]+"${args[@]}"}
    elif [ "${processes}" -gt 1 ]; then
        run_command "${python}" -m trainer.torchrun --standalone --nproc_per_node "${processes}" \
            codecTrain.py ${args[@]+"${args[@]}"}
    else
        run_command "${python}" codecTrain.py ${args[@]+"${args[@]}"}
    fi
}

# Run codecStatistic.py or codecTest.py (single process).
run_python() {
    run_command "${recipe_python}" "$@"
}
