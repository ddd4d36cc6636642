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
if [ -n "${exp_root:-}" ]; then
    exp=${exp_root}
fi
