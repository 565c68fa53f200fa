# Two stages: a musl build (fully static binary, pure-Rust TLS), then an empty image holding only the
# binary, the CA bundle and the account OCI Functions runs it as.
#
# Multi-architecture (for a GENERIC_X86_ARM application, or GENERIC_ARM): both stages start from
# multi-platform images and nothing here names an architecture, so
#   docker buildx build --platform linux/amd64,linux/arm64 -t <registry>/<repo>/user-capabilities:<tag> --push .
# builds and pushes one image per platform under one tag (the non-native one under emulation: slow, but
# the same Dockerfile). See the README, "Deploying on OCI".
FROM rust:1.95-alpine AS build
# gcc builds AWS-LC (aws-lc-sys, no CMake needed); a `--features fips` build would also need `cmake go`.
RUN apk add --no-cache musl-dev gcc ca-certificates
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin oci-user-capabilities \
 && install -D -m 0555 target/release/oci-user-capabilities /out/oci-user-capabilities
# OCI Functions starts every function container as user fn (uid 1000) and group fn (gid 1000), and its page
# on unprivileged functions asks custom images to define both; scratch has no groupadd/adduser, so the two
# entries are written directly.
RUN mkdir -p /out/etc \
 && printf 'fn:x:1000:1000:fn:/home/fn:/sbin/nologin\n' > /out/etc/passwd \
 && printf 'fn:x:1000:\n' > /out/etc/group

FROM scratch
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /out/etc/passwd /etc/passwd
COPY --from=build /out/etc/group /etc/group
COPY --from=build /out/oci-user-capabilities /oci-user-capabilities
ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
# The platform runs the container as 1000:1000 (fn:fn) with every capability dropped; so do local runs.
USER 1000:1000
ENTRYPOINT ["/oci-user-capabilities", "serve"]
