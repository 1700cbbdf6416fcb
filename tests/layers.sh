#!/usr/bin/env bash
# The host's layering (docs/architecture.md, "Layout"): a file in
# framework/X/ includes framework headers only from X and the folders X may
# use below. Fails naming each include that reaches up or sideways.
set -euo pipefail
ROOT=${FLOWLAB_SOURCE_ROOT:-$(cd "$(dirname "$0")/.." && pwd)}
cd "$ROOT/framework"

declare -A may=(
  [core]="core compute"   # core/host.c fills the fl_host table with compute's MLP and GEMM
  [compute]="core compute"
  [model]="core compute model"
  [output]="core output"
  [train]="core compute model output train"
  [tasks]="core compute model output train tasks"
  [kit]="core compute model kit"
  [sweep]="core output sweep"
  [cli]="core compute model output train tasks kit sweep cli"
  [embed]="core compute model output train tasks embed"  # libflowlab.so: include/flowlab/embed.h
)
bad=0 n=0
for dir in "${!may[@]}"; do
  [ -d "$dir" ] || { echo "layers: framework/$dir is missing"; bad=1; continue; }
  while IFS=: read -r file line inc; do
    n=$((n + 1))
    to=${inc%%/*}
    case " ${may[$dir]} " in
      *" $to "*) ;;
      *) echo "layers: framework/$file:$line includes \"$inc\": $dir/ may use only ${may[$dir]}"
         bad=1 ;;
    esac
  done < <(grep -rnoE '^#include "[a-z_]+/[a-z_/]+\.h"' "$dir" | sed -E 's/#include "([^"]*)"/\1/')
done
for d in */; do
  d=${d%/}
  [ -n "${may[$d]+x}" ] || { echo "layers: framework/$d/ is not in the layer table"; bad=1; }
done
[ "$bad" -eq 0 ] && echo "layers: $n framework includes respect the layers"
exit "$bad"
