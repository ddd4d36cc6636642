# The stages of submit_autoencoder.sh, submit_vocoder.sh and submit_denoise.sh (the same in the
# three, as in the original's scripts); sourced by them after their defaults, not a recipe itself.
#   stage 0: train from scratch (or from the config's `initial`)   -> ${exp}/${train_tag}/
#            (run again, it continues from the folder's newest checkpoint: --resume auto)
#   stage 1: resume training from step ${resumepoint} ("latest": the newest checkpoint)
#   stage 2: test: ${test_encoder}'s encoder at encoder_checkpoint, ${test_decoder} at
#            decoder_checkpoint                                    -> ${output_root}/${train_tag}/
# Stages combine: --stage 02 trains then tests.
#
# The recipe defines the function recipe_roles, which sets, from the options as parsed here,
# train_tag (what the training stages train; config/${train_tag}.yaml), train_option (the option that
# names it), test_encoder and test_decoder (experiment folders under ${exp}), and may set train_message
# and test_message. A recipe whose test stage codes with the encoder its vocoder learnt from sets
# test_analyzer=true: stage 2 then stops with one line where the vocoder's analyzer is another checkpoint.
#
# A checkpoint the training config names under the toolkit's exp/ (a vocoder's analyzer, a denoiser's
# initial) is read under --exp when that is given: passed as --analyzer / --initial.

. ./utils/recipe/setup.sh   # options (utils/recipe/launcher.sh, parse_options.sh), helpers
if ! [[ ${stage} =~ ^[012]+$ ]]; then
    echo "$0: --stage takes the stages to run, digits 0 to 2 (e.g. 0, 2 or 02), not '${stage}'" >&2
    exit 1
fi
recipe_roles
config_name="config/${train_tag}.yaml"
if [[ ${stage} == *[01]* ]]; then
    recipe_config "${config_name}" "${train_option}"
fi
echo "Configuration file=${config_name}"
train_args=(-c "${config_name}" --tag "${train_tag}" --exp_root "${exp}" --disable_cudnn "${disable_cudnn}")

# in_exp <path>: a path of the toolkit's exp/ read under --exp (other paths as they are).
in_exp() {
    if [[ $1 == exp/* ]]; then
        printf '%s' "${exp}/${1#exp/}"
    else
        printf '%s' "$1"
    fi
}
checkpoint_args=()
for checkpoint_key in analyzer initial; do
    checkpoint_value=$(recipe_config_value "${config_name}" "${checkpoint_key}")
    if [ -n "${checkpoint_value}" ] && [ "$(in_exp "${checkpoint_value}")" != "${checkpoint_value}" ] &&
        [ "${exp}" != exp ]; then
        checkpoint_args+=("--${checkpoint_key}" "$(in_exp "${checkpoint_value}")")
    fi
done
unset checkpoint_key checkpoint_value

test_encoder_path=${exp}/${test_encoder}/checkpoint-${encoder_checkpoint}steps.pkl
if [[ ${stage} == *2* ]] && [ "${test_analyzer:-false}" = true ]; then
    # What the vocoder learnt from: its experiment's record, else (or when this run trains it) its config.
    analyzer=""
    if [[ ${stage} != *[01]* ]]; then
        analyzer=$(recipe_config_value "${exp}/${test_decoder}/config.yml" analyzer)
    fi
    if [ -z "${analyzer}" ]; then
        analyzer=$(in_exp "$(recipe_config_value "config/${test_decoder}.yaml" analyzer)")
    fi
    if [ -n "${analyzer}" ] && [ "${analyzer}" != "${test_encoder_path}" ] &&
        ! [ "${analyzer}" -ef "${test_encoder_path}" ]; then
        suggestion=""
        if [[ ${analyzer} =~ (^|/)(autoencoder/[^/]+)/checkpoint-([0-9]+)steps\.pkl$ ]]; then
            suggestion=" (--autoencoder ${BASH_REMATCH[2]} --encoder_checkpoint ${BASH_REMATCH[3]})"
        fi
        echo "$0: the vocoder ${test_decoder} learnt from the codes of ${analyzer} but stage 2 would code with" \
            "${test_encoder_path}: give the --autoencoder and --encoder_checkpoint of its analyzer${suggestion}" >&2
        exit 1
    fi
fi

if [[ ${stage} == *0* ]]; then
    echo "${train_message:-Training} (from the newest checkpoint in ${exp}/${train_tag}, if any)"
    run_stage 0 "${train_tag}" run_train ${train_args[@]+"${train_args[@]}"} \
        ${checkpoint_args[@]+"${checkpoint_args[@]}"}
fi

if [[ ${stage} == *1* ]]; then
    set_resume_args "${resumepoint}" "${exp}/${train_tag}"
    echo "Resuming: ${resume_args[*]-}"
    run_stage 1 "${train_tag}" run_train ${train_args[@]+"${train_args[@]}"} \
        ${checkpoint_args[@]+"${checkpoint_args[@]}"} ${resume_args[@]+"${resume_args[@]}"}
fi

if [[ ${stage} == *2* ]]; then
    echo "${test_message:-Testing} with the encoder ${test_encoder_path}"
    run_stage 2 "${train_tag}" run_python codecTest.py --subset "${subset}" --subset_num "${subset_num}" \
        --encoder "${test_encoder_path}" \
        --decoder "${exp}/${test_decoder}/checkpoint-${decoder_checkpoint}steps.pkl" \
        --output_dir "${output_root}/${train_tag}"
fi
