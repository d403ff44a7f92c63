#!/usr/bin/env bash
# Mutation testing of the privacy- and durability-critical code (scrubbers, consent, spool lease/ack,
# deletion, k-anonymity) with cosmic-ray. One command:
#
#     bench/mutation.sh                      # every target (about 30-40 minutes on 2 cores)
#     bench/mutation.sh --target spool       # one target (repeatable); --list shows them
#     bench/mutation.sh --jobs 1 --keep      # one copy at a time; keep the copies, sessions and logs
#
# cosmic-ray writes each mutant into the source file and restores it afterwards, so this never runs in
# your checkout: it clones HEAD (committed work only) into a temporary folder, once per parallel job, each
# with its own venv, and mutates there. bench/mutation.py holds the targets, the tests run for each and
# the operators; it prints a table per target and every surviving mutant (file:line, operator, the
# mutated line). Exit status 1 if any mutant survived or a target's unmutated tests failed.
set -euo pipefail

repo=$(git -C "$(dirname "$0")/.." rev-parse --show-toplevel)
jobs=2
keep=0
args=()
while (($#)); do
    case $1 in
        --jobs) jobs=$2; shift 2 ;;
        --keep) keep=1; shift ;;
        --target) args+=(--target "$2"); shift 2 ;;
        --list) exec python3 "$repo/bench/mutation.py" --list --copies . --out . ;;
        -h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "mutation.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done

rev=$(git -C "$repo" rev-parse HEAD)
if [[ -n $(git -C "$repo" status --porcelain --untracked-files=no) ]]; then
    echo "note: uncommitted changes are not tested; this run mutates HEAD ($rev)" >&2
fi
root=$(mktemp -d "${TMPDIR:-/tmp}/ceip-mutation.XXXXXX")
cleanup() {
    if ((keep)); then echo "kept: $root" >&2; else rm -rf "$root"; fi
}
trap cleanup EXIT

copies=()
for ((i = 1; i <= jobs; i++)); do
    copy=$root/copy$i
    copies+=("$copy")
    (
        git clone -q --no-checkout --no-hardlinks "$repo" "$copy"
        git -C "$copy" fetch -q "$repo" "$rev"
        git -C "$copy" checkout -q --detach "$rev"
        python3 -m venv "$copy/.venv"
        cd "$copy"
        .venv/bin/pip install -q --upgrade pip
        .venv/bin/pip install -q -e '.[test]' -e plugins/ceip-analyst -e plugins/ceip-packager \
            -e plugins/ceip-hub-server cosmic-ray
    ) >"$root/setup$i.log" 2>&1 &
done
echo "setting up ${jobs} throw-away copies of $rev in $root ..." >&2
failed=0
for job in $(jobs -p); do wait "$job" || failed=1; done
if ((failed)); then
    cat "$root"/setup*.log >&2
    echo "mutation.sh: could not set up the copies" >&2
    exit 2
fi

list=$(IFS=,; echo "${copies[*]}")
"${copies[0]}/.venv/bin/python" "${copies[0]}/bench/mutation.py" --copies "$list" --out "$root/results" "${args[@]}"
