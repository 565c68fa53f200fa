#!/usr/bin/env bash
# The container image, checked as far as a machine without a Docker daemon allows (not part of CI: it
# builds the release binary twice over and needs user namespaces).
#
#   1. builds the static musl binary the way the Dockerfile does, step for step: the `skeleton` stage's
#      RUN (taken from the Dockerfile itself), the dependency build on that skeleton, then the real
#      sources, touched, and the second build; each step timed;
#   2. shows that a change under src/ leaves the skeleton identical (so Docker's layer cache keeps the
#      dependency layer) and that a change to Cargo.lock does not;
#   3. lays out the final stage's root filesystem from the Dockerfile's own lines (its COPY --from=build
#      lines, the RUN that writes /etc/passwd and /etc/group, ENV, USER, ENTRYPOINT) and checks that it
#      holds those four files and nothing else;
#   4. runs the ENTRYPOINT in that root, chrooted, as uid:gid 1000:1000 in a user namespace with no
#      capability, with the platform's socket directory mounted at /tmp/iofs as Fn mounts it, and plays
#      the platform against it with the README's demo (`cargo run --example demo -- --binary …`): the
#      local identity domain that checks every signature, the sample batch over the Unix socket.
#
# `scripts/image-check.sh --skeleton-only` stops after step 2 (seconds, no build).
#
# Needs: rustup's x86_64-unknown-linux-musl target, musl-gcc (Debian: musl-tools), unshare and mount
# (util-linux), git. Work files go to target/image-check/ (kept, so a second run is incremental).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
work=$repo/target/image-check
musl=x86_64-unknown-linux-musl
step() { printf '\n== %s\n' "$*"; }
seconds() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f s", b - a }'; }
now() { date +%s.%N; }

for tool in musl-gcc unshare git; do
  command -v "$tool" >/dev/null || { echo "image-check: $tool is missing" >&2; exit 2; }
done
rustup target list --installed | grep -qx "$musl" \
  || { echo "image-check: run 'rustup target add $musl' first" >&2; exit 2; }

# The Dockerfile instruction starting at the first line that matches $1 (continuation lines joined).
instruction() {
  awk -v start="$1" '
    !found && $0 ~ start { found = 1 }
    found { line = line $0 "\n"; if ($0 !~ /\\$/) { print line; exit } }
  ' Dockerfile
}
# The shell command of a RUN instruction, on one line.
run_command() { instruction "$1" | sed -e '1s/^RUN //' -e 's/\\$//' | tr '\n' ' '; }

# The build context: what `docker build .` sends, i.e. the repository's files minus .dockerignore.
context=$work/context
# .dockerignore holds plain paths (no wildcards); each excludes itself and everything below it.
ignored=$(grep -v -e '^#' -e '^$' .dockerignore | sed 's/[.]/\\./g' | paste -sd'|' -)
step "build context (git's files, less .dockerignore: $(grep -v -e '^#' -e '^$' .dockerignore | paste -sd' ' -))"
rm -rf "$context" && mkdir -p "$context"
git ls-files -z --cached --others --exclude-standard \
  | grep -zv -E "^($ignored)(/|\$)" \
  | xargs -0 cp --parents -t "$context"
echo "$(find "$context" -type f | wc -l) files"

skeleton_cmd=$(run_command '^RUN find \. -type f')
make_skeleton() { # $1: context, $2: output dir
  rm -rf "$2" && cp -a "$1" "$2" && (cd "$2" && sh -c "$skeleton_cmd")
}
tree_hash() { (cd "$1" && find . -type f -print0 | sort -z | xargs -0 sha256sum | sha256sum | cut -c1-16); }

step "skeleton stage (its RUN, from the Dockerfile)"
make_skeleton "$context" "$work/skeleton"
(cd "$work/skeleton" && find . -type f | sort | sed 's/^/  /')
base_hash=$(tree_hash "$work/skeleton")
echo "skeleton tree hash: $base_hash"

step "does a change under src/ reach the dependency layer?"
changed=$work/context-changed
rm -rf "$changed" && cp -a "$context" "$changed"
printf '\n// a redeploy that changes only src/\n' >> "$changed/src/handler.rs"
mkdir -p "$changed/src/newfolder" && printf '//! a new module\n' > "$changed/src/newfolder/mod.rs"
make_skeleton "$changed" "$work/skeleton-changed"
src_hash=$(tree_hash "$work/skeleton-changed")
printf '# lock file touched\n' >> "$changed/Cargo.lock"
make_skeleton "$changed" "$work/skeleton-changed"
lock_hash=$(tree_hash "$work/skeleton-changed")
echo "src/handler.rs edited and a module added: skeleton $src_hash ($([ "$src_hash" = "$base_hash" ] && echo 'identical: dependency layer reused' || echo 'DIFFERENT: dependency layer rebuilt'))"
echo "Cargo.lock edited:                        skeleton $lock_hash ($([ "$lock_hash" = "$base_hash" ] && echo 'identical (unexpected)' || echo 'different: dependency layer rebuilt, as it must be'))"
[ "$src_hash" = "$base_hash" ] && [ "$lock_hash" != "$base_hash" ] || { echo "image-check: the skeleton does not isolate the dependencies" >&2; exit 1; }
rm -rf "$changed" "$work/skeleton-changed"
if [ "${1:-}" = "--skeleton-only" ]; then exit 0; fi

# The two cargo builds of the `build` stage, for the musl target (on Alpine, musl is the host). Same
# command and profile; AWS-LC's C code is compiled with musl-gcc as Alpine's gcc would.
build_cmd=$(run_command '^RUN cargo build')
build_dir=$work/src
export CC_x86_64_unknown_linux_musl=musl-gcc
export CARGO_TARGET_DIR=$build_dir/target
step "layer 1: dependencies on the skeleton ($build_cmd --target $musl)"
mkdir -p "$build_dir"
find "$build_dir" -mindepth 1 -maxdepth 1 ! -name target -exec rm -rf {} +
cp -a "$work/skeleton/." "$build_dir/"
t0=$(now)
(cd "$build_dir" && nice -n 5 sh -c "$build_cmd --target $musl") 2>&1 | tail -n 2
t1=$(now)
echo "layer 1 took $(seconds "$t0" "$t1")"

step "layer 2: the real sources, touched, built again"
cp -a "$context/." "$build_dir/"
t0=$(now)
(cd "$build_dir" && find . -path ./target -prune -o -name '*.rs' -exec touch {} + \
  && nice -n 5 sh -c "$build_cmd --target $musl") 2>&1 | tail -n 3
t1=$(now)
echo "layer 2 took $(seconds "$t0" "$t1") (what a src-only redeploy rebuilds)"
binary=$CARGO_TARGET_DIR/$musl/release/oci-user-capabilities
echo "binary: $(stat -c %s "$binary") bytes; $(file -b "$binary" 2>/dev/null || true)"
if readelf -l "$binary" | grep -q INTERP; then
  echo "image-check: the binary asks for a dynamic loader; scratch has none" >&2; exit 1
fi

# The final stage, from the Dockerfile's own lines.
step "the final stage's root filesystem"
stage=$work/out
root=$work/rootfs
rm -rf "$stage" "$root" && mkdir -p "$stage" "$root"
install -D -m 0555 "$binary" "$stage/oci-user-capabilities"
sh -c "$(run_command 'RUN mkdir -p /out/etc' | sed "s#/out#$stage#g")"
final=$(awk '/^FROM scratch/ { on = 1 } on' Dockerfile)
while read -r _ from src dest; do
  [ "$from" = "--from=build" ] || { echo "image-check: unexpected COPY $from" >&2; exit 1; }
  case $src in
    /out/*) src=$stage/${src#/out/} ;;
    /etc/ssl/certs/ca-certificates.crt) ;; # Alpine's Mozilla bundle there; Debian's here
    *) echo "image-check: unexpected COPY source $src" >&2; exit 1 ;;
  esac
  install -D -m "$(stat -c %a "$src")" "$src" "$root$dest"
done < <(printf '%s\n' "$final" | grep '^COPY ')
(cd "$root" && find . -type f | sort | while read -r f; do
   printf '  %-40s %s %s bytes\n' "$f" "$(stat -c %A "$f")" "$(stat -c %s "$f")"; done)
files=$(cd "$root" && find . -type f | sort | paste -sd' ' -)
expected="./etc/group ./etc/passwd ./etc/ssl/certs/ca-certificates.crt ./oci-user-capabilities"
[ "$files" = "$expected" ] || { echo "image-check: the root holds $files" >&2; exit 1; }
printf '  /etc/passwd: %s  /etc/group: %s\n' "$(cat "$root/etc/passwd")" "$(cat "$root/etc/group")"
user=$(printf '%s\n' "$final" | sed -n 's/^USER //p')
env_lines=$(printf '%s\n' "$final" | sed -n 's/^ENV //p')
entrypoint=$(printf '%s\n' "$final" | sed -n 's/^ENTRYPOINT \[\(.*\)\]/\1/p' | tr -d '",')
echo "USER $user; ENV $env_lines; ENTRYPOINT $entrypoint"

# The container as Fn starts it: the platform's socket directory mounted at /tmp/iofs (the mount point
# is the one thing the runtime adds, as Docker does for a volume), the image's ENV added to what the
# platform sets, the ENTRYPOINT run chrooted as $user in a user namespace, with no capability.
wrapper=$work/run-in-image
cat > "$wrapper" <<EOF
#!/bin/sh
# Started by the demo in place of the binary (argument: serve); FN_LISTENER names the demo's socket.
PATH=/usr/sbin:/usr/bin:/sbin:/bin
export PATH
socket_dir=\$(dirname "\${FN_LISTENER#unix:}")
exec unshare --user --map-root-user --mount sh -c '
  mkdir -p "$root/tmp/iofs" && mount --bind "\$0" "$root/tmp/iofs" &&
  exec env FN_LISTENER=unix:/tmp/iofs/lsnr.sock $env_lines \
    unshare --user --map-user=${user%%:*} --map-group=${user##*:} --root="$root" --wd=/ $entrypoint' "\$socket_dir"
EOF
chmod +x "$wrapper"
step "the image's entrypoint, chrooted as $user, played by the demo over its socket"
unset CARGO_TARGET_DIR CC_x86_64_unknown_linux_musl
cargo run --locked -q --example demo -- --binary "$wrapper" --log
