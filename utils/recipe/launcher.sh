# Stage launcher for the submit_*.sh recipes, in the spirit of Kaldi's run.pl / slurm.pl: the same
# recipe runs its stages here, one after the other, or submits each one to SLURM.
#
# A recipe sources this file BEFORE parse_options.sh (so that parse_options accepts the options below),
# calls launcher_init after it (utils/recipe/setup.sh does both), and wraps each stage's command in
# run_stage:
#
#     . ./utils/recipe/setup.sh
#     run_stage 0 "${tag_name}" run_train -c "config/${tag_name}.yaml" ...
#
# Options (besides the recipe's own):
#   --cmd local|slurm    local (default): run each stage's command here, as the original's recipes do.
#                        slurm: submit each stage with sbatch. A stage starts once the stage submitted
#                        before it succeeded (--dependency=afterok), logs to
#                        ${slurm_logdir}/<tag>-stage<k>-<jobid>.log, and runs its command in an srun
#                        step (a training stage: one task per node, with --ngpu N --nnodes M torchrun on
#                        every node, rendezvous at the first node of the allocation; the other stages:
#                        one node, one task). A job runs the command it was submitted with: it copies
#                        its batch script (SLURM's copy, taken at submission) to
#                        ${slurm_logdir}/<tag>-stage<k>-<jobid>.sh for its step; later submissions and
#                        dry runs of the same stage rewrite only ${slurm_logdir}/<tag>-stage<k>.sh,
#                        the newest batch script, kept to be read.
#   --partition NAME --gpus N --cpus N --mem SIZE --time LIMIT
#                        sbatch resources; "" takes the value from ${slurm_config}, whose empty values
#                        leave the cluster's defaults. A training stage asks for what it uses: the
#                        recipe's --ngpu GPUs per node (none with --ngpu 0, the only way to train on
#                        CPUs) and, unless --cpus is given, CPUs for every process and its loader
#                        workers (ngpu x (num_workers of the stage's config + 1), or x cpus_per_process
#                        of ${slurm_config}). --gpus (GPUs per node) and --cpus apply to the other stages.
#   --gpu_request gpus-per-node|gres
#                        how GPUs are asked for: --gpus-per-node N (default) or --gres gpu:N (clusters
#                        that count GPUs as a generic resource)
#   --slurm_config FILE  key=value defaults for the options above (conf/slurm.conf)
#   --slurm_logdir DIR   where job scripts and logs go (slurmlogs)
#   --sbatch_args "..."  more sbatch options, verbatim, after ours (e.g. "--account=x --qos=y")
#   --after JOBID        the first stage also waits for this job to succeed
#   --requeue true       a training job that is told to stop (SIGUSR1, SIGTERM: preemption, the time
#                        limit's warning signal) saves a checkpoint and requeues itself; it resumes there
#                        (SLURM starts a requeued job after cred_expire, 120 s by default)
#   --dry-run            print the sbatch command lines (and write the job scripts), submit nothing;
#                        with --cmd local, print each stage's command (shell-quoted) without running it
# Training options, for run_train (utils/recipe/common.sh) of every recipe, local or under SLURM:
#   --precision fp32|bf16|fp16   autocast precision (default: the config's, else fp32)
#   --compile true               torch.compile the generator and, on GPUs, the discriminator (all: both
#                                on any device; generator: the generator only)
#   --fast_conv true             CPU training: faster convolutions, time-major on AVX-512 CPUs (the
#                                discriminators' too in bf16), and the generator's ELUs and LeakyReLUs
#                                on the native engine (not bit-identical to the original trainer;
#                                docs/training.md)
#   --batch_size_per_rank N      samples per process and step (default: the config's batch_size is the
#                                global batch, shared by the processes)
#   --micro_batch N              at most N samples per forward pass; the rest is accumulated
# A training command without --resume gets --resume auto (the newest checkpoint of its experiment
# folder, if any; run_train in utils/recipe/common.sh), and under --cmd slurm a requeued job resumes
# with --resume auto whatever it was given: re-running or requeueing a training stage continues where
# it stopped.

cmd=local
partition=""
gpus=""
gpu_request=""
cpus=""
mem=""
time=""
slurm_config=conf/slurm.conf
slurm_logdir=slurmlogs
sbatch_args=""
after=""
requeue=false
dry_run=false
precision=""
compile=false
fast_conv=false
batch_size_per_rank=""
micro_batch=""

# parse_options.sh wants a value after every option: give the bare flags one. Its --help lists the
# recipe's own options; the launcher's come first.
_launcher_args=()
while [ $# -gt 0 ]; do
    case "$1" in
        --help | -h)
            _launcher_args+=("$1")
            echo "Launcher options (utils/recipe/launcher.sh): --cmd ${cmd} --partition --gpus --gpu_request --cpus --mem" \
                "--time --slurm_config ${slurm_config} --slurm_logdir ${slurm_logdir} --sbatch_args --after --requeue" \
                "--dry-run; training: --precision --compile ${compile} --fast_conv ${fast_conv} --batch_size_per_rank --micro_batch"
            ;;
        --dry-run | --dry_run | --requeue)
            _launcher_args+=("$1")
            if [ $# -lt 2 ] || [[ $2 == --* ]]; then
                _launcher_args+=(true)
            fi
            ;;
        *) _launcher_args+=("$1") ;;
    esac
    shift
done
set -- ${_launcher_args[@]+"${_launcher_args[@]}"}
unset _launcher_args

launcher_jobs=()          # the job ids submitted so far, in order
_launcher_previous_job="" # the job the next stage waits for

_launcher_error() {
    echo "$0: $*" >&2
    return 1
}

# Returns 0 when value ($2) is true or false; else prints that option ($1) takes those and returns 1.
_launcher_boolean() {
    case "$2" in true | false) return 0 ;; esac
    _launcher_error "$1 takes true or false, not '$2'"
}

# Value of key in a key=value file (comments with #, blanks around = allowed), or nothing.
_launcher_config_value() {
    local file=$1 key=$2
    [ -r "${file}" ] || return 0
    sed -nE "s/^[[:space:]]*${key}[[:space:]]*=[[:space:]]*([^#]*[^#[:space:]])?[[:space:]]*(#.*)?$/\1/p" "${file}" | tail -n 1
}

# Check the options; under --cmd slurm, fill the resources from the config and check the cluster.
# Prints one line and returns 1 on bad input, before any job is submitted.
launcher_init() {
    local key value
    case "${compile}" in
        true | false | generator | all) ;;
        *) _launcher_error "--compile takes true, false, generator or all, not '${compile}'"; return 1 ;;
    esac
    case "${precision}" in
        "" | fp32 | bf16 | fp16) ;;
        *) _launcher_error "--precision takes fp32, bf16 or fp16, not '${precision}'"; return 1 ;;
    esac
    _launcher_boolean --fast_conv "${fast_conv}" || return 1
    _launcher_boolean --dry-run "${dry_run}" || return 1
    _launcher_boolean --requeue "${requeue}" || return 1
    case "${cmd}" in
        local) return 0 ;;
        slurm) ;;
        *) _launcher_error "--cmd must be local or slurm, not '${cmd}'"; return 1 ;;
    esac
    if [ -n "${slurm_config}" ] && [ ! -r "${slurm_config}" ] && [ "${slurm_config}" != conf/slurm.conf ]; then
        _launcher_error "--slurm_config ${slurm_config} is not a readable file"
        return 1
    fi
    _launcher_cpus_given=${cpus}
    for key in partition gpus gpu_request cpus mem time; do
        if [ -z "${!key}" ]; then
            value=$(_launcher_config_value "${slurm_config}" "${key}")
            printf -v "${key}" '%s' "${value}"
        fi
    done
    launcher_signal=$(_launcher_config_value "${slurm_config}" signal)
    launcher_cpus_per_process=$(_launcher_config_value "${slurm_config}" cpus_per_process)
    gpus=${gpus:-0}
    gpu_request=${gpu_request:-gpus-per-node}
    case "${gpu_request}" in
        gpus-per-node | gres) ;;
        *) _launcher_error "--gpu_request must be gpus-per-node or gres, not '${gpu_request}'"; return 1 ;;
    esac
    for key in gpus cpus launcher_cpus_per_process; do
        if [ -n "${!key}" ] && ! [[ ${!key} =~ ^[0-9]+$ ]]; then
            _launcher_error "--${key#launcher_} must be a whole number, not '${!key}'"
            return 1
        fi
    done
    if ! command -v sbatch >/dev/null 2>&1 && [ "${dry_run}" = false ]; then
        _launcher_error "--cmd slurm needs sbatch, which is not on PATH (install slurm-client, or use --cmd local)"
        return 1
    fi
    if [ -n "${partition}" ] && command -v sinfo >/dev/null 2>&1; then
        local found
        if ! found=$(sinfo -h -p "${partition}" 2>&1); then
            _launcher_error "cannot check partition '${partition}': sinfo failed: ${found//$'\n'/ }"
            return 1
        fi
        if [ -z "${found}" ]; then
            _launcher_error "partition '${partition}' does not exist (sinfo -h -p ${partition} is empty); partitions:" \
                $(sinfo -h -o %P | tr -d '*')
            return 1
        fi
    fi
    trap _launcher_summary EXIT
}

_launcher_summary() {
    [ ${#launcher_jobs[@]} -gt 0 ] || return 0
    if [ "${dry_run}" = true ]; then
        echo "Dry run: nothing submitted"
    else
        echo "Jobs: ${launcher_jobs[*]-}   queue: squeue -u ${USER:-$(id -un)}   cancel: scancel ${launcher_jobs[*]-}"
    fi
}

# True when a command (its words) trains: run_train or codecTrain.py.
_launcher_is_training() {
    local word
    for word in "$@"; do
        case "${word}" in run_train | codecTrain.py | */codecTrain.py) return 0 ;; esac
    done
    return 1
}

# The config file of a training command (the word after -c), or nothing.
_launcher_stage_config() {
    while [ $# -gt 0 ]; do
        if [ "$1" = -c ] || [ "$1" = --config ]; then
            echo "${2:-}"
            return
        fi
        shift
    done
}

# CPUs per task (= per node) of a training stage: one per process and per loader worker of each.
_launcher_training_cpus() {
    local config per_process workers processes=$((${ngpu:-1} > 0 ? ${ngpu:-1} : 1))
    per_process=${launcher_cpus_per_process:-}
    if [ -z "${per_process}" ]; then
        config=$(_launcher_stage_config "$@")
        workers=$(sed -nE 's/^num_workers:[[:space:]]*([0-9]+).*$/\1/p' "${config}" 2>/dev/null | tail -n 1)
        per_process=$((${workers:-0} + 1))
    fi
    echo $((processes * per_process))
}

# The recipe's own variables (what parse_options.sh lets users set), for the job script.
_launcher_recipe_variables() {
    local script=$0
    [ -r "${script}" ] || script=$(basename -- "${script}")
    grep -oE '^[A-Za-z_][A-Za-z0-9_]*=' -- "${script}" 2>/dev/null | tr -d '=' | awk '!seen[$0]++'
}

# Write the batch script of a stage: the recipe's variables and functions, then the stage command.
# Run by sbatch, it copies itself (SLURM's copy of the script as submitted) to step_script (a path
# prefix: the job id and .sh follow) and runs that copy in an srun step (one task per node), which runs
# the command: what a later submission writes does not reach a queued job.
_launcher_write_job_script() {
    local script=$1 stage=$2 name=$3 step_script=$4
    shift 4
    local -a first=("$@") restarted=("$@")
    local i variable
    if _launcher_is_training "$@"; then
        restarted=()
        for ((i = 1; i <= $#; i++)); do
            if [ "${!i}" = --resume ]; then
                i=$((i + 1))
            else
                restarted+=("${!i}")
            fi
        done
        restarted+=(--resume auto)
        if [ ${#restarted[@]} -eq $(($# + 2)) ]; then
            first=(${restarted[@]+"${restarted[@]}"})
        fi
    fi
    {
        echo "#!/usr/bin/env bash"
        echo "# Stage ${stage} (${name}) of $(basename -- "$0"), written by utils/recipe/launcher.sh on $(date '+%F %T')."
        echo "# sbatch runs it; it runs the stage's command in an srun step ('$(basename -- "${step_script}")<jobid>.sh --step')."
        echo "set -euo pipefail"
        printf 'cd %q\n' "${PWD}"
        for variable in $(_launcher_recipe_variables) recipe_python cmd requeue precision compile fast_conv batch_size_per_rank micro_batch; do
            declare -p "${variable}" 2>/dev/null || true
        done
        declare -f
        printf 'launcher_stage_command() {\n    %s\n}\n' "$(printf '%q ' ${first[@]+"${first[@]}"})"
        printf 'launcher_restarted_command() {\n    %s\n}\n' "$(printf '%q ' ${restarted[@]+"${restarted[@]}"})"
        cat <<'EOF'
if [ "${1:-}" = --step ]; then
    # The trainer handles these (trainer/preemption.py); this shell must outlive its checkpoint.
    trap '' USR1
    trap ':' TERM
    if [ "${SLURM_RESTART_COUNT:-0}" -gt 0 ]; then
        launcher_restarted_command
    else
        launcher_stage_command
    fi
    exit 0
fi
EOF
        printf 'echo "launcher: stage %s (%s) job ${SLURM_JOB_ID} started on $(hostname) at $(date +%%s.%%N)"\n' \
            "${stage}" "${name}"
        printf 'launcher_step_script=%q${SLURM_JOB_ID}.sh\n' "${step_script}"
        echo 'cp -- "$0" "${launcher_step_script}"'
        if _launcher_is_training "$@"; then
            cat <<'EOF'
if [ "${nnodes:-1}" -gt 1 ]; then
    # The first line without head: head's early exit would fail this pipeline under pipefail.
    launcher_hosts=$(scontrol show hostnames "${SLURM_JOB_NODELIST}")
    MASTER_ADDR=${launcher_hosts%%$'\n'*}
    MASTER_PORT=${MASTER_PORT:-$((20000 + SLURM_JOB_ID % 20000))}
    RDZV_ID=${SLURM_JOB_ID}
    export MASTER_ADDR MASTER_PORT RDZV_ID
    echo "launcher: rendezvous ${MASTER_ADDR}:${MASTER_PORT} (id ${RDZV_ID}) for ${SLURM_NTASKS} tasks"
fi
EOF
        fi
        cat <<'EOF'
if [ "${requeue}" = true ]; then
    export AUDIODEC_REQUEUE=1
fi
srun --kill-on-bad-exit=1 ${SLURM_CPUS_PER_TASK:+--cpus-per-task=${SLURM_CPUS_PER_TASK}} bash "${launcher_step_script}" --step
EOF
        printf 'echo "launcher: stage %s (%s) job ${SLURM_JOB_ID} finished at $(date +%%s.%%N)"\n' "${stage}" "${name}"
    } >"${script}"
    chmod +x "${script}"
}

# _launcher_run_here <k> <command...>: run stage k's command here, in a process group of its own, and
# pass SIGTERM, SIGINT and SIGHUP on to the whole group, so that a recipe stopped by `timeout` or a
# scheduler does not leave its trainer training (a training saves on SIGTERM, then the recipe stops
# with 128 + the signal instead of going on to the next stage). Its status otherwise.
_launcher_run_here() {
    local stage=$1 status=0
    shift
    _launcher_signal="" _launcher_group=""
    # Set before the command starts: a signal that comes first is passed on as soon as it has started.
    trap '_launcher_pass_on 143 TERM' TERM
    trap '_launcher_pass_on 130 INT' INT
    trap '_launcher_pass_on 129 HUP' HUP
    set -m  # the command's own process group, which the traps signal whole
    "$@" &
    _launcher_group=$!
    set +m
    if [ -n "${_launcher_signal}" ]; then kill -"${_launcher_signame}" -- "-${_launcher_group}" 2>/dev/null || true; fi
    wait "${_launcher_group}" || status=$?
    while kill -0 -- "-${_launcher_group}" 2>/dev/null; do sleep 0.2; done  # its processes still at work (a save)
    trap - TERM INT HUP
    if [ -n "${_launcher_signal}" ]; then
        echo "stage ${stage} was told to stop: the signal was passed on to its processes, and the recipe stops" >&2
        exit "${_launcher_signal}"
    fi
    return "${status}"
}

# _launcher_pass_on <status> <signal>: remember that the recipe was told to stop, and tell the stage.
_launcher_pass_on() {
    _launcher_signal=$1 _launcher_signame=$2
    if [ -n "${_launcher_group}" ]; then kill -"$2" -- "-${_launcher_group}" 2>/dev/null || true; fi
}

# run_stage <k> <name> <command...>: run stage k of the recipe (name: its tag, e.g.
# autoencoder/symAD_vctk_48000_hop300). --cmd local runs the command now; --cmd slurm submits it.
run_stage() {
    local stage=$1 name=$2
    shift 2
    if [ "${cmd}" != slurm ]; then
        _launcher_run_here "${stage}" "$@"
        return
    fi
    local label=${name//\//_}
    local logdir script written log job line gpus_per_node=${gpus:-0} stage_cpus=${cpus} nodes=1
    mkdir -p -- "${slurm_logdir}"
    logdir=$(cd -- "${slurm_logdir}" && pwd)
    script="${logdir}/${label}-stage${stage}.sh"
    log="${logdir}/${label}-stage${stage}-%j.log"
    # Written under a name of its own, submitted, then renamed: two submissions never share the file.
    written=$(mktemp "${script}.XXXXXX")
    _launcher_write_job_script "${written}" "${stage}" "${name}" "${logdir}/${label}-stage${stage}-" "$@"

    if _launcher_is_training "$@"; then
        nodes=${nnodes:-1}
        gpus_per_node=${ngpu:-1}
        [ -n "${_launcher_cpus_given}" ] || stage_cpus=$(_launcher_training_cpus "$@")
    fi
    local -a sbatch_command=(sbatch --parsable --job-name "${label}-stage${stage}" --output "${log}"
        --open-mode append --nodes "${nodes}" --ntasks-per-node 1 --export ALL)
    [ -n "${partition}" ] && sbatch_command+=(--partition "${partition}")
    [ -n "${stage_cpus}" ] && sbatch_command+=(--cpus-per-task "${stage_cpus}")
    [ -n "${mem}" ] && sbatch_command+=(--mem "${mem}")
    [ -n "${time}" ] && sbatch_command+=(--time "${time}")
    if _launcher_is_training "$@"; then
        [ -n "${launcher_signal:-}" ] && sbatch_command+=(--signal "${launcher_signal}")
        [ "${requeue}" = true ] && sbatch_command+=(--requeue)
    fi
    if [ "${gpus_per_node}" -gt 0 ]; then
        if [ "${gpu_request}" = gres ]; then
            sbatch_command+=(--gres "gpu:${gpus_per_node}")
        else
            sbatch_command+=(--gpus-per-node "${gpus_per_node}")
        fi
    fi
    local dependency=${_launcher_previous_job:-${after}}
    [ -n "${dependency}" ] && sbatch_command+=(--dependency "afterok:${dependency}")
    if [ -n "${sbatch_args}" ]; then
        local -a extra
        read -r -a extra <<<"${sbatch_args}"
        sbatch_command+=(${extra[@]+"${extra[@]}"})
    fi

    if [ "${dry_run}" = true ]; then
        mv -f "${written}" "${script}"
        sbatch_command+=("${script}")
        job="STAGE${stage}_JOB"
        echo "Stage ${stage} (${name}) would be submitted with:"
        printf -v line '%q ' ${sbatch_command[@]+"${sbatch_command[@]}"}
        echo "  ${line% }"
    else
        sbatch_command+=("${written}")
        if ! job=$(${sbatch_command[@]+"${sbatch_command[@]}"}); then
            rm -f "${written}"
            _launcher_error "sbatch failed for stage ${stage} (${name})"
            return 1
        fi
        mv -f "${written}" "${script}"  # sbatch has its copy: this one is to be read
        job=${job%%;*}
        echo "Stage ${stage} (${name}): submitted job ${job}${dependency:+ (after ${dependency})}"
        echo "  follow: tail -f ${log//%j/${job}}"
    fi
    launcher_jobs+=("${job}")
    _launcher_previous_job=${job}
}
