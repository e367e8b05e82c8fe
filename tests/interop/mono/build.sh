#!/bin/sh
# Compile the Mono WCF interop peers.  usage: build.sh OUTDIR
# Produces OUTDIR/EchoService.exe and OUTDIR/EchoClient.exe (run with `mono`).
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
echo "built: $OUT/EchoService.exe $OUT/EchoClient.exe"
