# The start every submit_*.sh shares, sourced after its defaults: the launcher's options (it must
# come before parse_options.sh), the recipe's own options, the helpers, and the launcher's checks;
# --exp_root, where a recipe has it, is another name for --exp.

. ./utils/recipe/launcher.sh   # --cmd local|slurm, SLURM resources, --dry-run (see the file)
. ./parse_options.sh
. ./utils/recipe/common.sh
launcher_init
if [ -n "${exp_root:-}" ]; then
    exp=${exp_root}
fi
