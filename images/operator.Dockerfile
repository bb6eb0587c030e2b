# syntax=docker/dockerfile:1
# fastvirt-operator (also the `helm test` pod's `check-install`). Build from the repository root:
#   docker build -f images/operator.Dockerfile -t ghcr.io/fastvirt/fastvirt-operator:0.1.0 .
# Base images are pinned by digest (the tag is for readers); refresh them deliberately with
# `docker buildx imagetools inspect <image>:<tag>` and take the index digest.

FROM docker.io/library/rust:1.89-bookworm@sha256:948f9b08a66e7fe01b03a98ef1c7568292e07ec2e4fe90d88c07bb14563c84ff AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target,id=fastvirt-target \
    cargo build --release --locked -p fastvirt-operator --bin fastvirt-operator \
    && install -D -m 0755 target/release/fastvirt-operator /out/fastvirt-operator

# glibc and CA certificates (rustls verifies the API server), nothing else; no shell.
FROM gcr.io/distroless/cc-debian12:nonroot@sha256:9dac0a79194e45a7da0158a9c6da57b217585af0786db3845d1f0ec1a0dd182f
COPY --from=build /out/fastvirt-operator /usr/local/bin/fastvirt-operator
# The operator only talks to the API server: it runs as the distroless nonroot user.
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/fastvirt-operator"]
