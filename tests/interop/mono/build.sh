#!/bin/sh
# Compile the Mono WCF interop peers.  usage: build.sh OUTDIR
# Produces OUTDIR/EchoService.exe and OUTDIR/EchoClient.exe (run with `mono`), and the event
# peers OUTDIR/EventPublisher.exe and OUTDIR/EventSubscriber.exe (tests/interop/test_events_mono_wcf.py).
# Rebuilds only when a source is newer than its output.
set -eu
if [ $# -ne 1 ]; then
    echo "usage: $0 OUTDIR" >&2
    exit 2
fi
OUT=$1
SRC=$(cd "$(dirname "$0")" && pwd)
if ! command -v mcs >/dev/null 2>&1; then
    echo "build.sh: 'mcs' (Mono C# compiler) not found. Install with:" >&2
    echo "  apt-get install -y --no-install-recommends mono-mcs libmono-system-servicemodel4.0a-cil" >&2
    exit 127
fi
if ! command -v mono >/dev/null 2>&1; then
    echo "build.sh: 'mono' runtime not found (apt-get install mono-runtime)" >&2
    exit 127
fi
mkdir -p "$OUT"
REFS="-r:System.ServiceModel.dll -r:System.Runtime.Serialization.dll"
for prog in EchoService EchoClient; do
    exe="$OUT/$prog.exe"
    if [ -f "$exe" ] && [ "$exe" -nt "$SRC/$prog.cs" ] && [ "$exe" -nt "$SRC/EchoContract.cs" ]; then
        continue
    fi
    mcs -nologo -warnaserror- -target:exe $REFS \
        -out:"$exe" "$SRC/EchoContract.cs" "$SRC/$prog.cs" || {
        echo "build.sh: mcs failed compiling $prog" >&2
        exit 1
    }
done
# the event peers: EventSubscriber reuses EchoService.cs's MatchAnyAddressBehavior
build_event() {  # build_event PROGRAM SOURCES...
    exe="$OUT/$1.exe"
    main="RelaydInterop.$1Main"
    shift
    for src in "$@"; do
        if [ ! -f "$exe" ] || [ "$SRC/$src" -nt "$exe" ]; then
            mcs -nologo -warnaserror- -target:exe $REFS -main:"$main" -out:"$exe" \
                $(for s in "$@"; do printf '%s ' "$SRC/$s"; done) || {
                echo "build.sh: mcs failed compiling $exe" >&2
                exit 1
            }
            return
        fi
    done
}
build_event EventPublisher EventContract.cs EventPublisher.cs
build_event EventSubscriber EventContract.cs EchoContract.cs EchoService.cs EventSubscriber.cs
echo "built: $OUT/EchoService.exe $OUT/EchoClient.exe $OUT/EventPublisher.exe $OUT/EventSubscriber.exe"
