# Command-line overrides for the recipe scripts. Source it after the defaults:
#
#     stage=0
#     tag_name=autoencoder/symAD_vctk_48000_hop300
#     . ./parse_options.sh
#
# `--name value` and `--name=value` set the shell variable `name`, which must already be defined
# (dashes in the name become underscores). `--help` lists the variables with their current values and
# exits. Parsing stops at the first argument that does not start with `--`; what is left stays in "$@".
# An unknown option, or one missing its value, prints one line to stderr and exits with status 1.

_parse_options_usage() {
    local _po_script=$1 _po_var
    # Recipes cd to their own folder first, so a relative $0 may only resolve by its base name.
    [ -r "${_po_script}" ] || _po_script=$(basename "${_po_script}")
    echo "Usage: bash ${_po_script} [--name value | --name=value] ..."
    echo "Options (current values):"
    # The options are the variables the calling script assigns at its top level.
    for _po_var in $(grep -oE '^[A-Za-z_][A-Za-z0-9_]*=' "${_po_script}" 2>/dev/null | tr -d '=' | awk '!seen[$0]++'); do
        if declare -p "${_po_var}" >/dev/null 2>&1; then
            printf '  --%s %s\n' "${_po_var}" "${!_po_var:-\"\"}"
        fi
    done
}

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
            if [ $# -lt 2 ]; then
                echo "$0: option $1 needs a value" >&2
                exit 1
            fi
            _po_value=$2
            shift 2
            ;;
        *)
            break
            ;;
    esac
    _po_name=${_po_name#--}
    _po_name=${_po_name//-/_}
    if ! [[ ${_po_name} =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || ! declare -p "${_po_name}" >/dev/null 2>&1; then
        echo "$0: unknown option --${_po_name} (see --help for the options)" >&2
        exit 1
    fi
    printf -v "${_po_name}" '%s' "${_po_value}"
done
unset _po_name _po_value
