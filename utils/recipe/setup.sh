# The start every submit_*.sh shares, sourced after its defaults: the launcher's options (it must
# come before parse_options.sh), the recipe's own options, the helpers, and the launcher's checks;
# --exp_root, where a recipe has it, is another name for --exp.

. ./utils/recipe/launcher.sh   # --cmd local|slurm, SLURM resources, --dry-run (see the file)
. ./parse_options.sh
. ./utils/recipe/common.sh
launcher_init
[ -z "${ngpu+set}" ] || recipe_whole_number ngpu 0
[ -z "${nnodes+set}" ] || recipe_whole_number nnodes 1
[ -z "${start+set}" ] || recipe_whole_number start
[ -z "${stop+set}" ] || recipe_whole_number stop
for checkpoint in encoder_checkpoint decoder_checkpoint; do  # steps in file names, and summed by submit_codec.sh
    if [ -n "${!checkpoint+set}" ]; then
        recipe_whole_number "${checkpoint}" 0
        printf -v "${checkpoint}" '%d' "$((10#${!checkpoint}))"  # 010 is ten steps, not octal 8
    fi
done
if [ -n "${exp_root:-}" ]; then
    exp=${exp_root}
fi
