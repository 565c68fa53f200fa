# A musl build (fully static binary, pure-Rust TLS), then an empty image holding only the binary, the CA
# bundle and the account OCI Functions runs it as. The build compiles the dependency tree in a layer of
# its own, so a redeploy that changes only our sources reuses it (see the README, "The image").
#
# Multi-architecture (for a GENERIC_X86_ARM application, or GENERIC_ARM): both stages start from
# multi-platform images and nothing here names an architecture, so
#   docker buildx build --platform linux/amd64,linux/arm64 -t <registry>/<repo>/user-capabilities:<tag> --push .
# builds and pushes one image per platform under one tag (the non-native one under emulation: slow, but
# the same Dockerfile). See the README, "Deploying on OCI".
FROM rust:1.95-alpine AS toolchain
# gcc builds AWS-LC (aws-lc-sys, no CMake needed); a `--features fips` build would also need `cmake go`.
RUN apk add --no-cache musl-dev gcc ca-certificates
WORKDIR /src

# The dependency tree's inputs only: every Cargo.toml, Cargo.lock, .cargo/config.toml (AWS-LC's build
# settings) and the build scripts, with each crate's root emptied (`fn main() {}` for the binary) and
# every other source file left out. A change under src/ leaves this stage's output byte for byte the
# same, so the layers built from it below come from the cache.
FROM toolchain AS skeleton
COPY . .
# (tests/it/main.rs stays because Cargo.toml declares it; cargo checks every declared target's file.)
RUN find . -type f ! -name Cargo.toml ! -name Cargo.lock ! -name build.rs ! -path './.cargo/*' \
        ! -path '*/src/lib.rs' ! -path '*/src/main.rs' ! -path './tests/it/main.rs' -delete \
 && find . -depth -type d -empty -delete \
 && find . -name '*.rs' ! -name build.rs -exec sh -c ': > "$1"' _ {} \; \
 && printf 'fn main() {}\n' > src/main.rs

FROM toolchain AS build
# OCI Functions starts every function container as user fn (uid 1000) and group fn (gid 1000), and its page
# on unprivileged functions asks custom images to define both; scratch has no groupadd/adduser, so the two
# entries are written directly.
RUN mkdir -p /out/etc \
 && printf 'fn:x:1000:1000:fn:/home/fn:/sbin/nologin\n' > /out/etc/passwd \
 && printf 'fn:x:1000:\n' > /out/etc/group
# Layer 1: the whole dependency tree (AWS-LC's C code included), rebuilt only when a manifest, the lock
# file, a build script or .cargo/config.toml changes.
COPY --from=skeleton /src/ ./
RUN cargo build --release --locked --bin oci-user-capabilities
# Layer 2: the workspace's own crates. COPY keeps the sources' own times, which may be older than the stubs
# built above; touching them makes cargo rebuild exactly the workspace's crates and nothing else.
COPY . .
RUN find . -name '*.rs' -exec touch {} + \
 && cargo build --release --locked --bin oci-user-capabilities \
 && install -D -m 0555 target/release/oci-user-capabilities /out/oci-user-capabilities

FROM scratch
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /out/etc/passwd /etc/passwd
COPY --from=build /out/etc/group /etc/group
COPY --from=build /out/oci-user-capabilities /oci-user-capabilities
ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
# The platform runs the container as 1000:1000 (fn:fn) with every capability dropped; so do local runs.
USER 1000:1000
ENTRYPOINT ["/oci-user-capabilities", "serve"]
