#!/bin/sh
# runbook-restore-wal's front door, installed by runbook_lib.standby and run by the server as
#   restore_command = '/bin/sh TOOLS/runbook-restore-wal --archive DIR [opts] %f %p %r'
#
# A segment the prefetcher has already staged is handed over here with one hard link, without
# starting Python: the interpreter's start alone costs about as much as a cp of a 16 MB segment.
# Every other request, and any doubt, goes to the Python command (runbook_wal_restore.py), which
# does everything this does and the rest. Built-ins only, but for the one ln and rm.
#
# Handed over only when all of these hold, else Python decides:
#   WALFILE is a segment name; DEST does not exist; no trigger file exists;
#   the staged file exists and has the archive's file's modification time to the nanosecond
#   (the prefetcher gives it that time after copying the whole file, then renames it into place);
#   the link is made (ln fails rather than replace DEST).
# With --cleanup, the restart file is left as a marker for the prefetcher, which cleans the
# archive as the Python command would have after this restore.

python=@SERVER_PYTHON@
command=@PYTHON_COMMAND@

archive= trigger= staging= cleanup= verbose= walfile= dest= restart= value_of= count=0
for arg do
    case $value_of in
        archive) archive=$arg ;;
        trigger) trigger=$arg ;;
        staging) staging=$arg ;;
    esac
    if [ -n "$value_of" ]; then value_of=; continue; fi
    case $arg in
        --archive) value_of=archive ;;
        --archive=*) archive=${arg#*=} ;;
        --trigger) value_of=trigger ;;
        --trigger=*) trigger=${arg#*=} ;;
        --staging) value_of=staging ;;
        --staging=*) staging=${arg#*=} ;;
        --sleep | --max-wait | --retries | --segment-size | --prefetch) value_of=ignored ;;
        --sleep=* | --max-wait=* | --retries=* | --segment-size=* | --prefetch=* | --wait) ;;
        --cleanup) cleanup=yes ;;
        --verbose) verbose=yes ;;
        -?*) count=99 ;;  # --help, --, anything unknown: for Python to answer
        *)
            count=$((count + 1))
            case $count in
                1) walfile=$arg ;;
                2) dest=$arg ;;
                3) restart=$arg ;;
            esac ;;
    esac
done

segment_name() {
    case $1 in
        *[!0-9A-F]*) return 1 ;;
        ????????????????????????) return 0 ;;
    esac
    return 1
}

handed_over() {
    [ "$count" -ge 2 ] && [ "$count" -le 3 ] && [ -n "$archive" ] && segment_name "$walfile" \
        || return 1
    if [ -n "$cleanup" ]; then segment_name "$restart" || return 1; fi
    if [ -n "$trigger" ] && { [ -e "$trigger" ] || [ -L "$trigger" ]; }; then return 1; fi
    if [ -e "$dest" ] || [ -L "$dest" ]; then return 1; fi
    case $dest in
        */*) directory=${dest%/*} ;;
        *) directory=. ;;
    esac
    staging=${staging:-${directory:-/}/runbook-restore-staging}
    staged=$staging/$walfile
    archived=$archive/$walfile
    [ -f "$staged" ] && [ -f "$archived" ] || return 1
    if [ "$staged" -nt "$archived" ] || [ "$staged" -ot "$archived" ]; then return 1; fi
    ln -T -- "$staged" "$dest" 2>/dev/null
}

if handed_over; then
    rm -f -- "$staged" 2>/dev/null
    if [ -n "$cleanup" ]; then true >"$staging/cleanup-$restart" 2>/dev/null; fi
    if [ -n "$verbose" ]; then printf '%s\n' "runbook-restore-wal: restored $walfile (staged)" >&2; fi
    exit 0
fi
if [ ! -x "$python" ]; then
    printf '%s\n' "runbook-restore-wal: $python is missing: cannot restore $walfile" >&2
    exit 1  # never 126 or more: that would abort recovery
fi
exec "$python" -I -S "$command" "$@"
