#!/bin/sh
# runc as the test node's containerd calls it, with one change: these machines
# do not allow lowering oom_score_adj (no CAP_SYS_RESOURCE), and the kubelet
# asks for -998 on Pod sandboxes and negative values on Guaranteed Pods, which
# runc then fails to apply ("can't get final child's PID from pipe: EOF").
# A negative process.oomScoreAdj in the bundle's config.json is raised to 0;
# everything else is runc's own.
bundle=""
prev=""
for arg in "$@"; do
  case "$prev" in --bundle|-b) bundle="$arg" ;; esac
  case "$arg" in --bundle=*) bundle="${arg#--bundle=}" ;; esac
  prev="$arg"
done
if [ -n "$bundle" ] && [ -f "$bundle/config.json" ]; then
  sed -i -E 's/"oomScoreAdj":-[0-9]+/"oomScoreAdj":0/' "$bundle/config.json"
fi
exec /usr/sbin/runc "$@"
