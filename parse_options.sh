# Command-line overrides for the recipe scripts. Source it after the defaults:
#
#     stage=0
#     tag_name=autoencoder/symAD_vctk_48000_hop300
#     . ./parse_options.sh
#
# `--name value` and `--name=value` set the shell variable `name`, which must already be defined
# (dashes in the name become underscores). `--help` lists the variables with their current values and
# exits. options_given lists the variables set, in order. An unknown option, one missing its value
# (the next word is itself an option: `--tag_name --ngpu 0`; `--name=--value` gives a value that looks
# like one), or a word that is no option (`2` in `--stage 0 2`, `-dry-run`) prints one line to stderr
# and exits with status 1: a typo never drops the options after it.

_parse_options_usage() {
    local _po_script=$1 _po_var
    # Recipes cd to their own folder first, so a relative $0 may only resolve by its base name.
    [ -r "${_po_script}" ] || _po_script=$(basename -- "${_po_script}")
    echo "Usage: bash ${_po_script} [--name value | --name=value] ..."
    echo "Options (current values):"
    # The options are the variables the calling script assigns at its top level.
    for _po_var in $(grep -oE '^[A-Za-z_][A-Za-z0-9_]*=' -- "${_po_script}" 2>/dev/null | tr -d '=' | awk '!seen[$0]++'); do
        if declare -p "${_po_var}" >/dev/null 2>&1; then
            printf '  --%s %s\n' "${_po_var}" "${!_po_var:-\"\"}"
        fi
    done
}

# True when a word is one of the calling script's options (--name, --name=value, --help).
_parse_options_is_option() {
    local _po_word=${1%%=*}
    case "${_po_word}" in --help | -h) return 0 ;; --*) ;; *) return 1 ;; esac
    _po_word=${_po_word#--}
    _po_word=${_po_word//-/_}
    [[ ${_po_word} =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] && declare -p "${_po_word}" >/dev/null 2>&1
}

options_given=()
while [ $# -gt 0 ]; do
    case "$1" in
        --help | -h)
            _parse_options_usage "$0"
            exit 0
            ;;
        --*=*)
            _po_name=${1%%=*}
            _po_value=${1#*=}
            shift
            ;;
        --*)
            _po_name=$1
            if [ $# -lt 2 ] || _parse_options_is_option "$2"; then
                echo "$0: option $1 needs a value${2:+ (the next word, $2, is an option; write $1=VALUE for a value that starts with --)}" >&2
                exit 1
            fi
            _po_value=$2
            shift 2
            ;;
        *)
            echo "$0: unexpected argument '$1': options are --name value or --name=value (see --help)" >&2
            exit 1
            ;;
    esac
    _po_name=${_po_name#--}
    _po_name=${_po_name//-/_}
    if ! [[ ${_po_name} =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || ! declare -p "${_po_name}" >/dev/null 2>&1; then
        echo "$0: unknown option --${_po_name} (see --help for the options)" >&2
        exit 1
    fi
    printf -v "${_po_name}" '%s' "${_po_value}"
    options_given+=("${_po_name}")
done
unset _po_name _po_value
unset -f _parse_options_is_option
