# syntax=docker/dockerfile:1
# fastvirt-agent, the node tuning agent. Build from the repository root:
#   docker build -f images/agent.Dockerfile -t ghcr.io/fastvirt/fastvirt-agent:0.1.0 .
# Base images are pinned by digest (the tag is for readers); refresh them deliberately with
# `docker buildx imagetools inspect <image>:<tag>` and take the index digest.

FROM docker.io/library/rust:1.89-bookworm@sha256:948f9b08a66e7fe01b03a98ef1c7568292e07ec2e4fe90d88c07bb14563c84ff AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target,id=fastvirt-target \
    cargo build --release --locked -p fastvirt-agent --bin fastvirt-agent \
    && install -D -m 0755 target/release/fastvirt-agent /out/fastvirt-agent

# The agent reads and writes the host through /host and calls no programs: distroless is enough.
FROM gcr.io/distroless/cc-debian12:nonroot@sha256:9dac0a79194e45a7da0158a9c6da57b217585af0786db3845d1f0ec1a0dd182f
COPY --from=build /out/fastvirt-agent /usr/local/bin/fastvirt-agent
# Root: tuning writes /proc/sys, /proc/irq and /sys, which only root may (the pod is privileged).
USER 0:0
ENTRYPOINT ["/usr/local/bin/fastvirt-agent"]
