# syntax=docker/dockerfile:1
# fastvirt-csi, the node plugin. Build from the repository root:
#   docker build -f images/csi.Dockerfile -t ghcr.io/fastvirt/fastvirt-csi:0.1.0 .
# Base images are pinned by digest (the tag is for readers); refresh them deliberately with
# `docker buildx imagetools inspect <image>:<tag>` and take the index digest.

FROM docker.io/library/rust:1.89-bookworm@sha256:948f9b08a66e7fe01b03a98ef1c7568292e07ec2e4fe90d88c07bb14563c84ff AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target,id=fastvirt-target \
    cargo build --release --locked -p fastvirt-csi --bin fastvirt-csi \
    && install -D -m 0755 target/release/fastvirt-csi /out/fastvirt-csi

# Not distroless: the driver runs mkfs.ext4, mkfs.xfs, blkid, resize2fs, xfs_growfs, fsfreeze and
# (for disk-image volumes on btrfs) btrfs, and the same Debian release as the builder keeps glibc
# compatible.
FROM docker.io/library/debian:bookworm-slim@sha256:3783cc01769c7b2b1b83a5c5ad96c815348e28ed7da68e2e3687004faa906251
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
       e2fsprogs xfsprogs util-linux btrfs-progs \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/fastvirt-csi /usr/local/bin/fastvirt-csi
# Root, and privileged in the pod: loop devices, mkfs, mount and online resize need it.
USER 0:0
ENTRYPOINT ["/usr/local/bin/fastvirt-csi"]
