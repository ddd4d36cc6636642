# The start every submit_*.sh shares, sourced after its defaults: the launcher's options (it must
# come before parse_options.sh), the recipe's own options, the helpers, and the checks of every option
# before any stage runs or is submitted; --exp_root, where a recipe has it, is another name for --exp.
# The recipe sets recipe_caller, the folder it was called from, before it changes to its own.

. ./utils/recipe/launcher.sh   # --cmd local|slurm, SLURM resources, --dry-run (see the file)
. ./parse_options.sh
. ./utils/recipe/common.sh
# A relative path given as an option is the caller's, as in any command (the defaults are the toolkit's).
if [ "${recipe_caller}" != "${PWD}" ]; then
    for path_option in exp exp_root output_root slurm_config slurm_logdir resume resumepoint; do
        [[ " ${options_given[*]-} " == *" ${path_option} "* ]] || continue
        case "${!path_option}" in
            "" | /* | latest | auto) continue ;;  # not a path, or an absolute one
        esac
        [[ ${path_option} != resume* || ${!path_option} == *[!0-9]* ]] || continue  # a step number
        printf -v "${path_option}" '%s/%s' "${recipe_caller}" "${!path_option}"
    done
    unset path_option
fi
launcher_init
[ -z "${ngpu+set}" ] || recipe_whole_number ngpu 0
[ -z "${nnodes+set}" ] || recipe_whole_number nnodes 1
[ -z "${start+set}" ] || recipe_whole_number start
[ -z "${stop+set}" ] || recipe_whole_number stop
for checkpoint in encoder_checkpoint decoder_checkpoint; do  # steps in file names, and summed by submit_codec.sh
    [ -z "${!checkpoint+set}" ] || recipe_whole_number "${checkpoint}" 0
done
if [ -n "${seed:-}" ]; then
    recipe_whole_number seed 0 4294967295  # codecTrain.py's range
fi
case "${disable_cudnn-False}" in
    True | False) ;;
    *) echo "$0: --disable_cudnn takes True or False (as codecTrain.py does), not '${disable_cudnn}'" >&2; exit 1 ;;
esac
if [ -n "${exp_root:-}" ]; then
    exp=${exp_root}
fi
recipe_find_python
