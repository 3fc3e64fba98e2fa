#!/bin/bash
# condor-annex instance bootstrap (filled in by the bootstrap work).
set -euo pipefail
echo "condor-annex bootstrap: bucket ${ANNEX_BUCKET:-unset}"
