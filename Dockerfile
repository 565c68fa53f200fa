# Two stages: a musl build (fully static binary, pure-Rust TLS and DNS through the libc-free resolver
# path of musl), then an empty image holding only the binary and the CA bundle.
FROM rust:1.95-alpine AS build
# gcc builds AWS-LC (aws-lc-sys, no CMake needed); a `--features fips` build would also need `cmake go`.
RUN apk add --no-cache musl-dev gcc ca-certificates
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin oci-user-capabilities \
 && install -D -m 0555 target/release/oci-user-capabilities /out/oci-user-capabilities

FROM scratch
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /out/oci-user-capabilities /oci-user-capabilities
ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
# OCI Functions runs containers as 1000:1000 with every capability dropped.
USER 1000:1000
ENTRYPOINT ["/oci-user-capabilities", "serve"]
