#!/bin/sh
# A local S3 server (moto, on 127.0.0.1) for development; Ctrl-C stops it.
# It prints the variables to export in another shell. Needs the dev extra (pip install -e '.[dev]').
#   infra/dev-s3.sh              # port 9000
#   infra/dev-s3.sh --port 0     # any free port
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
if [ -x "$here/.venv/bin/tierflow" ]; then
    exec "$here/.venv/bin/tierflow" dev-s3 "$@"
fi
exec tierflow dev-s3 "$@"
