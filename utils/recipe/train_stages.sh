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
# and test_message.

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

if [[ ${stage} == *0* ]]; then
    echo "${train_message:-Training} (from the newest checkpoint in ${exp}/${train_tag}, if any)"
    run_stage 0 "${train_tag}" run_train "${train_args[@]}"
fi

if [[ ${stage} == *1* ]]; then
    set_resume_args "${resumepoint}" "${exp}/${train_tag}"
    echo "Resuming: ${resume_args[*]}"
    run_stage 1 "${train_tag}" run_train "${train_args[@]}" "${resume_args[@]}"
fi

if [[ ${stage} == *2* ]]; then
    echo "${test_message:-Testing}"
    run_stage 2 "${train_tag}" run_python codecTest.py --subset "${subset}" --subset_num "${subset_num}" \
        --encoder "${exp}/${test_encoder}/checkpoint-${encoder_checkpoint}steps.pkl" \
        --decoder "${exp}/${test_decoder}/checkpoint-${decoder_checkpoint}steps.pkl" \
        --output_dir "${output_root}/${train_tag}"
fi
