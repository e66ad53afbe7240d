#!/bin/sh
# image.sh NAME ROOTFS OUT.tar [ENTRYPOINT...]
# A one-layer image in the docker-archive layout (manifest.json, config, layer)
# from a root filesystem directory, for `ctr images import`: the test node has
# no registry, so every image it runs is built on this machine.
set -eu
name=$1 rootfs=$2 out=$3
shift 3
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
tar --numeric-owner --owner=0 --group=0 --sort=name --mtime=@0 -C "$rootfs" -cf "$work/layer.tar" .
diff_id=$(sha256sum "$work/layer.tar" | cut -d' ' -f1)
entrypoint=""
for arg in "$@"; do entrypoint="$entrypoint${entrypoint:+,}\"$arg\""; done
cat >"$work/config.json" <<JSON
{"architecture":"amd64","os":"linux","config":{"Entrypoint":[${entrypoint}],"Env":["PATH=/usr/local/bin:/usr/bin:/bin"]},"rootfs":{"type":"layers","diff_ids":["sha256:${diff_id}"]}}
JSON
config=$(sha256sum "$work/config.json" | cut -d' ' -f1)
mv "$work/config.json" "$work/$config.json"
mkdir "$work/$diff_id"
mv "$work/layer.tar" "$work/$diff_id/layer.tar"
cat >"$work/manifest.json" <<JSON
[{"Config":"$config.json","RepoTags":["$name"],"Layers":["$diff_id/layer.tar"]}]
JSON
tar -C "$work" -cf "$out" manifest.json "$config.json" "$diff_id"
